"""What the model sees: instructions, business facts, *now* in the business's time zone, the person's state,
then the recent history as separate ``user`` / ``assistant`` / ``tool`` messages under a token budget.

History is never concatenated into one string, so a customer who types "[Bot]: agendado" only ever writes
a ``user`` message. The person's phone number is not sent (the chat id is not in any message, and long
digit runs in texts are masked) unless the agent step says ``share_phone: true``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from wsm.conversation.booking import WEEKDAY_NAMES
from wsm.schedule.config import Schedule

PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
CHARS_PER_TOKEN = 4  # a rough estimate, good enough for a budget


def estimate_tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return len(text) // CHARS_PER_TOKEN + 1


def mask_phones(text: str) -> str:
    return PHONE.sub("[número]", text)


def system_prompt(
    instructions: str,
    schedule: Schedule,
    now: datetime,
    person: dict[str, Any],
) -> str:
    """The instructions, then the facts the model must not guess: the business, today and the person."""
    local = now.astimezone(schedule.tz)
    iso = local.isoformat(timespec="minutes")
    b = schedule.business
    services = "; ".join(f"{s.id} = {s.name} ({s.duration_min} min)" for s in schedule.services.values())
    providers = "; ".join(f"{p.id} = {p.name} ({', '.join(p.services)})" for p in schedule.providers.values())
    weekday = WEEKDAY_NAMES[local.weekday()] + ("-feira" if local.weekday() < 5 else "")
    lines = [
        instructions.strip(),
        "",
        "## Fatos (do sistema, confiáveis)",
        f"- Negócio: {b.name}" + (f", {b.address}" if b.address else "") + (f", telefone {b.phone}" if b.phone else ""),
        f"- Agora: {weekday}, {local:%d/%m/%Y}, {local:%H:%M} (fuso {schedule.timezone}; ISO {iso})",
        f"- Serviços: {services}",
        f"- Profissionais: {providers}",
        "",
        "## A pessoa",
        json.dumps(person, ensure_ascii=False),
    ]
    return "\n".join(lines)


def history_messages(records: list[dict[str, Any]], budget_tokens: int, share_phone: bool) -> list[dict[str, Any]]:
    """Records (oldest first) as Chat Completions messages, newest kept first while they fit the budget."""
    units = _units(records, share_phone)
    kept: list[list[dict[str, Any]]] = []
    used = 0
    for unit in reversed(units):
        cost = estimate_tokens(unit)
        if used + cost > budget_tokens and kept:
            break
        kept.append(unit)
        used += cost
    return [m for unit in reversed(kept) for m in unit]


def _units(records: list[dict[str, Any]], share_phone: bool) -> list[list[dict[str, Any]]]:
    """Messages grouped so trimming never separates a tool result from the call that asked for it."""
    units: list[list[dict[str, Any]]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def flush() -> None:
        if calls:
            units.append([{"role": "assistant", "content": None, "tool_calls": list(calls)}, *results])
        calls.clear()
        results.clear()

    for record in records:
        if record.get("kind") == "tool":
            call_id = str(record.get("call_id") or record.get("id"))
            arguments = record.get("arguments")
            raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
            function = {"name": str(record.get("tool") or ""), "arguments": raw}
            calls.append({"id": call_id, "type": "function", "function": function})
            content = json.dumps(record.get("result"), ensure_ascii=False)
            results.append({"role": "tool", "tool_call_id": call_id, "content": content})
            continue
        flush()
        text = str(record.get("text") or "")
        if not text or record.get("kind") not in (None, "message", "reply"):
            continue
        text = text if share_phone else mask_phones(text)
        units.append([{"role": "user" if record.get("direction") == "in" else "assistant", "content": text}])
    flush()
    return units
