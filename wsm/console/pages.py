"""What each console page shows, read from Redis (the same keys the functions write; nothing cached)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from wsm.attendance.operators import Operators
from wsm.attendance.ownership import owner_of
from wsm.conversation.history import read_history
from wsm.core.clock import now_ms
from wsm.delivery.deadletter import read_dead_letters
from wsm.schedule.book import Book
from wsm.schedule.config import Schedule
from wsm.store import keys, record_codec

CONVERSATIONS_MAX = 200  # chats listed (a SCAN of chat states, newest activity first)


@dataclass(frozen=True)
class Waiting:
    session: str
    chat: str
    position: int
    waited_s: int
    sla: str  # ok | warn | late: under half the SLA, under the SLA, over it


def sla_colour(waited_s: float, sla_s: int) -> str:
    return "late" if waited_s >= sla_s else "warn" if waited_s >= sla_s / 2 else "ok"


def sessions(client: redis.Redis) -> list[str]:
    return sorted(client.smembers(keys.SESSIONS))


def human_queue(client: redis.Redis, session: str, sla_s: int) -> list[Waiting]:
    now = now_ms()
    entries = client.zrange(keys.SessionKeys(session).human_queue, 0, -1, withscores=True)
    return [
        Waiting(session, chat, i + 1, int((now - joined) / 1000), sla_colour((now - joined) / 1000, sla_s))
        for i, (chat, joined) in enumerate(entries)
    ]


def bot_queue(client: redis.Redis, session: str, sla_s: int) -> list[Waiting]:
    sk = keys.SessionKeys(session)
    chats = client.zrange(sk.queue, 0, -1)
    pipe = client.pipeline(transaction=False)
    for chat in chats:
        pipe.hget(sk.chat(chat).state, "queued_ms")
    now = now_ms()
    out = []
    for i, (chat, queued) in enumerate(zip(chats, pipe.execute(), strict=True)):
        waited = (now - int(queued or now)) / 1000
        out.append(Waiting(session, chat, i + 1, int(waited), sla_colour(waited, sla_s)))
    return out


def conversations(client: redis.Redis, session: str) -> list[dict[str, Any]]:
    """Chats of the session with owner, status and last message, most recent activity first."""
    found = []
    for key in client.scan_iter(match=keys.chat_state_pattern(session), count=1000):
        found.append(keys.chat_from_state_key(session, key))
        if len(found) >= CONVERSATIONS_MAX * 5:
            break
    sk = keys.SessionKeys(session)
    pipe = client.pipeline(transaction=False)
    for chat in found:
        pipe.hgetall(sk.chat(chat).state)
        pipe.lrange(sk.chat(chat).history, -2, -1)  # the newest id/body pair
    raw = pipe.execute()
    rows = []
    for i, chat in enumerate(found):
        state, last = raw[2 * i], raw[2 * i + 1]
        message = record_codec.decode_pair(last[0], last[1], chat) if len(last) == 2 else {}
        activity = max(int(state.get(f) or 0) for f in ("last_seen_ms", "last_out_ms", "owner_ms", "closed_ms"))
        rows.append(
            {
                "session": session,
                "chat": chat,
                "owner": owner_of(state),
                "operator": state.get("operator") or "",
                "status": state.get("status") or "",
                "last": message.get("text") or describe(message),
                "activity_ms": activity,
            }
        )
    rows.sort(key=lambda row: -row["activity_ms"])
    return rows[:CONVERSATIONS_MAX]


def describe(record: dict[str, Any]) -> str:
    """A one-line description of a history record that is not a plain message."""
    if record.get("kind") == "transition":
        who = f" ({record.get('operator')})" if record.get("operator") else ""
        return f"{record.get('from')} → {record.get('to')}{who}, por {record.get('by')}"
    if record.get("kind") == "tool":
        return f"ferramenta {record.get('tool')}({json.dumps(record.get('arguments'), ensure_ascii=False)})"
    return ""


def conversation(client: redis.Redis, session: str, chat: str) -> dict[str, Any]:
    state = client.hgetall(keys.SessionKeys(session).chat(chat).state)
    history = read_history(client, session, chat)
    for record in history:
        record["when"] = clock_text(float(record.get("timestamp") or 0))
        record["line"] = record.get("text") or describe(record)
        if record.get("kind") == "tool":
            record["result_text"] = json.dumps(record.get("result"), ensure_ascii=False)
    return {"state": state, "owner": owner_of(state), "history": history}


def appointments_today(client: redis.Redis, schedule: Schedule | None, session: str) -> list[dict[str, Any]]:
    if schedule is None:
        return []
    book = Book(client, schedule, session)
    today = datetime.now(schedule.tz).date()
    return [
        {"start": a.start[11:16], "service": a.service, "provider": a.provider, "chat": a.chat, "status": a.status}
        for a in book.agenda(today)
    ]


def dead_letters(client: redis.Redis) -> list[dict[str, Any]]:
    out = []
    for raw in read_dead_letters(client):
        entry = json.loads(raw)
        entry["raw"] = raw
        entry["when"] = clock_text(int(entry.get("at_ms") or 0) / 1000)
        out.append(entry)
    return out


def operators(client: redis.Redis, session: str) -> list[dict[str, Any]]:
    ops = Operators(client)
    online = ops.online(session)
    return [
        {"name": name, "online": name in online, "capacity": online.get(name, (0, 0))[0],
         "load": online.get(name, (0, 0))[1]}
        for name in ops.names()
    ]  # fmt: skip


def clock_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).astimezone().strftime("%d/%m %H:%M:%S") if seconds else ""
