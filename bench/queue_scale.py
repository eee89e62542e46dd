"""(c) The queue at scale: ingest, admission and the notifier with an empty queue and with 100,000 waiting.

One redis-server (AOF ``appendfsync always``) holds a session whose queue is filled with
``plan.waiting`` chats, each having written once through the real ingest script (filled with
``appendfsync everysec`` for speed, then set back to ``always``). Figures compare it with
sessions whose queue is empty, on the same server at the same time:

- ingest: wrk -c32 against the webhook (WSM_MAX_ACTIVE=1), new chats, alternating empty / full;
- admission: ``wsm.attendance.queue.admit_waiting`` timed after freeing the one slot; before each sample a
  new chat joins the tail, so the full queue stays full and the "empty" one holds just that chat;
- notifier: Redis commands (INFO commandstats deltas, commands run inside scripts included) and
  time of one ``Notifier.run`` after one admission — first with every waiting chat told recently
  (notify:due in the future), then with K chats due — on the full queue and on a small one.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import redis

from bench.bodies import BODY_BYTES, BodyMaker, chat_id, preload
from bench.ingest import settle, write_bodies
from bench.loadgen import run_wrk
from bench.plan import Plan
from bench.recorder import RecorderClient
from bench.report import Row, median, num, percentile
from bench.stack import HMAC_KEY, bench_settings, client_for, private_redis, running, url_of, webhook_process
from wsm.attendance.notifier import Notifier
from wsm.attendance.queue import admit_waiting
from wsm.conversation.engine import Engine
from wsm.conversation.flow import load_flow
from wsm.core.clock import now_ms
from wsm.ingest.ingestor import Ingestor
from wsm.store import keys
from wsm.store.connection import get_redis
from wsm.store.scripts import Scripts
from wsm.waha.client import WahaClient
from wsm.waha.event import parse_event

FULL, SMALL, EMPTY, WARM = "q-full", "q-small", "q-empty", "q-warm"
CONCURRENCY = 32
TARGET_RATIO = 0.9  # within 10 % of the empty queue
SUBPARTS = ("ingest", "admission", "notifier")


def fill_queue(client: redis.Redis, session: str, waiting: int, group: int) -> float:
    """One chat takes the one slot, then ``waiting`` chats write once each and wait; returns seconds taken."""
    started = time.monotonic()
    url = _url(client)
    client.config_set("appendfsync", "everysec")
    try:
        preload(url, {"max_active": 1}, session, [chat_id(group, 0)])
        preload(url, {"max_active": 1}, session, [chat_id(group, i) for i in range(1, waiting + 1)])
    finally:
        client.config_set("appendfsync", "always")
    found = client.zcard(keys.SessionKeys(session).queue)
    if found != waiting:
        raise RuntimeError(f"{session}: {found} waiting after filling, expected {waiting}")
    return time.monotonic() - started


def _url(client: redis.Redis) -> str:
    kw = client.get_connection_kwargs()
    return f"redis://{kw['host']}:{kw['port']}/0"


def free_slot(client: redis.Redis, sk: keys.SessionKeys) -> None:
    """End whoever holds a slot, as far as the slot count goes (its chat state is not the point here)."""
    holders = client.zrange(sk.active, 0, -1)
    if holders:
        client.zrem(sk.active, *holders)


def admit_one(client: redis.Redis, scripts: Scripts, sk: keys.SessionKeys) -> None:
    free_slot(client, sk)
    if len(admit_waiting(client, scripts, sk, 1)) != 1:
        raise RuntimeError(f"{sk.session}: nobody admitted")


# --- admission -------------------------------------------------------------------------------------


def admission(plan: Plan, client: redis.Redis) -> dict[str, dict]:
    url = _url(client)
    settings = bench_settings(redis_url=url, max_active=1)
    app = get_redis(url)
    ingestor, scripts = Ingestor(app, settings), Scripts(app)
    fill_queue(client, EMPTY, 0, 203)
    queues = {"full": keys.SessionKeys(FULL), "empty": keys.SessionKeys(EMPTY)}
    maker = {name: BodyMaker(sk.session, "") for name, sk in queues.items()}
    samples: dict[str, list[float]] = {name: [] for name in queues}
    lengths: dict[str, int] = {name: client.zcard(sk.queue) + 1 for name, sk in queues.items()}
    for i in range(plan.admission_samples):
        for name, sk in queues.items():  # interleaved, so machine noise hits both alike
            group = 204 if name == "full" else 205
            ingestor.ingest(parse_event(maker[name].body(chat_id(group, i), "Olá, quero ser atendido.")))
            free_slot(client, sk)
            started = time.perf_counter()
            admitted = admit_waiting(app, scripts, sk, 1)
            samples[name].append(time.perf_counter() - started)
            if len(admitted) != 1:
                raise RuntimeError(f"{sk.session}: admission {i} admitted {admitted}")
    return {
        name: {
            "waiting": lengths[name],
            "samples": len(values),
            "p50_ms": round(percentile(values, 50) * 1000, 3),
            "p99_ms": round(percentile(values, 99) * 1000, 3),
        }
        for name, values in samples.items()
    }


# --- notifier --------------------------------------------------------------------------------------


CONNECTION_COMMANDS = {"hello", "ping", "select", "auth", "client|setinfo", "script|load"}  # not per-change work


def commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items() if name != "cmdstat_info"}


def make_notifier(client: redis.Redis, recorder: RecorderClient, warm_up_with: int) -> Notifier:
    """A notifier as the function builds it (sending to the stand-in), warmed up on a session of its own
    so that script loading and new pool connections are not counted as the cost of a queue change."""
    url = _url(client)
    settings = bench_settings(redis_url=url, waha_url=recorder.url, max_active=1, typing_ms_per_char=0)
    app = get_redis(url)
    notifier = Notifier(app, settings, WahaClient(recorder.url, "", 10.0), Engine(load_flow(None)))
    fill_queue(client, WARM, warm_up_with, 206)
    notifier.run(keys.SessionKeys(WARM))
    return notifier


def notifier_costs(plan: Plan, client: redis.Redis, notifier: Notifier, session: str, recorder: RecorderClient) -> dict:
    """Commands and time of one Notifier.run after one admission: nobody due, then K due."""
    scripts, sk = Scripts(notifier.redis), keys.SessionKeys(session)
    told_recently = now_ms() + 3_600_000
    members = client.zrange(sk.queue, 0, -1)
    for i in range(0, len(members), 10_000):
        client.zadd(sk.notify_due, dict.fromkeys(members[i : i + 10_000], told_recently), xx=True)
    out: dict[str, dict] = {}
    for due in (0, *plan.due_counts):
        admit_one(client, scripts, sk)
        if due:
            client.zadd(sk.notify_due, dict.fromkeys(client.zrange(sk.queue, 0, due - 1), 0), xx=True)
        recorder.reset(0)
        waiting = client.zcard(sk.queue)
        before = commands(client)
        started = time.perf_counter()
        told = notifier.run(sk)
        elapsed = time.perf_counter() - started
        after = commands(client)
        delta = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
        connection = {k: delta.pop(k) for k in list(delta) if k in CONNECTION_COMMANDS}
        out["steady" if not due else f"due_{due}"] = {
            "waiting": waiting,
            "due": due,
            "told": told,
            "sent_to_waha": recorder.calls().get("/api/sendText", 0),
            "commands": sum(delta.values()),
            "by_command": dict(sorted(delta.items())),
            "connection_commands": connection,
            "ms": round(elapsed * 1000, 2),
        }
    return out


# --- ingest ----------------------------------------------------------------------------------------


def ingest(plan: Plan, client: redis.Redis) -> dict[str, dict]:
    runs: dict[str, list[dict]] = {"full": [], "empty": []}
    with tempfile.TemporaryDirectory(prefix="wsm-bench-") as tmp, running(webhook_process(_url(client))) as hook:
        for rep in range(plan.repeats):
            for name in ("empty", "full"):
                session = FULL if name == "full" else f"{EMPTY}-{rep}"
                sk = keys.SessionKeys(session)
                group = 300 + rep * 2 + (name == "full")
                warm_maker = BodyMaker(f"warm-{name}-{rep}", HMAC_KEY, pad_to=BODY_BYTES)  # its own session
                warm = write_bodies(warm_maker, Path(tmp) / "warmup.txt", plan.bodies_per_s * plan.wrk_warmup_s, group)
                maker = BodyMaker(session, HMAC_KEY, pad_to=BODY_BYTES)
                bodies = write_bodies(maker, Path(tmp) / "bodies.txt", plan.bodies_per_s * plan.wrk_duration_s, group)
                run_wrk(url_of(hook), warm, CONCURRENCY, plan.wrk_warmup_s)
                waiting, before = client.zcard(sk.queue), settle(client, sk)
                result = run_wrk(url_of(hook), bodies, CONCURRENCY, plan.wrk_duration_s)
                stored = settle(client, sk) - before
                runs[name].append(
                    {
                        "waiting_at_start": waiting,
                        "rps": result.rps,
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "non_2xx": result.non_2xx,
                        "socket_errors": result.socket_errors,
                        "bodies_reused": result.bodies_reused,
                        "ok": result.ok,
                        "stored": stored,  # wrk stops with up to one request per connection in flight
                        "stored_ok": result.ok <= stored <= result.ok + CONCURRENCY + result.socket_errors,
                    }
                )
    return {name: {"rps": median([r["rps"] for r in rs]), "runs": rs} for name, rs in runs.items()}


# --- the part --------------------------------------------------------------------------------------


def run(plan: Plan, recorder: RecorderClient, subparts: tuple[str, ...] = SUBPARTS) -> tuple[dict, list[Row]]:
    figures: dict[str, dict] = {}
    with private_redis() as server:
        client = client_for(server.url)
        figures["fill_s"] = {"full": round(fill_queue(client, FULL, plan.waiting, 201), 1)}
        if "notifier" in subparts:  # first: it wants exactly plan.waiting in the queue
            figures["fill_s"]["small"] = round(fill_queue(client, SMALL, plan.waiting_small, 202), 1)
            notifier = make_notifier(client, recorder, max(plan.due_counts))
            figures["notifier"] = {
                "full": notifier_costs(plan, client, notifier, FULL, recorder),
                "small": notifier_costs(plan, client, notifier, SMALL, recorder),
            }
        if "admission" in subparts:
            figures["admission"] = admission(plan, client)
        if "ingest" in subparts:
            figures["ingest"] = ingest(plan, client)
        client.close()
    return figures, rows(plan, figures)


def rows(plan: Plan, figures: dict) -> list[Row]:
    out: list[Row] = []
    full = f"{plan.waiting:,} waiting"
    if "ingest" in figures:
        ing = figures["ingest"]
        ratio = ing["full"]["rps"] / ing["empty"]["rps"]
        runs = [r for rs in ing.values() for r in rs["runs"]]
        errors = sum(r["non_2xx"] + r["socket_errors"] + r["bodies_reused"] + (not r["stored_ok"]) for r in runs)
        out.append(
            Row(
                "c",
                f"ingest req/s -c{CONCURRENCY}, {full} vs empty",
                f"{full}: {num(ing['full']['rps'])} | empty: {num(ing['empty']['rps'])} | ratio {ratio:.2f}"
                f" | non-2xx, socket errors, unstored 2xx: {errors}",
                f"≥ {TARGET_RATIO} × empty queue",
                ratio >= TARGET_RATIO and errors == 0,
            )
        )
    if "admission" in figures:
        adm = figures["admission"]
        out.append(
            Row(
                "c",
                f"admission p50 / p99 ms ({adm['full']['samples']} samples)",
                f"{full}: {num(adm['full']['p50_ms'], 2)} / {num(adm['full']['p99_ms'], 2)} | "
                f"empty: {num(adm['empty']['p50_ms'], 2)} / {num(adm['empty']['p99_ms'], 2)}",
                "p50 ≤ 1.1 × empty queue",
                adm["full"]["p50_ms"] <= 1.1 * adm["empty"]["p50_ms"],
            )
        )
    if "notifier" in figures:
        out += notifier_rows(plan, figures["notifier"])
    return out


def notifier_rows(plan: Plan, notif: dict) -> list[Row]:
    full, small = notif["full"], notif["small"]
    steady, steady_small = full["steady"], small["steady"]
    same_everywhere = all(full[k]["commands"] == small[k]["commands"] for k in full)
    per_notice = {k: (v["commands"] - steady["commands"]) / v["told"] for k, v in full.items() if v.get("told")}
    spread = (max(per_notice.values()) / min(per_notice.values())) if per_notice else float("inf")
    all_told = all(v["told"] == v["due"] == v["sent_to_waha"] for v in [*full.values(), *small.values()])
    dues = " | ".join(
        f"K={v['due']}: {v['commands']:,} cmds, {num(v['ms'], 1)} ms, told {v['told']}"
        for k, v in full.items()
        if k != "steady"
    )
    return [
        Row(
            "c",
            "notifier per queue change, nobody due",
            f"{plan.waiting:,} waiting: {steady['commands']} cmds, {num(steady['ms'], 2)} ms | "
            f"{plan.waiting_small:,} waiting: {steady_small['commands']} cmds, {num(steady_small['ms'], 2)} ms",
            "same commands at any queue length",
            steady["commands"] == steady_small["commands"] and steady["told"] == 0,
        ),
        Row(
            "c",
            f"notifier with K due, {plan.waiting:,} waiting",
            f"{dues} | {num(min(per_notice.values(), default=0), 1)} cmds per notice"
            f" | same counts at {plan.waiting_small:,} waiting: {'yes' if same_everywhere else 'NO'}",
            "cost ∝ notices sent, not queue length",
            same_everywhere and all_told and spread <= 1.1,
        ),
    ]


def conditions(plan: Plan) -> str:
    return (
        f"one Redis (AOF always): a queue of {plan.waiting:,} (filled through the ingest script) next to "
        f"empty ones; ingest wrk -c{CONCURRENCY} as (a), alternating x{plan.repeats}; "
        f"{plan.admission_samples} admissions each, interleaved; notifier compared with {plan.waiting_small:,} waiting"
    )
