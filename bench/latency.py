"""(b) End to end: from the webhook POST to the ``sendText`` arriving at WAHA, through every real process.

``make local``'s system (webhook, router, worker, notifier, Redis with AOF always) sends to the
recording WAHA stand-in (its own process, answering at once); WSM_TYPING_MS_PER_CHAR=0 and enough
slots that nobody queues. An open-loop sender posts ``e2e_rate_per_s`` signed messages a second
from ``e2e_chats`` chats (each chat once every chats/rate seconds) for ``e2e_duration_s``; the
k-th reply a chat receives is matched to its k-th message. Both times are ``time.time()`` here.
When the worker falls behind, a chat's pending messages are answered in one merged reply: they
count as missing (the stand-in's sendSeen ids show they were answered), and later replies of that
chat are matched to earlier messages, which understates their latency.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter, defaultdict

from bench.bodies import BodyMaker, chat_id
from bench.loadgen import Sent, open_loop
from bench.lossy.main import CHANNEL as LOSSY_CHANNEL
from bench.plan import Plan
from bench.recorder import RecorderClient
from bench.report import Row, num, percentile
from bench.stack import (
    HMAC_KEY,
    SERVE_ENV,
    clean_env,
    client_for,
    cpu_delta,
    cpu_seconds,
    log_path,
    private_redis,
    running,
    system_cpu,
    url_of,
)
from infra.platform.local import LocalSystem
from infra.platform.processes import BIN, REPO, ManagedProcess
from infra.platform.redis_server import free_port

SESSION = "default"
TARGET_P99_MS = 20.0
TARGET_P99_VS_LOSSY = 1.5
TARGET_CPU_MS_PER_MESSAGE = 3.0
_groups = iter(range(800, 900))


def schedule(maker: BodyMaker, rate: float, seconds: float, chats: list[str], t0: float) -> list:
    """(due, chat, body, headers): message j of the run is due at t0 + j / rate, from chat j mod len(chats)."""
    out = []
    for j in range(int(rate * seconds)):
        chat = chats[j % len(chats)]
        _, raw, headers = maker.signed(chat, "oi" if j < len(chats) else "menu")
        out.append((t0 + j / rate, chat, raw, headers))
    return out


def send_and_collect(plan: Plan, webhook_url: str, recorder: RecorderClient, seconds: float) -> tuple:
    group = next(_groups)
    chats = [chat_id(group, i) for i in range(plan.e2e_chats)]
    plan_ = schedule(BodyMaker(SESSION, HMAC_KEY), plan.e2e_rate_per_s, seconds, chats, 0.0)
    t0 = time.time() + 0.5
    sent = open_loop(webhook_url, [(t0 + due, *rest) for due, *rest in plan_])
    replies = wait_for_replies(recorder, set(chats), sum(s.ok for s in sent))
    return sent, replies


def wait_for_replies(recorder: RecorderClient, chats: set[str], expected: int, quiet_s: float = 5.0) -> list:
    """Poll the stand-in until every expected reply came, or nothing new came for ``quiet_s``."""
    last, last_change = -1, time.monotonic()
    while True:
        texts = [t for t in recorder.texts() if t.chat in chats]
        if len(texts) != last:
            last, last_change = len(texts), time.monotonic()
        if len(texts) >= expected or time.monotonic() - last_change > quiet_s:
            return texts
        time.sleep(0.25)


def match(sent: list[Sent], replies: list) -> tuple[list[float], int, int]:
    """Latencies (s) of k-th message -> k-th reply per chat; (latencies, missing replies, extra replies)."""
    pairs, missing, extra = matched_pairs(sent, replies)
    return [arrived - s.sent for s, arrived in pairs], missing, extra


def matched_pairs(sent: list[Sent], replies: list) -> tuple[list[tuple[Sent, float]], int, int]:
    """(message, its reply's arrival) pairs, k-th message -> k-th reply per chat; and missing and extra replies."""
    by_chat: dict[str, list[Sent]] = defaultdict(list)
    for s in sorted(sent, key=lambda s: s.due):
        if s.ok:
            by_chat[s.chat].append(s)
    got: dict[str, list[float]] = defaultdict(list)
    for r in sorted(replies, key=lambda r: r.arrived):
        got[r.chat].append(r.arrived)
    pairs, missing, extra = [], 0, 0
    for chat, msgs in by_chat.items():
        arrivals = got.get(chat, [])
        pairs += list(zip(msgs, arrivals, strict=False))
        missing += max(0, len(msgs) - len(arrivals))
        extra += max(0, len(arrivals) - len(msgs))
    return pairs, missing, extra


def slowest_second(pairs: list[tuple[Sent, float]]) -> dict:
    """Where the slowest 1 % of replies were: a stall (one second holds most of them) or spread over the run.

    Returns the number of one-second windows (by send time) that hold the slowest 1 %, the worst window's
    offset and share of them, and the p99 of the run without that window.
    """
    if not pairs:
        return {}
    t0 = min(s.sent for s, _ in pairs)
    latencies = sorted(((a - s.sent) * 1000, int(s.sent - t0)) for s, a in pairs)
    slow = latencies[int(len(latencies) * 0.99) :]
    windows = Counter(second for _, second in slow)
    worst, in_worst = windows.most_common(1)[0]
    rest = [ms for ms, second in latencies if second != worst]
    return {
        "windows": len(windows),
        "worst_second": worst,
        "slowest_in_worst": in_worst,
        "slowest": len(slow),
        "p99_without_worst_ms": round(percentile(rest, 99), 2),
    }


def lossy_reference(plan: Plan, recorder: RecorderClient) -> dict:
    """The seed-like path (webhook -> PUBLISH -> one subscriber -> sendText) under the same load, minutes apart."""
    with private_redis(appendonly=False) as server, running(lossy_process(server.url)) as webhook:
        relay = ManagedProcess("lossy relay", lossy_relay_argv(server.url, recorder.url), clean_env(), None,
                               log_path("lossy-relay"))  # fmt: skip
        with running(relay):
            client = client_for(server.url)
            while not client.pubsub_numsub(LOSSY_CHANNEL)[0][1]:
                time.sleep(0.05)
            recorder.reset(0)
            send_and_collect(plan, url_of(webhook), recorder, plan.e2e_warmup_s)
            recorder.reset(0)
            groups = {"webhook": webhook.proc.pid, "relay": relay.proc.pid, "WAHA stand-in": recorder.pid}
            pids = {"redis": server.proc.pid} if server.proc else {}
            cpu_before = cpu_seconds(groups, pids)
            sent, replies = send_and_collect(plan, url_of(webhook), recorder, plan.e2e_duration_s)
            cpu = cpu_delta(cpu_before, cpu_seconds(groups, pids))
    latencies, missing, _extra = match(sent, replies)
    lat_ms = [x * 1000 for x in latencies]
    cpu_ms = {name: round(s * 1000 / len(sent), 2) for name, s in cpu.items()}
    return {
        "missing": missing,
        **{f"p{p}_ms": round(percentile(lat_ms, p), 2) for p in (50, 95, 99)},
        "cpu_ms_per_message": cpu_ms,
        "cpu_ms_per_message_total": round(sum(v for name, v in cpu_ms.items() if name != "load generator"), 2),
    }


def run(plan: Plan, system: LocalSystem, recorder: RecorderClient) -> tuple[dict, list[Row]]:
    reference = lossy_reference(plan, recorder)
    recorder.reset(0)
    send_and_collect(plan, system.webhook_url, recorder, plan.e2e_warmup_s)  # warm-up: other chats, not counted
    cpu_before = system_cpu(system, recorder.pid)
    recorder.reset(0)
    sent, replies = send_and_collect(plan, system.webhook_url, recorder, plan.e2e_duration_s)
    cpu = cpu_delta(cpu_before, system_cpu(system, recorder.pid))
    answered = recorder.calls().get("sendSeen messageIds", 0)  # messages a reply was sent for, merged or not
    pairs, missing, extra = matched_pairs(sent, replies)
    lat_ms = [(arrived - s.sent) * 1000 for s, arrived in pairs]
    span = max(s.sent for s in sent) - min(s.sent for s in sent)
    figures = {
        "sent": len(sent),
        "failed_posts": sum(not s.ok for s in sent),
        "rate_per_s": round(len(sent) / span, 1) if span else None,
        "sender_lag_p99_ms": round(percentile([(s.sent - s.due) * 1000 for s in sent], 99), 2),
        "matched": len(pairs),
        "missing": missing,
        "extra": extra,
        "answered": answered,
        "merged": answered - len(replies),
        **{f"p{p}_ms": round(percentile(lat_ms, p), 2) for p in (50, 95, 99)},
        "max_ms": round(max(lat_ms), 2) if lat_ms else None,
        "cpu_s": cpu,
        "cpu_ms_per_message": {name: round(s * 1000 / len(sent), 2) for name, s in cpu.items()},
        "lossy_reference": reference,
        "slowest": slowest_second(pairs),
    }
    ours_cpu_ms = sum(v for name, v in figures["cpu_ms_per_message"].items() if name != "load generator")
    figures["cpu_ms_per_message_total"] = round(ours_cpu_ms, 2)
    ratio = figures["p99_ms"] / reference["p99_ms"] if lat_ms and reference["p99_ms"] else math.nan
    rows = [
        Row(
            "b",
            f"webhook POST -> sendText, {plan.e2e_rate_per_s}/s for {plan.e2e_duration_s:g} s",
            f"p50 {num(figures['p50_ms'], 1)} | p95 {num(figures['p95_ms'], 1)} | p99 {num(figures['p99_ms'], 1)} ms"
            f" | max {num(figures['max_ms'] or float('nan'), 1)} ms",
            f"p99 ≤ {TARGET_P99_MS:g} ms",
            bool(lat_ms) and figures["p99_ms"] <= TARGET_P99_MS,
        ),
        Row(
            "b",
            "p99 vs the seed-like lossy path (same load, same run)",
            f"ours {num(figures['p99_ms'], 1)} ms vs lossy {num(reference['p99_ms'], 1)} ms "
            f"(p50 {num(reference['p50_ms'], 1)}, {reference['missing']} missing): **{num(ratio, 2)} ×**",
            f"≤ {TARGET_P99_VS_LOSSY:g} × lossy",
            ratio <= TARGET_P99_VS_LOSSY,
        ),
        Row(
            "b",
            "  where the slowest 1 % were (by second sent)",
            _slowest_text(figures["slowest"], plan.e2e_duration_s),
        ),
        Row(
            "b",
            "replies matched / missing",
            f"{figures['matched']:,} matched | {missing} missing | {extra} extra | {figures['failed_posts']} failed "
            f"POSTs | {answered:,} of {len(sent):,} answered, {figures['merged']} merged into another's reply | "
            f"sent at {num(figures['rate_per_s'] or 0, 1)}/s, sender lag p99 {figures['sender_lag_p99_ms']} ms",
            "0 missing",
            missing == 0 and figures["failed_posts"] == 0,
        ),
        Row(
            "b",
            "CPU ms per message, by process",
            " | ".join(f"{name} {v:.2f}" for name, v in figures["cpu_ms_per_message"].items())
            + f" | **{ours_cpu_ms:.2f} total** (load generator excluded)",
            f"≤ {TARGET_CPU_MS_PER_MESSAGE:g} ms",
            ours_cpu_ms <= TARGET_CPU_MS_PER_MESSAGE,
        ),
        Row(
            "b",
            "  CPU per message vs the lossy path (same load, same run)",
            f"ours {ours_cpu_ms:.2f} ms vs lossy {reference['cpu_ms_per_message_total']:.2f} ms ("
            + " | ".join(f"{name} {v:.2f}" for name, v in reference["cpu_ms_per_message"].items())
            + f"): **{num(ours_cpu_ms / (reference['cpu_ms_per_message_total'] or math.nan), 2)} ×**;"
            " the ratio moves less than either figure when the machine's speed does",
        ),
    ]
    return figures, rows


def _slowest_text(slow: dict, seconds: float) -> str:
    if not slow:
        return "no replies"
    return (
        f"{slow['slowest']} replies in {slow['windows']} of {seconds:g} one-second windows; the worst (second "
        f"{slow['worst_second']}) held {slow['slowest_in_worst']}; "
        f"p99 without it {num(slow['p99_without_worst_ms'], 1)} ms"
    )


def conditions(plan: Plan) -> str:
    return (
        f"make local's processes + recording WAHA stand-in (own process, answers at once); "
        f"{plan.e2e_rate_per_s} msg/s from {plan.e2e_chats} chats for {plan.e2e_duration_s:g} s "
        f"(after {plan.e2e_warmup_s:g} s warm-up on other chats); WSM_TYPING_MS_PER_CHAR=0, slots > chats"
    )


def lossy_process(redis_url: str) -> ManagedProcess:
    """The lossy webhook under the same Functions Framework and serving settings as ours."""
    argv = [
        str(BIN / "functions-framework"),
        "--source", str(REPO / "bench" / "lossy" / "main.py"),
        "--target", "lossy",
        "--host", "127.0.0.1",
        "--port", str(port := free_port()),
    ]  # fmt: skip
    return ManagedProcess("lossy", argv, clean_env(REDIS_URL=redis_url, **SERVE_ENV), port, log_path("lossy"))


def lossy_relay_argv(redis_url: str, waha_url: str) -> list[str]:
    return [sys.executable, "-m", "bench.lossy_relay", "--redis-url", redis_url, "--waha-url", waha_url]
