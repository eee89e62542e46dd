"""Chaos run: drive many chats through the real processes of ``make local`` while killing them.

While a WAHA-like driver posts messages (retrying like WAHA on any non-2xx or connection
error), this SIGKILLs the worker, notifier, webhook and router at random moments and Redis once
(AOF ``appendfsync always``), and takes WAHA down (first 500s, then connection refused). It
never restarts anything itself: ``make local``'s supervisor does, as a serverless platform would,
and the harness only waits until it has (its Redis is always the embedded one, so that too).
When everything has drained it compares what the driver sent, what Redis holds and what WAHA
received, and prints one table.

    make chaos                                  # 5,000 messages, 500 chats, 4 slots
    python -m bench.chaos --chats 40 --messages 5  # a short run (tests/test_chaos.py runs one)
    python -m bench.chaos --cluster --min-replicas 1  # on a 3+3 Redis Cluster, SIGKILLing a master

On a Redis Cluster (``redis_cluster``) the Redis disruption is a failover instead of a restart: the
master owning the session's slot is SIGKILLed, its replica takes over, and the old master is started
again (it rejoins as a replica, so ``WSM_REDIS_MIN_REPLICAS=1`` can be met again).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import redis
import requests

from infra.platform.local import LocalConfig, LocalSystem
from infra.platform.redis_cluster import RedisClusterServers
from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from wsm.conversation.history import read_history
from wsm.delivery.echoes import is_unfiled_echo
from wsm.store import keys
from wsm.store.connection import make_client

SESSION = "default"
KILLABLE = ("worker", "notifier", "webhook", "router")
DRAIN_QUIET_S = 3.0  # drained: nothing pending and WAHA got no call for this long


@dataclass
class ChaosConfig:
    chats: int = 500
    messages_per_chat: int = 10
    slots: int = 4
    send_rate_per_s: float = 150.0
    waha_down_s: float = 30.0  # half answering 500, half refusing connections
    kills_per_process: int = 2
    restart_redis: bool = True
    drain_timeout_s: float = 300.0
    seed: int = 7
    redis_cluster: bool = False  # run on a private 3-master + 3-replica cluster; the Redis kill is a failover
    min_replicas: int = 0  # WSM_REDIS_MIN_REPLICAS


@dataclass
class ChaosReport:
    inbound_sent: int = 0
    inbound_accepted: int = 0
    inbound_duplicate_acks: int = 0
    inbound_lost: int = 0
    inbound_unhandled: int = 0
    replies_expected: int = 0
    replies_lost: int = 0
    duplicate_replies: int = 0
    order_violations: int = 0
    deadletter_entries: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    redis_restarts: int = 0
    failovers: int = 0
    failover_s: float = 0.0  # from the master's SIGKILL until its replica answered as master
    supervisor_restarts: int = 0
    webhook_retries: int = 0
    wall_time_s: float = 0.0

    def table(self) -> str:
        rows = [
            ("inbound sent", self.inbound_sent),
            ("inbound accepted", self.inbound_accepted),
            ("  + 'duplicate' on a retry", self.inbound_duplicate_acks),
            ("inbound lost", self.inbound_lost),
            ("inbound left unhandled", self.inbound_unhandled),
            ("replies expected", self.replies_expected),
            ("replies lost", self.replies_lost),
            ("duplicate replies", self.duplicate_replies),
            ("per-chat order violations", self.order_violations),
            ("dead-letter entries", self.deadletter_entries),
            ("processes SIGKILLed", ", ".join(f"{k} {v}" for k, v in self.kills.items())),
            ("redis SIGKILLs", self.redis_restarts),
            ("cluster failovers", f"{self.failovers} ({self.failover_s:.1f} s)" if self.failovers else 0),
            ("restarts by the supervisor", self.supervisor_restarts),
            ("webhook retries (driver)", self.webhook_retries),
            ("wall time", f"{self.wall_time_s:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def chat_script(index: int, count: int) -> list[str]:
    """What one person writes: a conversation, some chatter, and for half of them a leave word at the end."""
    words = ["oi", "1", f"Pessoa {index}", f"{index % 28 + 1}/12", "1", "obrigado", "menu", "2", "ok", "tchau"]
    texts = [f"{words[i % len(words)]}" for i in range(count)]
    if index % 2 == 0:
        texts[-1] = "sair"
    return texts


class Driver:
    """Posts each chat's messages in order, retrying every failure like WAHA does."""

    def __init__(self, webhook_url: str, config: ChaosConfig) -> None:
        self.url = webhook_url
        self.config = config
        self.sent: dict[str, list[str]] = {}  # chat -> payload ids in send order
        self.accepted = 0
        self.duplicates = 0  # a retry answered "duplicate": the first try was stored, its answer lost
        self.retries = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def post(self, body: dict) -> None:
        raw = wp.encode(body)
        headers = wp.headers(raw, body)
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        for _attempt in range(400):
            try:
                res = session.post(self.url, data=raw, headers=headers, timeout=10)
                if res.status_code == 200:
                    status = res.json().get("status")
                    with self._lock:
                        self.accepted += status == "accepted"
                        self.duplicates += status == "duplicate"
                    return
            except requests.RequestException:
                session = self._local.session = requests.Session()
            with self._lock:
                self.retries += 1
            time.sleep(0.25)
        raise RuntimeError("webhook never accepted a message")

    def run_chat(self, index: int, start_at: float) -> None:
        chat = f"55119{index:08d}@c.us"
        ids: list[str] = []
        with self._lock:
            self.sent[chat] = ids
        delay = max(0.0, start_at - time.monotonic())
        time.sleep(delay)
        for text in chat_script(index, self.config.messages_per_chat):
            body = wp.message_event(chat, text, session=SESSION)
            ids.append(body["payload"]["id"])
            self.post(body)
            time.sleep(random.uniform(0.05, 0.6))


