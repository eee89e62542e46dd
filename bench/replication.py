"""(g) Replication: what ``WSM_REDIS_MIN_REPLICAS=1`` costs the webhook (WAIT for a replica on every write).

A master (AOF ``appendfsync always``, as shipped) with one replica; two webhook processes on it, one
with ``WSM_REDIS_MIN_REPLICAS=0`` and one with ``1``, take the same wrk load as part (a), alternately
(0, 1, 0, 1) so drifting machine load hits both; figures are medians. Without WAIT the webhook shares
Redis round trips between concurrent requests (group commit); with it every request pays its own
round trip plus the replica's acknowledgement.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from bench.bodies import BODY_BYTES, BodyMaker
from bench.ingest import MESSAGES_PER_CHAT, settle, write_bodies
from bench.loadgen import run_wrk
from bench.plan import Plan
from bench.report import Row, median, num
from bench.stack import HMAC_KEY, client_for, running, url_of, webhook_process
from infra.platform.redis_server import RedisServer
from wsm.store import keys

SESSION = "bench"
MODES = ("0", "1")  # WSM_REDIS_MIN_REPLICAS of the two webhooks


@contextmanager
def master_with_replica() -> Iterator[RedisServer]:
    master = RedisServer(appendfsync="always").start()
    replica = RedisServer(appendfsync="always", extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
    try:
        client = redis.Redis(port=master.port, decode_responses=True)
        deadline = time.monotonic() + 60
        while client.info("replication").get("slave0", {}).get("state") != "online":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not come online")
            time.sleep(0.1)
        client.close()
        yield master
    finally:
        replica.cleanup()
        master.cleanup()


def run(plan: Plan) -> tuple[dict, list[Row]]:
    runs: dict[int, dict[str, list[dict]]] = {c: {m: [] for m in MODES} for c in plan.concurrency}
    sk = keys.SessionKeys(SESSION)
    with (
        tempfile.TemporaryDirectory(prefix="wsm-bench-") as tmp,
        master_with_replica() as master,
        running(webhook_process(master.url, WSM_REDIS_MIN_REPLICAS="0")) as plain,
        running(webhook_process(master.url, WSM_REDIS_MIN_REPLICAS="1")) as waiting,
    ):
        client = client_for(master.url)
        for c in plan.concurrency:
            for rep in range(plan.repeats):
                for mode, proc in (("0", plain), ("1", waiting)):
                    maker = BodyMaker(SESSION, HMAC_KEY, pad_to=BODY_BYTES)
                    warm_count = plan.bodies_per_s * plan.wrk_warmup_s
                    group = 300 + rep * 2 + int(mode)
                    warm = write_bodies(maker, Path(tmp) / "warmup.txt", warm_count, group=group)
                    count, first = plan.bodies_per_s * plan.wrk_duration_s, warm_count // MESSAGES_PER_CHAT + 1
                    bodies = write_bodies(maker, Path(tmp) / "bodies.txt", count, group=group, first_chat=first)
                    client.flushall()
                    run_wrk(url_of(proc), warm, c, plan.wrk_warmup_s)
                    before = settle(client, sk)
                    result = run_wrk(url_of(proc), bodies, c, plan.wrk_duration_s)
                    stored = settle(client, sk) - before
                    runs[c][mode].append(
                        {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                         "non_2xx": result.non_2xx, "socket_errors": result.socket_errors,
                         "ok": result.ok, "stored": stored}
                    )  # fmt: skip
        client.close()
    return summarize(runs)


def summarize(runs: dict[int, dict[str, list[dict]]]) -> tuple[dict, list[Row]]:
    rows: list[Row] = []
    figures: dict[str, dict] = {}
    for c, by_mode in runs.items():
        med = {m: {f: median([r[f] for r in rs]) for f in ("rps", "p50_ms", "p99_ms")} for m, rs in by_mode.items()}
        ratio = med["1"]["rps"] / med["0"]["rps"]
        refused = sum(r["non_2xx"] for rs in by_mode.values() for r in rs)  # a 503: WAIT fell short
        socket_errors = sum(r["socket_errors"] for rs in by_mode.values() for r in rs)
        figures[f"c{c}"] = {
            "median": med, "ratio": round(ratio, 3), "runs": by_mode, "non_2xx": refused, "socket_errors": socket_errors
        }  # fmt: skip
        rows.append(
            Row(
                "g",
                f"webhook req/s with WAIT, -c{c}",
                f"MIN_REPLICAS=1 {num(med['1']['rps'])} | =0 {num(med['0']['rps'])} | ratio {ratio:.2f}",
            )
        )
        rows.append(
            Row(
                "g",
                f"latency p50 / p99 ms with WAIT, -c{c}",
                f"=1 {num(med['1']['p50_ms'], 1)} / {num(med['1']['p99_ms'], 1)} | "
                f"=0 {num(med['0']['p50_ms'], 1)} / {num(med['0']['p99_ms'], 1)}; "
                f"non-2xx {refused}, socket errors {socket_errors}",
                "no 503 while the replica is up",
                refused == 0,
            )
        )
    return figures, rows


def conditions(plan: Plan) -> str:
    return (
        f"two webhooks (WSM_REDIS_MIN_REPLICAS=0 and =1, WORKERS=2 THREADS=8) on one master with one replica "
        f"(both AOF always), same host; wrk -t2 -c{'/-c'.join(map(str, plan.concurrency))}, {plan.wrk_duration_s} s "
        f"runs after {plan.wrk_warmup_s} s warm-up, 0/1 alternating x{plan.repeats}, medians; part (a)'s bodies"
    )
