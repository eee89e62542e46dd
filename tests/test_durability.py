"""What each Redis persistence setting guarantees for a webhook we acknowledged with 200.

A SIGKILLed redis-server models a Redis crash. With AOF on, both ``appendfsync always`` and
``everysec`` keep every acknowledged message across it, because Redis write()s the AOF before it
replies; they differ only on an OS crash or power loss (``everysec`` may lose the last second, which
this machine cannot simulate). With AOF off and no snapshot, an acknowledged message is gone.
A chat's lease is not kept at all (it waits for no fsync): a crash forgets it, which is an early expiry.
"""

from __future__ import annotations

import pytest
import redis
from starlette.testclient import TestClient

from infra.platform.redis_server import RedisServer
from infra.waha_sim import payloads as wp
from tests.webhook_app import webhook_app
from wsm.conversation.history import read_history
from wsm.core.settings import get_settings
from wsm.delivery.outbox import Delivery, Sender
from wsm.store.chat_store import ChatStore
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn
from wsm.waha.client import WahaClient

ALICE = "5511988887777@c.us"


def acknowledge_then_crash(server: RedisServer, monkeypatch: pytest.MonkeyPatch, count: int) -> list[str]:
    """Post ``count`` messages to the webhook, each answered 200, then SIGKILL Redis and start it again."""
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.delenv("WEBHOOK_HMAC_KEY", raising=False)
    get_settings.cache_clear()
    with TestClient(webhook_app()) as client:
        for i in range(count):
            body = wp.message_event(ALICE, f"mensagem {i}")
            res = client.post("/", content=wp.encode(body), headers={"Content-Type": "application/json"})
            assert res.status_code == 200 and res.json()["status"] == "accepted"
    server.kill()
    server.start()
    survivors = read_history(redis.Redis.from_url(server.url, decode_responses=True), "default", ALICE)
    get_settings.cache_clear()
    return [m["text"] for m in survivors]


def alices_chat(server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> tuple[redis.Redis, ChatStore]:
    """Alice's one message, acknowledged and kept across a crash, and a handler for her chat (not yet holding it)."""
    assert acknowledge_then_crash(server, monkeypatch, 1) == ["mensagem 0"]
    r = redis.Redis.from_url(server.url, decode_responses=True)
    return r, ChatStore(r, Scripts(r), get_settings(), "default", ALICE)


def reconnect(server: RedisServer, store: ChatStore) -> redis.Redis:
    """A client of the restarted server, and ``store`` (a handler that lived through the restart) on it."""
    r = redis.Redis.from_url(server.url, decode_responses=True)
    store.redis, store.scripts = r, Scripts(r)
    return r


@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_aof_keeps_every_acknowledged_message_across_a_redis_crash(monkeypatch, appendfsync: str) -> None:
    with RedisServer(appendonly=True, appendfsync=appendfsync) as server:
        assert acknowledge_then_crash(server, monkeypatch, 200) == [f"mensagem {i}" for i in range(200)]


def test_without_persistence_acknowledged_messages_are_lost_on_a_crash(monkeypatch) -> None:
    with RedisServer(appendonly=False) as server:
        assert acknowledge_then_crash(server, monkeypatch, 20) == []


def test_make_local_and_compose_default_to_fsync_always() -> None:
    from pathlib import Path

    import yaml

    from infra.platform.local import LocalConfig

    assert LocalConfig().appendfsync == "always"
    compose = Path(__file__).resolve().parent.parent / "docker-compose.yml"
    command = yaml.safe_load(compose.read_text())["services"]["redis"]["command"]
    command = " ".join(map(str, command)) if isinstance(command, list) else command
    assert "--appendonly yes" in command and "--appendfsync always" in command


def test_a_lease_does_not_survive_a_redis_crash_and_its_old_holder_cannot_commit(monkeypatch) -> None:
    """The lease is kept out of the AOF (its script's answer waits for no fsync): a crash forgets it, which is
    an early expiry: the old holder's commit is refused, the next holder reads what was committed and answers."""
    with RedisServer(appendonly=True, appendfsync="always") as server:
        r, old = alices_chat(server, monkeypatch)
        snapshot = old.acquire()
        assert snapshot is not None and [m["text"] for m in snapshot.inbox] == ["mensagem 0"]
        assert ChatStore(r, Scripts(r), old.settings, "default", ALICE).acquire() is None  # held while Redis is up
        server.kill()
        server.start()
        r = reconnect(server, old)
        new = ChatStore(r, Scripts(r), old.settings, "default", ALICE)
        again = new.acquire()
        assert again is not None and [m["text"] for m in again.inbox] == ["mensagem 0"]  # nothing was lost
        assert not old.commit(Turn(["tarde demais"]))
        assert new.commit(Turn(["em dia"]), handled=1)
        assert [m["text"] for m in read_history(r, "default", ALICE)] == ["mensagem 0", "em dia"]
        get_settings.cache_clear()


def test_a_reply_sent_while_redis_restarts_is_popped_by_its_sender_and_sent_once(monkeypatch, sim) -> None:
    """Redis forgets the lease while its holder is sending: the holder takes it back with its pop (nobody else
    holds the chat and the reply is still the outbox's head), so no later handler sends the reply again."""
    monkeypatch.setenv("WSM_TYPING_MS_PER_CHAR", "0")
    with RedisServer(appendonly=True, appendfsync="always") as server:
        r, holder = alices_chat(server, monkeypatch)
        assert holder.acquire() is not None
        assert holder.commit(Turn(["olá, Alice"]), handled=1)
        server.kill()
        server.start()  # the committed reply survives; the lease does not
        r = reconnect(server, holder)
        assert Sender(r, WahaClient(sim.url, timeout_s=5)).deliver(holder, release_examined=0) is Delivery.DONE
        later = ChatStore(r, Scripts(r), holder.settings, "default", ALICE)
        assert later.acquire() is not None
        assert Sender(r, WahaClient(sim.url, timeout_s=5)).deliver(later) is Delivery.DONE
        assert [c.json["text"] for c in sim.sent_texts(ALICE)] == ["olá, Alice"]
        assert [m["status"] for m in read_history(r, "default", ALICE) if m["direction"] == "out"] == ["SENT"]
        get_settings.cache_clear()


def test_a_sender_that_lost_the_chat_to_another_handler_stops_sending(monkeypatch, sim) -> None:
    monkeypatch.setenv("WSM_TYPING_MS_PER_CHAR", "0")
    with RedisServer(appendonly=True, appendfsync="always") as server:
        r, holder = alices_chat(server, monkeypatch)
        assert holder.acquire() is not None
        assert holder.commit(Turn(["um"]), handled=1) and holder.commit(Turn(["dois"]))
        r.set(holder.ck.lease, "someone-else")  # its lease went and another handler took the chat
        assert Sender(r, WahaClient(sim.url, timeout_s=5)).deliver(holder) is Delivery.LOST_LEASE
        assert [c.json["text"] for c in sim.sent_texts(ALICE)] == ["um"]  # under way already; "dois" never started
        assert r.llen(holder.ck.outbox) == 2  # both left to the handler that has the chat
        get_settings.cache_clear()