def run_chaos(config: ChaosConfig, data_dir: Path | None = None, log=print) -> ChaosReport:
    random.seed(config.seed)
    report = ChaosReport()
    started = time.monotonic()
    tmp = tempfile.TemporaryDirectory(prefix="wsm-chaos-")
    cluster = RedisClusterServers(Path(tmp.name) / "cluster").start() if config.redis_cluster else None
    with WahaSimulator() as sim:
        env = {
            **os.environ,
            "WSM_MAX_ACTIVE": str(config.slots),
            "WSM_IDLE_TIMEOUT_S": "1",
            "WSM_TICK_S": "0.5",
            "WSM_TYPING_MS_PER_CHAR": "0",
            "WSM_NOTIFY_MIN_INTERVAL_S": "5",
            "WSM_LEASE_MS": "3000",
            "WSM_ROUTER_MAX_ATTEMPTS": "12",
            "WAHA_TIMEOUT_S": "5",
            "WSM_REDIS_CLUSTER": "1" if cluster else "0",
            "WSM_REDIS_MIN_REPLICAS": str(config.min_replicas),
        }
        for name in ("REDIS_URL", "WEBHOOK_HMAC_KEY", "WEBHOOK_MAX_SKEW_S"):
            env.pop(name, None)
        local = LocalSystem(
            LocalConfig(
                waha_url=sim.url,
                webhook_port=free_port(),
                worker_port=free_port(),
                notifier_port=free_port(),
                console_port=free_port(),
                redis_port=free_port(),
                redis_url=cluster.url if cluster else "",
                data_dir=data_dir or Path(tmp.name),
                env=env,
            )
        ).start()
        sim.webhook_url, sim.emit_own_events = local.webhook_url, True  # as WAHA: message.any and acks of each send
        try:
            driver = Driver(local.webhook_url, config)
            span_s = config.chats * config.messages_per_chat / config.send_rate_per_s
            chaos = threading.Thread(
                target=_make_chaos, args=(local, sim, config, report, span_s, log, cluster), daemon=True
            )
            chaos.start()
            with ThreadPoolExecutor(max_workers=min(config.chats, 200)) as pool:
                t0 = time.monotonic()
                starts = [t0 + span_s * i / config.chats for i in range(config.chats)]
                list(pool.map(driver.run_chat, range(config.chats), starts))
            log(f"driver done after {time.monotonic() - started:.1f} s; waiting for chaos and drain")
            chaos.join()
            client = make_client(local.redis_url, cluster=cluster is not None)
            _drain(client, sim, config.drain_timeout_s, local.logs)
            _measure(report, client, sim, driver)
            report.supervisor_restarts = sum(local.supervisor.restarts.values())
            client.close()
        finally:
            local.stop()
            if cluster:
                cluster.cleanup()
            tmp.cleanup()
    report.wall_time_s = time.monotonic() - started
    return report


