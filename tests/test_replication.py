"""WSM_REDIS_MIN_REPLICAS: the webhook answers 200 only once a replica confirmed the write (WAIT), else 503 so
WAHA retries. A real master with a real replica on free ports; the replica is frozen with SIGSTOP."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from infra.platform.redis_server import RedisServer
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.test_attendance import SK, make_platform
from tests.webhook_app import webhook_client
from wsm.conversation.history import read_history
from wsm.core.settings import get_settings
from wsm.ingest.ingestor import Ingestor
from wsm.store.events import MESSAGE_RECEIVED, WakeUp
from wsm.store.group_commit import GroupCommit
from wsm.store.replication import NotReplicated
from wsm.waha.event import parse_event

ALICE = "5511988887777@c.us"


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer(appendfsync="everysec", extra_args=("--repl-diskless-sync-delay", "0")).start()
    replica = RedisServer(appendfsync="everysec", extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    replica.start()
    try:
        client = redis.Redis(port=master.port, decode_responses=True)
        deadline = time.monotonic() + 30
        while client.info("replication").get("slave0", {}).get("state") != "online":
            assert time.monotonic() < deadline, "the replica never connected"
            time.sleep(0.1)
        yield master, replica
    finally:
        replica.kill()  # frozen or not
        replica.cleanup()
        master.cleanup()


# how long WAIT may take: a healthy replica answers in a millisecond, but on a loaded machine (CI) the first
# writes after the sync can take a few hundred (the replica rewrites its AOF then); a frozen one never answers
WAIT_TIMEOUT_MS = 2000


def webhook(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    replicas: str,
    wait_timeout_ms: int = WAIT_TIMEOUT_MS,
) -> TestClient:
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.delenv("WEBHOOK_HMAC_KEY", raising=False)
    monkeypatch.setenv("WSM_REDIS_MIN_REPLICAS", replicas)
    monkeypatch.setenv("WSM_REDIS_WAIT_TIMEOUT_MS", str(wait_timeout_ms))
    get_settings.cache_clear()
    return webhook_client(request)


def post(client: Any, body: dict) -> Any:
    raw = wp.encode(body)
    return client.post("/", content=raw, headers=wp.headers(raw, body, ""))


def test_acknowledged_only_once_the_replica_has_it(pair, monkeypatch: pytest.MonkeyPatch, request) -> None:
    master, replica = pair
    client = webhook(request, monkeypatch, master.url, "1")
    res = post(client, wp.message_event(ALICE, "oi"))
    assert res.status_code == 200, res.json()
    on_replica = redis.Redis(port=replica.port, decode_responses=True)
    assert [m["text"] for m in read_history(on_replica, "default", ALICE)] == ["oi"]  # already there at the 200

    os.kill(replica.pid, signal.SIGSTOP)  # the replica stops acknowledging
    body = wp.message_event(ALICE, "tudo bem?")
    res = post(client, body)
    assert res.status_code == 503 and res.headers["Retry-After"]  # WAHA retries
    # WAHA's retry reaches another instance (its own connection): the first try is stored on the master,
    # yet still on no replica, so no 200 either
    other_instance = webhook(request, monkeypatch, f"redis://localhost:{master.port}/0", "1")
    assert post(other_instance, body).status_code == 503
    os.kill(replica.pid, signal.SIGCONT)
    retry = post(client, body)  # the write itself was kept: the retry finds it
    assert retry.status_code == 200 and retry.json()["status"] == "duplicate"
    history = read_history(redis.Redis(port=master.port, decode_responses=True), "default", ALICE)
    assert [m["text"] for m in history] == ["oi", "tudo bem?"]


def test_a_master_without_replicas_cannot_acknowledge(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    refused = post(webhook(request, monkeypatch, redis_url, "1", wait_timeout_ms=300), wp.message_event(ALICE, "oi"))
    assert refused.status_code == 503
    assert "storage unavailable" in refused.json()["error"]
    accepted = post(webhook(request, monkeypatch, redis_url, "0"), wp.message_event(ALICE, "olá"))
    assert accepted.status_code == 200  # the default (0) never waits


def test_concurrent_writes_share_one_wait_and_all_fail_without_the_replica(pair) -> None:
    """Group commit ends its pipeline with one WAIT: every write of the batch is confirmed, or none is."""
    master, replica = pair
    client = redis.Redis(port=master.port, decode_responses=True)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    group = GroupCommit(client, min_replicas=1, wait_timeout_ms=WAIT_TIMEOUT_MS)

    def write(_: int) -> object:
        try:
            return group.call(script, ["wsm:{default}:counter"], [])
        except NotReplicated as e:
            return e

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(write, range(16))) == list(range(1, 17))
        os.kill(replica.pid, signal.SIGSTOP)
        refused = list(pool.map(write, range(8)))
    assert all(isinstance(r, NotReplicated) for r in refused)
    assert client.get("wsm:{default}:counter") == "24"  # written on the master, just not confirmed


def test_the_worker_sends_a_reply_only_once_the_replica_holds_its_turn(
    pair, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failover to a replica that lacks the turn (or the pop) of a sent reply would handle the message again and
    send a second reply: with WSM_REDIS_MIN_REPLICAS nothing goes out before the replica confirms the turn."""
    master, replica = pair
    client = redis.Redis(port=master.port, decode_responses=True)
    env = {"WSM_REDIS_MIN_REPLICAS": "1", "WSM_REDIS_WAIT_TIMEOUT_MS": str(WAIT_TIMEOUT_MS)}
    platform = make_platform(client, sim, monkeypatch, **env)
    platform.say(ALICE, "oi")
    assert len(platform.texts(ALICE)) == 1  # a healthy replica: the greeting went out
    on_replica = redis.Redis(port=replica.port, decode_responses=True)
    assert on_replica.llen(SK.chat(ALICE).outbox) == 0  # its pop is there too

    os.kill(replica.pid, signal.SIGSTOP)
    unconfirmed = dataclasses.replace(platform.settings, redis_min_replicas=0)  # the message is in (not the point)
    Ingestor(client, unconfirmed).ingest(parse_event(wp.message_event(ALICE, "2")))
    with pytest.raises(NotReplicated):  # the entry answers 500: the router retries
        platform.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", ALICE))
    assert len(platform.texts(ALICE)) == 1  # the turn is on the master only: its reply waits
    assert client.llen(SK.chat(ALICE).outbox) == 1

    os.kill(replica.pid, signal.SIGCONT)
    platform.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", ALICE))  # the retry
    texts = platform.texts(ALICE)
    assert len(texts) == 2 and texts[-1].startswith("Funcionamos de segunda a sexta")  # once, the turn's reply
    assert client.llen(SK.chat(ALICE).outbox) == 0
