"""Redis Cluster (3 masters + 3 replicas, started here): the attendance scenario with sessions on every
master, the short chaos run with a master failover, and WAIT's guarantee for acknowledged webhooks."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.platform.local import LocalSystem
from infra.platform.redis_cluster import RedisCliMissing, RedisClusterServers, find_redis_cli
from infra.platform.redis_server import free_port
from infra.platform.router import Router
from infra.platform.triggers import NOTIFIER, WORKER, url_triggers
from infra.waha_sim import payloads as wp
from tests.cluster_helpers import MultiSessionSimulator, redis_cluster, session_on_each_master
from tests.conftest import local_config
from tests.test_router import RECEIVED, TICK, FunctionServer, wait_until
from wsm.attendance.operators import Operators
from wsm.attendance.ownership import Ownership
from wsm.conversation.history import read_history
from wsm.core.settings import Settings
from wsm.store import event_stream, keys
from wsm.store.connection import make_client
from wsm.store.doorbells import ring
from wsm.store.events import MESSAGE_RECEIVED, QUEUE_CHANGED, SLOT_FREED, WakeUp
from wsm.store.scripts import Scripts

pytestmark = pytest.mark.slow
HMAC_KEY = "cluster-secret"


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "WSM_", "WAHA_", "WEBHOOK_"))}
    return {
        **base,
        "WEBHOOK_HMAC_KEY": HMAC_KEY,
        "WSM_REDIS_CLUSTER": "1",
        "WSM_MAX_ACTIVE": "1",
        "WSM_TICK_S": "0.5",
        "WSM_TYPING_MS_PER_CHAR": "0",
        "WSM_NOTIFY_MIN_INTERVAL_S": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    with redis_cluster() as servers:
        yield servers


def test_router_subscribes_per_session_and_ticks_each_one(cluster: RedisClusterServers) -> None:
    client = make_client(cluster.url, cluster=True)
    first, *later = session_on_each_master(cluster)
    client.sadd(keys.SESSIONS, first)
    settings = dataclasses.replace(Settings.from_env(), redis_url=cluster.url, redis_cluster=True, tick_s=0.3)
    worker, notifier = FunctionServer(), FunctionServer()
    router = Router(settings, url_triggers({WORKER: worker.url, NOTIFIER: notifier.url}, 5), backoff_base_s=0.05)
    try:
        router.start()
        assert router.wait_subscribed(10)
        client.sadd(keys.SESSIONS, *later)  # sessions that appear later are found and subscribed too
        sessions = [first, *later]

        def sessions_of(ce_type: str) -> set[str]:
            return {json.loads(r.body)["session"] for r in worker.of_type(ce_type)}

        wait_until(lambda: sessions_of(TICK) == set(sessions), 15)  # per-session ticks, never a global one
        assert all(json.loads(r.body)["session"] for r in worker.of_type(TICK))
        for index, session in enumerate(sessions):  # a doorbell from each master's shard channel
            ring(client, WakeUp(MESSAGE_RECEIVED, session, f"55119{index}0000001@c.us"))
        wait_until(lambda: sessions_of(RECEIVED) == set(sessions), 15)
        assert router.counters.invalid == 0
    finally:
        router.stop()
        worker.close()
        notifier.close()
        client.close()


def test_attendance_scenario_runs_on_a_cluster_with_a_session_on_every_master(
    tmp_path, cluster: RedisClusterServers
) -> None:
    sessions = session_on_each_master(cluster)
    masters = {cluster.master_of(keys.SessionKeys(s).ready).port for s in sessions}
    assert len(masters) == 3  # the sessions really are spread over all three masters
    webhook_port = free_port()
    sim = MultiSessionSimulator(
        sessions, webhook_url=f"http://127.0.0.1:{webhook_port}/", hmac_key=HMAC_KEY, webhook_retry_delay_s=0.3
    ).start()
    config = local_config(tmp_path, _env(), waha_url=sim.url, webhook_port=webhook_port, redis_url=cluster.url)
    local = LocalSystem(config).start()
    try:

        def texts(chat: str) -> list[str]:
            return [c.json["text"] for c in sim.sent_texts(chat)]

        def wait_texts(chat: str, count: int) -> list[str]:
            ok = sim.wait_for(lambda: len(sim.sent_texts(chat)) >= count, 30)
            assert ok, f"{chat}: expected {count} replies, got {texts(chat)}"
            return texts(chat)

        def say(session: str, chat: str, text: str) -> None:
            delivery = sim.post_webhook(wp.message_event(chat, text, session=session))
            assert delivery.wait(15) and delivery.ok, f"webhook did not accept {text!r}"

        def scenario(index: int) -> None:
            session = sessions[index]
            a, b = f"55119{index}0000001@c.us", f"55119{index}0000002@c.us"
            say(session, a, "oi")
            assert "Como posso ajudar?" in wait_texts(a, 1)[0]
            say(session, b, "olá")
            assert wait_texts(b, 1)[0].startswith("Você é o 1º da fila")
            say(session, a, "sair")
            assert wait_texts(a, 2)[-1].startswith("Atendimento encerrado")
            assert wait_texts(b, 2)[-1].startswith("É a sua vez!")  # admitted, told: doorbells crossed nodes

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(scenario, range(3)))
        client = make_client(cluster.url, cluster=True)
        for index, session in enumerate(sessions):  # each session's history lives on its own master
            history = read_history(client, session, f"55119{index}0000001@c.us")
            assert [m["text"] for m in history if m["direction"] == "in"] == ["oi", "sair"]
        assert client.llen(keys.DEADLETTER) == 0
    finally:
        local.stop()
        sim.stop()


def test_the_consoles_live_feed_reads_sessions_on_every_master(cluster: RedisClusterServers) -> None:
    """One XREAD cannot name streams of several nodes: the console reads each slot's and still waits for news."""
    client = make_client(cluster.url, cluster=True)
    sessions = session_on_each_master(cluster)
    try:
        start = event_stream.latest_ids(client, sessions)
        for session in sessions[:2]:
            event_stream.append(client, session, event_stream.QUEUE, chat=f"{session}@c.us")
        found = event_stream.read_since(client, start, block_ms=2000)
        assert sorted((e.session, e.fields["chat"]) for e in found) == sorted((s, f"{s}@c.us") for s in sessions[:2])
        after = {**start, **{e.session: e.id for e in found}}
        assert event_stream.read_since(client, after) == []  # nothing new: a read without blocking returns at once
        late = threading.Timer(
            0.4, event_stream.append, (client, sessions[2], event_stream.OPERATORS), {"operator": "ana"}
        )
        began = time.monotonic()
        late.start()
        found = event_stream.read_since(client, after, block_ms=5000)
        assert [(e.session, e.fields["operator"]) for e in found] == [(sessions[2], "ana")]
        assert 0.3 < time.monotonic() - began < 3  # it waited for the event, and not the whole block
        later = threading.Timer(0.3, event_stream.append, (client, sessions[0], event_stream.QUEUE), {"chat": "x"})
        later.start()  # "$": only what comes after the call, as XREAD means it
        found = event_stream.read_since(client, dict.fromkeys(sessions, "$"), block_ms=5000)
        assert [(e.session, e.fields["chat"]) for e in found] == [(sessions[0], "x")]
    finally:
        client.close()