def _make_chaos(
    local: LocalSystem,
    sim: WahaSimulator,
    config: ChaosConfig,
    report: ChaosReport,
    span_s: float,
    log,
    cluster: RedisClusterServers | None = None,
) -> None:
    """Schedule every disruption at a random moment inside the sending window, then carry them out in order."""
    plan: list[tuple[float, str]] = []
    for name in KILLABLE:
        plan += [(random.uniform(0.05, 0.9) * span_s, f"kill:{name}") for _ in range(config.kills_per_process)]
    if config.restart_redis:
        plan.append((random.uniform(0.3, 0.7) * span_s, "redis"))
    plan.append((random.uniform(0.1, 0.4) * span_s, "waha"))
    t0 = time.monotonic()
    outage: threading.Thread | None = None
    for at, action in sorted(plan):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        if action == "redis" and cluster:
            _failover(cluster, report, t0, log)
        elif action.startswith("kill:") or action == "redis":
            name = action.split(":", 1)[-1]
            killed_at = time.monotonic()
            (local.redis_server if name == "redis" else local[name]).kill()  # type: ignore[union-attr]
            back = local.wait_running(name, timeout_s=60)
            if name == "redis":
                report.redis_restarts += 1
            else:
                report.kills[name] = report.kills.get(name, 0) + 1
            took = f"back after {time.monotonic() - killed_at:.1f} s" if back else "NOT back after 60 s"
            log(f"  t={killed_at - t0:5.1f}s SIGKILL {name}; the supervisor restarted it, {took}")
        else:  # the outage runs beside the other disruptions
            outage = threading.Thread(target=_waha_outage, args=(sim, config.waha_down_s, t0, log), daemon=True)
            outage.start()
    if outage:
        outage.join()


def _failover(cluster: RedisClusterServers, report: ChaosReport, t0: float, log) -> None:
    """SIGKILL the master of the session's slot, wait for its replica to take over, start the old one again."""
    master = cluster.master_of(keys.SessionKeys(SESSION).ready)
    replica = cluster.replicas_of(master)[0]
    killed_at = time.monotonic()
    master.kill()
    while cluster.roles().get(replica.port) != "master" and time.monotonic() - killed_at < 60:
        time.sleep(0.1)
    report.failovers += 1
    report.failover_s = time.monotonic() - killed_at
    log(f"  t={killed_at - t0:5.1f}s SIGKILL redis master {master.port}; replica {replica.port} promoted after "
        f"{report.failover_s:.1f} s")  # fmt: skip
    cluster.restart(master)  # rejoins as a replica of the new master; must outlive this chaos thread
    cluster.wait_healthy()


def _waha_outage(sim: WahaSimulator, down_s: float, t0: float, log) -> None:
    half = down_s / 2
    sim.set_outage(500)
    log(f"  t={time.monotonic() - t0:5.1f}s WAHA answering 500 for {half:.0f} s")
    time.sleep(half)
    sim.clear_outage()
    sim.refuse_connections()
    log(f"  t={time.monotonic() - t0:5.1f}s WAHA refusing connections for {half:.0f} s")
    time.sleep(half)
    sim.accept_connections()
    log(f"  t={time.monotonic() - t0:5.1f}s WAHA back")


class DrainTimeout(RuntimeError):
    """Work was still pending when the drain timed out; the message says which chats and what their keys hold."""


def _drain(client: redis.Redis, sim: WahaSimulator, timeout_s: float, logs: Path | None = None) -> None:
    """Wait until no inbox, outbox, slot or queue holds anything and WAHA has been quiet for a while.

    Raises :class:`DrainTimeout` with the stuck chats' keys (and the tail of each process log) when that
    does not happen within ``timeout_s``: a silent return would only show up later as a vaguer failure.
    """
    sk = keys.SessionKeys(SESSION)
    deadline = time.monotonic() + timeout_s
    quiet_since, last_calls = time.monotonic(), -1
    while time.monotonic() < deadline:
        calls = len(sim.calls)
        if calls != last_calls:
            quiet_since, last_calls = time.monotonic(), calls
        busy = client.scard(sk.ready) + client.zcard(sk.active) + client.zcard(sk.queue)
        if busy == 0 and time.monotonic() - quiet_since > DRAIN_QUIET_S:
            return
        time.sleep(0.2)
    raise DrainTimeout(f"not drained after {timeout_s:.0f} s\n" + describe_pending(client, logs))


