"""(e) Attendant scaling: replies/s with N busy slots when WAHA takes 50 ms to answer every call.

``make local``'s system (worker and notifier with their defaults there, WORKERS=2 THREADS=24) sends
to the recording WAHA stand-in, which now answers each call after ``waha_delay_ms``. N chats each
send their next message as soon
as WAHA answered the ``sendText`` of the previous reply (a closed loop), so N slots are busy all the
time. The system runs with more slots than N (no one queues), which is the same as N slots here.
Efficiency = replies/s at N ÷ (N x replies/s at 1).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from bench.bodies import BodyMaker, chat_id
from bench.loadgen import Poster, closed_loop
from bench.plan import Plan
from bench.recorder import RecorderClient
from bench.report import Row, num
from bench.stack import HMAC_KEY, cpu_delta, system_cpu
from infra.platform.local import LocalSystem

SESSION = "default"
TARGET_EFFICIENCY = 0.8
_groups = iter(range(900, 1000))


def replies_per_s(plan: Plan, system: LocalSystem, recorder: RecorderClient, n: int) -> dict:
    maker = BodyMaker(SESSION, HMAC_KEY)
    group = next(_groups)
    chats = [chat_id(group, i) for i in range(n)]

    def send(poster: Poster, chat: str, k: int) -> None:
        _, raw, headers = maker.signed(chat, "oi" if k == 0 else "menu")
        poster.post(raw, headers)

    def wait_reply(waiter: Poster, chat: str, k: int) -> bool:
        answer = waiter.request("GET", f"/bench/wait?chat={quote(chat)}&count={k}&timeout_s=15")
        return json.loads(answer)["count"] >= k

    start = time.time()
    window = (start + plan.scaling_warmup_s, start + plan.scaling_warmup_s + plan.scaling_duration_s)
    cpu_before = system_cpu(system, recorder.pid)
    sent = closed_loop(chats, window[1], send, wait_reply, system.webhook_url, recorder.url)
    cpu = cpu_delta(cpu_before, system_cpu(system, recorder.pid))
    ours = set(chats)
    answered = [t.answered for t in recorder.texts() if t.chat in ours]
    in_window = sum(window[0] <= a < window[1] for a in answered)
    return {
        "n": n,
        "replies": in_window,
        "messages_sent": sum(sent.values()),
        "replies_per_s": round(in_window / plan.scaling_duration_s, 2),
        "cpu_ms_per_reply": {name: round(s * 1000 / max(1, len(answered)), 2) for name, s in cpu.items()},
    }


def run(plan: Plan, system: LocalSystem, recorder: RecorderClient) -> tuple[dict, list[Row]]:
    recorder.reset(plan.waha_delay_ms)
    try:
        by_n = {n: replies_per_s(plan, system, recorder, n) for n in plan.slots}
    finally:
        recorder.reset(0)
    base = by_n[plan.slots[0]]["replies_per_s"] / plan.slots[0]
    for fig in by_n.values():
        fig["efficiency"] = round(fig["replies_per_s"] / (fig["n"] * base), 3) if base else 0.0
    worst = min(fig["efficiency"] for fig in by_n.values())
    measured = " | ".join(
        f"N={f['n']}: {num(f['replies_per_s'], 1)}/s" + (f" ({f['efficiency']:.2f})" if f["n"] != 1 else "")
        for f in by_n.values()
    )
    row = Row(
        "e",
        f"replies/s (efficiency vs linear), WAHA {plan.waha_delay_ms} ms",
        measured,
        f"≥ {TARGET_EFFICIENCY} × linear up to {max(plan.slots)}",
        worst >= TARGET_EFFICIENCY,
    )
    top = by_n[plan.slots[-1]]
    cpu_row = Row(
        "e",
        f"CPU ms per reply at N={top['n']}, by process",
        " | ".join(f"{name} {v:.2f}" for name, v in top["cpu_ms_per_reply"].items()),
    )
    return {"waha_delay_ms": plan.waha_delay_ms, "by_slots": by_n, "worst_efficiency": worst}, [row, cpu_row]


def conditions(plan: Plan) -> str:
    return (
        f"make local's processes (worker WORKERS=2 THREADS=24); WAHA stand-in answers every call after "
        f"{plan.waha_delay_ms} ms; N chats in a closed loop, {plan.scaling_duration_s:g} s measured after "
        f"{plan.scaling_warmup_s:g} s, N = {', '.join(map(str, plan.slots))}"
    )