def test_an_operators_doorbells_go_to_the_sessions_shard_channel(cluster: RedisClusterServers) -> None:
    """The router listens to each session's shard channel on a cluster: a plain PUBLISH would never reach it."""
    client = make_client(cluster.url, cluster=True)
    session = session_on_each_master(cluster)[1]
    sk, chat = keys.SessionKeys(session), "5511977770001@c.us"
    client.zadd(sk.active, {chat: 1})  # the bot serves the chat
    operators = Operators(client)
    if "ana" not in operators.names():
        operators.add("ana")
    operators.go_online(session, "ana", 2)
    listener = client.pubsub()
    listener.ssubscribe(sk.events)
    try:
        own = Ownership(client, Scripts(client), Settings.from_env())
        own.take(session, chat, "ana")  # the console's "Responder"
        own.reply(session, chat, "ana", "Olá, aqui é a Ana")
        types, deadline = [], time.monotonic() + 3
        while time.monotonic() < deadline and len(types) < 3:
            message = listener.get_sharded_message(timeout=0.1)
            if message and message["type"] == "smessage":
                types.append(WakeUp.from_json(message["data"]).type)
        assert types == [SLOT_FREED, QUEUE_CHANGED, MESSAGE_RECEIVED]  # admit, tell positions, send the reply
    finally:
        listener.close()
        client.close()


def test_short_chaos_run_with_a_master_failover_loses_no_acknowledged_webhook(tmp_path) -> None:
    """Crashes, a WAHA outage and the SIGKILL of the session's master: its replica takes over. With
    WSM_REDIS_MIN_REPLICAS=1 a webhook answered 200 was on a replica, so the promotion cannot lose it."""
    from bench.chaos import ChaosConfig, run_chaos

    try:
        find_redis_cli()
    except RedisCliMissing as e:
        pytest.skip(str(e))
    config = ChaosConfig(
        chats=40, messages_per_chat=5, send_rate_per_s=40, waha_down_s=4, kills_per_process=1, seed=11,
        redis_cluster=True, min_replicas=1, drain_timeout_s=60,  # a stuck drain fails with its keys, before pytest's
    )  # fmt: skip
    report = run_chaos(config, data_dir=tmp_path, log=print)
    print(report.table())
    assert report.failovers == 1 and report.failover_s < 60
    assert report.inbound_sent == 200
    assert report.inbound_lost == 0  # the guarantee: nothing acknowledged was lost with the master
    assert report.inbound_unhandled == 0
    assert report.replies_lost == 0
    assert report.order_violations == 0
    assert sum(report.kills.values()) == 4


def test_make_local_refuses_cluster_mode_without_a_cluster(tmp_path) -> None:
    config = local_config(tmp_path, _env(), redis_url="")  # would start its embedded, single redis-server
    with pytest.raises(RuntimeError, match="WSM_REDIS_CLUSTER=1 needs REDIS_URL"):
        LocalSystem(config).start()


def test_a_node_restarted_from_a_short_lived_thread_outlives_it(cluster: RedisClusterServers) -> None:
    """The chaos run restarts the failed-over master from its schedule thread, which ends soon after; a node
    dying with it would leave the new master without a replica, so MIN_REPLICAS=1 writes were refused forever."""
    master = cluster.master_of(keys.SessionKeys("default").ready)
    replica = cluster.replicas_of(master)[0]
    replica.kill()
    restarter = threading.Thread(target=cluster.restart, args=(replica,))
    restarter.start()
    restarter.join()
    cluster.wait_healthy()
    time.sleep(0.5)  # the kernel's death signal, had it been armed by the ended thread, is delivered by now
    assert replica.alive()
    assert cluster.roles().get(replica.port) == "slave"
    assert replica in cluster.replicas_of(master)