def describe_pending(client: redis.Redis, logs: Path | None = None, log_lines: int = 15) -> str:
    """What the session's ready set, slots and queue still hold, each chat's keys, and the processes' last log lines."""
    sk = keys.SessionKeys(SESSION)
    now = int(time.time() * 1000)
    ready, active = sorted(client.smembers(sk.ready)), client.zrange(sk.active, 0, -1, withscores=True)
    queue = client.zrange(sk.queue, 0, -1, withscores=True)
    lines = [
        f"now_ms={now} ready={ready} active={active} queue={queue}",
        f"session={client.hgetall(sk.status)} sweep_cursor={client.get(sk.sweep_cursor)}",
    ]
    for chat in sorted(set(ready) | {c for c, _ in active} | {c for c, _ in queue}):
        ck = sk.chat(chat)
        lines += [
            f"{chat}:",
            f"  lease={client.get(ck.lease)!r} pttl={client.pttl(ck.lease)}",
            f"  state={client.hgetall(ck.state)}",
            f"  inbox={client.lrange(ck.inbox, 0, -1)}",
            f"  outbox={client.lrange(ck.outbox, 0, -1)}",
            f"  notify={client.hgetall(ck.notify)} notify_due={client.zscore(sk.notify_due, chat)}",
        ]
    for path in sorted(logs.glob("*.log")) if logs and logs.is_dir() else []:
        tail = path.read_text(errors="replace").splitlines()[-log_lines:]
        lines += [f"--- {path.name} (last {len(tail)} lines)", *tail]
    return "\n".join(lines)


def _measure(report: ChaosReport, client: redis.Redis, sim: WahaSimulator, driver: Driver) -> None:
    sent_by_chat: dict[str, list[str]] = {}
    for call in sim.sent_texts():
        sent_by_chat.setdefault(call.json["chatId"], []).append(call.json["text"])
    report.inbound_sent = sum(len(ids) for ids in driver.sent.values())
    report.inbound_accepted = driver.accepted
    report.inbound_duplicate_acks = driver.duplicates
    report.webhook_retries = driver.retries
    for chat, ids in driver.sent.items():
        ck = keys.SessionKeys(SESSION).chat(chat)
        history = read_history(client, SESSION, chat)
        inbound = [m["id"] for m in history if m["direction"] == "in"]
        report.inbound_lost += len(set(ids) - set(inbound))
        report.order_violations += inbound != [i for i in ids if i in set(inbound)]
        report.inbound_unhandled += client.llen(ck.inbox)
        replies = [m for m in history if m["direction"] == "out" and not is_unfiled_echo(m)]  # WAHA's own echoes
        report.replies_expected += len(replies)
        report.replies_lost += sum(m["status"] not in ("SENT", "SERVER", "DEVICE", "READ") for m in replies)
        sent = sent_by_chat.get(chat, [])
        counts_sent, counts_expected = Counter(sent), Counter(m["text"] for m in replies)
        doubled = sum(max(0, n - counts_expected[t]) for t, n in counts_sent.items())
        report.duplicate_replies += doubled
        if doubled and os.environ.get("CHAOS_DEBUG"):
            shown = [(m["text"][:30], m["status"]) for m in replies]
            print(chat, json.dumps([t[:30] for t in sent]), json.dumps(shown))
        deduped = [t for i, t in enumerate(sent) if i == 0 or t != sent[i - 1]]
        expected = [m["text"] for m in replies]
        expected_deduped = [t for i, t in enumerate(expected) if i == 0 or t != expected[i - 1]]
        report.order_violations += deduped != expected_deduped
        if (deduped != expected_deduped or inbound != [i for i in ids if i in set(inbound)]) and os.environ.get(
            "CHAOS_DEBUG"
        ):
            print("ORDER", chat, json.dumps([t[:30] for t in sent]), json.dumps([t[:30] for t in expected]))
    report.deadletter_entries = client.llen(keys.DEADLETTER)


@click.command()
@click.option("--chats", default=500, show_default=True)
@click.option("--messages", "messages_per_chat", default=10, show_default=True)
@click.option("--slots", default=4, show_default=True)
@click.option("--rate", "send_rate_per_s", default=150.0, show_default=True, help="Messages per second.")
@click.option("--waha-down-s", default=30.0, show_default=True)
@click.option("--kills", "kills_per_process", default=2, show_default=True)
@click.option("--cluster", "redis_cluster", is_flag=True, help="On a 3+3 Redis Cluster, with a master failover.")
@click.option("--min-replicas", default=0, show_default=True, help="WSM_REDIS_MIN_REPLICAS.")
@click.option("--json-out", type=click.Path(dir_okay=False), default="bench/results/chaos.json", show_default=True)
def main(json_out: str, **options: object) -> None:
    """Run the chaos test and print the table."""
    config = ChaosConfig(**options)  # type: ignore[arg-type]
    click.echo(f"chaos: {config.chats} chats x {config.messages_per_chat} messages, {config.slots} slots")
    try:
        report = run_chaos(config, log=click.echo)
    except DrainTimeout as e:
        raise click.ClickException(str(e)) from None
    click.echo(report.table())
    Path(json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(json_out).write_text(json.dumps({"config": asdict(config), "report": asdict(report)}, indent=2) + "\n")
    if report.inbound_lost or report.order_violations or report.replies_lost or report.inbound_unhandled:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
