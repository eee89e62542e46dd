"""(a) Ingest: the webhook function against a bare Functions Framework function and the seed-style view.

The three serve with 2 worker processes (the Functions Framework's WORKERS; gunicorn's ``--workers`` for the
seed's Django view, bench/seed/app.py): the bare function and the seed with 8 threads each, the webhook as an
ASGI function (one event loop per process; the bare function is the Functions Framework's default, Flask).
They take the same wrk load
(``-t2``, signed ~900-byte WAHA ``message`` bodies, HMAC checked by both writers, never the same payload id
twice, many chats), in turn — bare, seed, webhook, bare, seed, webhook — so drifting machine load hits all;
figures are medians. The webhook and the seed write to the same redis-server (AOF ``appendfsync always``, as
shipped); no router runs, and WSM_MAX_ACTIVE is the default (1), so nearly every new chat joins the queue.
Redis is flushed before each writer's warm-up, so every run starts from the same state.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import redis

from bench.bodies import BODY_BYTES, BodyMaker, chat_id
from bench.loadgen import WrkResult, run_wrk
from bench.plan import Plan
from bench.report import Row, median, num
from bench.stack import (
    HMAC_KEY,
    bare_process,
    client_for,
    private_redis,
    running,
    seed_process,
    url_of,
    webhook_process,
)
from wsm.store import keys

SESSION = "bench"
MESSAGES_PER_CHAT = 10
TARGET_RATIO = 0.8  # x bare
TARGET_VS_SEED = 1.6
CONTESTANTS = ("bare", "seed", "webhook")


def count_stored(client: redis.Redis, sk: keys.SessionKeys) -> int:
    """Messages stored = records in the session's chat histories (one per stored message id)."""
    names = list(client.scan_iter(match=sk.chat("*").history, count=5000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return sum(pipe.execute()) // 2 if names else 0  # id, body per message


def settle(client: redis.Redis, sk: keys.SessionKeys) -> int:
    """Count again until requests still in flight when wrk stopped have landed."""
    last = -1
    while (now := count_stored(client, sk)) != last:
        last = now
        time.sleep(0.3)
    return now


def write_bodies(maker: BodyMaker, path: Path, count: int, group: int, first_chat: int = 0) -> Path:
    """``count`` signed bodies from chats ``first_chat``.. of ``group``, MESSAGES_PER_CHAT each."""
    chats = [chat_id(group, first_chat + i) for i in range(max(1, count // MESSAGES_PER_CHAT))]
    return maker.write(path, count, chats)


def run(plan: Plan) -> tuple[dict, list[Row]]:
    runs: dict[int, dict[str, list[dict]]] = {c: {name: [] for name in CONTESTANTS} for c in plan.concurrency}
    sk = keys.SessionKeys(SESSION)
    with (
        tempfile.TemporaryDirectory(prefix="wsm-bench-") as tmp,
        private_redis() as server,
        running(bare_process()) as bare,
        running(seed_process(server.url)) as seed,
        running(webhook_process(server.url)) as webhook,
    ):
        client = client_for(server.url)
        for c in plan.concurrency:
            for rep in range(plan.repeats):
                maker = BodyMaker(SESSION, HMAC_KEY, pad_to=BODY_BYTES)
                warm_count = plan.bodies_per_s * plan.wrk_warmup_s
                warm = write_bodies(maker, Path(tmp) / "warmup.txt", warm_count, group=100 + rep)
                count, first = plan.bodies_per_s * plan.wrk_duration_s, warm_count // MESSAGES_PER_CHAT + 1
                bodies = write_bodies(maker, Path(tmp) / "bodies.txt", count, group=100 + rep, first_chat=first)
                for name, proc in (("bare", bare), ("seed", seed), ("webhook", webhook)):
                    if name != "bare":
                        client.flushall()
                    run_wrk(url_of(proc), warm, c, plan.wrk_warmup_s)
                    before = settle(client, sk) if name == "webhook" else 0
                    result = run_wrk(url_of(proc), bodies, c, plan.wrk_duration_s)
                    stored = settle(client, sk) - before if name == "webhook" else None
                    runs[c][name].append(_as_dict(result, stored))
        client.close()
    return summarize(runs)


def _as_dict(result: WrkResult, stored: int | None) -> dict:
    out = {k: getattr(result, k) for k in result.__dataclass_fields__}
    out["ok"] = result.ok
    if stored is not None:
        # wrk stops with up to one request per connection in flight: answered after it stopped counting
        out["stored"] = stored
        out["stored_ok"] = result.ok <= stored <= result.ok + result.connections + result.socket_errors
    return out


def summarize(runs: dict[int, dict[str, list[dict]]]) -> tuple[dict, list[Row]]:
    rows: list[Row] = []
    figures: dict[str, dict] = {}
    for c, by_name in runs.items():
        med = {
            name: {f: median([r[f] for r in rs]) for f in ("rps", "p50_ms", "p99_ms")} for name, rs in by_name.items()
        }
        ratio = med["webhook"]["rps"] / med["bare"]["rps"]
        vs_seed = med["webhook"]["rps"] / med["seed"]["rps"]
        hook, everyone = by_name["webhook"], [r for rs in by_name.values() for r in rs]
        checks = {
            "non_2xx": sum(r["non_2xx"] for r in everyone),
            "socket_errors": sum(r["socket_errors"] for r in everyone),
            "bodies_reused": sum(r["bodies_reused"] for r in hook),
            "stored": sum(r["stored"] for r in hook),
            "ok": sum(r["ok"] for r in hook),
            "stored_matches": all(r["stored_ok"] for r in hook),
        }
        figures[f"c{c}"] = {
            "median": med, "ratio": round(ratio, 3), "vs_seed": round(vs_seed, 3), "runs": by_name, "checks": checks,
        }  # fmt: skip
        seed_each = " ".join(f"{r['rps']:,.0f}" for r in by_name["seed"])
        each = " ".join(f"{r['rps']:,.0f}" for r in hook)
        rows.append(
            Row(
                "a",
                f"ingest req/s, -c{c}",
                f"webhook {num(med['webhook']['rps'])} | bare {num(med['bare']['rps'])} | "
                f"ratio {ratio:.2f} (webhook runs: {each})",
                f"≥ {TARGET_RATIO} × bare",
                ratio >= TARGET_RATIO,
            )
        )
        rows.append(
            Row(
                "a",
                f"ingest vs the seed-style view, -c{c}",
                f"webhook {num(med['webhook']['rps'])} | seed {num(med['seed']['rps'])} | ratio {vs_seed:.2f} "
                f"(seed runs: {seed_each})",
                f"≥ {TARGET_VS_SEED} × seed",
                vs_seed >= TARGET_VS_SEED,
            )
        )
        rows.append(
            Row(
                "a",
                f"latency p50 / p99 ms, -c{c}",
                " | ".join(
                    f"{name} {num(med[name]['p50_ms'], 1)} / {num(med[name]['p99_ms'], 1)}" for name in CONTESTANTS
                ),
            )
        )
        clean = checks["non_2xx"] == 0 and checks["socket_errors"] == 0 and checks["bodies_reused"] == 0
        rows.append(
            Row(
                "a",
                f"answers and storage, -c{c}",
                f"non-2xx {checks['non_2xx']}, socket errors {checks['socket_errors']}; "
                f"Redis holds {checks['stored']:,} messages for {checks['ok']:,} 2xx",
                "all 2xx, every 2xx stored",
                clean and checks["stored_matches"],
            )
        )
    return figures, rows


def conditions(plan: Plan) -> str:
    return (
        f"webhook and bare function under the Functions Framework, seed-style Django view under gunicorn, 2 workers "
        f"x 8 threads each; wrk -t2 "
        f"-c{'/-c'.join(map(str, plan.concurrency))}, {plan.wrk_duration_s} s runs after {plan.wrk_warmup_s} s "
        f"warm-up, bare/seed/webhook in turn x{plan.repeats}, medians; signed ~{BODY_BYTES} B message bodies "
        f"(HMAC on), unique ids, {MESSAGES_PER_CHAT} per chat; Redis AOF always, no router, WSM_MAX_ACTIVE=1"
    )
