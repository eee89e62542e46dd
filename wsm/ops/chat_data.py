"""A person's data on request (LGPD/GDPR): export everything we hold about one chat, or erase it.

What a chat leaves in Redis (see :mod:`wsm.store.keys`): its own keys (:meth:`ChatKeys.all`: history,
the ``seen`` ids, and the old layout's ``log``/``msgs`` until migrated), its membership in the session's
``ready``/``active``/``queue``/``notify:due`` sets, maybe an early ack ``ack:<id>`` per message id and the
old layout's ``seen:<id>`` markers until they expire (WAHA ids hold the phone number),
dead-letter entries that name it, and its appointments (:mod:`wsm.schedule.book`: hashes, busy
intervals, reminders, waitlist, offers, calendar-outbox records, remembered answers). Erasing
removes all of these; an active chat's slot is given to the next waiting chat. Redis's AOF/RDB
files keep erased data until the next rewrite (``BGREWRITEAOF``) and backups until they rotate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from wsm.attendance.ownership import Ownership
from wsm.attendance.queue import admit_waiting
from wsm.conversation.history import decode_history, read_history
from wsm.core.settings import get_settings
from wsm.delivery.deadletter import read_dead_letters, remove_dead_letter
from wsm.ingest.lid import mapping_keys
from wsm.schedule.book import erase_appointments, export_appointments
from wsm.store import keys, record_codec
from wsm.store.connection import redis_errors
from wsm.store.scripts import Scripts

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass
class Erased:
    """What :func:`erase_chat` removed."""

    session: str
    chat: str
    keys_deleted: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # ready / active / queue / notify:due
    deadletter_entries: int = 0
    appointments: int = 0  # appointments deleted (their slots freed)
    admitted: list[str] = field(default_factory=list)  # chats given the freed slot
    human_attendance: int = 0  # human queue, messages left and console events removed


def export_chat(client: redis.Redis, session: str, chat_id: str) -> dict[str, Any]:
    """Everything held about ``chat_id`` in ``session``, as one JSON-ready document."""
    sk = keys.SessionKeys(session)
    ck = sk.chat(chat_id)
    with redis_errors():
        ids = _message_ids(client, ck)
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(ck.state)
        pipe.lrange(ck.inbox, 0, -1)
        pipe.lrange(ck.outbox, 0, -1)
        pipe.hgetall(ck.notify)
        pipe.zscore(sk.active, chat_id)
        pipe.zrank(sk.queue, chat_id)
        pipe.sismember(sk.ready, chat_id)
        pipe.exists(ck.lease)
        state, inbox, outbox, notify, active_ms, rank, ready, leased = pipe.execute()
        markers = _markers(client, sk, chat_id, ids)
        early_acks = {name: client.get(name) for name in markers["ack"]}
        return {
            "session": session,
            "chat": chat_id,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "history": read_history(client, session, chat_id),
            "state": state,
            "inbox": [record_codec.decode(raw, chat_id) for raw in inbox],
            "outbox": [json.loads(raw) for raw in outbox],
            "notify": notify,
            "attendance": {
                "active": active_ms is not None,
                "active_last_activity_ms": int(active_ms) if active_ms is not None else None,
                "queue_position": None if rank is None else rank + 1,
                "has_pending_work": bool(ready),
                "being_handled": bool(leased),
            },
            "dedupe_ids": [record_codec.full_id(i, chat_id) for i in client.lrange(ck.seen, 0, -1)],  # past the window
            "dedupe_markers": sorted(markers["seen"]),  # the old layout's seen:<id> keys
            "early_acks": {name: json.loads(raw) for name, raw in early_acks.items() if raw},
            "deadletter": [json.loads(raw) for raw in _deadletter_entries(client, chat_id)],
            "schedule": export_appointments(client, session, chat_id),
            "lid_mappings": mapping_keys(client, session, chat_id),  # @lid ids known to be this person
            "agent_usage": {  # tokens the AI agent's model calls used (for cost): this conversation, and all
                "conversation": json.loads(state.get("agent_usage") or "{}"),
                "total": json.loads(state.get("agent_usage_total") or "{}"),
            },
        }


def erase_chat(client: redis.Redis, session: str, chat_id: str, max_active: int) -> Erased:
    """Delete every trace of ``chat_id`` in ``session``; a freed slot goes to the next waiting chat."""
    sk = keys.SessionKeys(session)
    ck = sk.chat(chat_id)
    result = Erased(session, chat_id)
    with redis_errors():
        result.human_attendance = Ownership(client, Scripts(client), get_settings()).erase(session, chat_id)
        ids = _message_ids(client, ck)
        markers = _markers(client, sk, chat_id, ids)
        doomed = set(ck.all()) | markers["seen"] | markers["ack"] | set(mapping_keys(client, session, chat_id))
        names = sorted(doomed)
        pipe = client.pipeline(transaction=True)  # one slot: every key carries the session's hash tag
        for name in names:
            pipe.unlink(name)
        pipe.srem(sk.ready, chat_id)
        for zset in (sk.active, sk.queue, sk.notify_due):
            pipe.zrem(zset, chat_id)
        answers = pipe.execute()
        result.keys_deleted = [name for name, n in zip(names, answers, strict=False) if n]
        removed = answers[len(names) :]
        result.left = [label for label, n in zip(("ready", "active", "queue", "notify:due"), removed, strict=True) if n]
        for raw in _deadletter_entries(client, chat_id):
            result.deadletter_entries += remove_dead_letter(client, raw)
        result.appointments = erase_appointments(client, session, chat_id)
        if "active" in result.left:
            result.admitted = admit_waiting(client, Scripts(client), sk, max_active)
    return result


def _message_ids(client: redis.Redis, ck: keys.ChatKeys) -> set[str]:
    """Every message id the chat's keys mention: history, seen, inbox and outbox (WAHA's and ours), old layout too."""
    ids = {record_codec.full_id(i, ck.chat_id) for i in client.lrange(ck.seen, 0, -1)}
    ids |= set(client.lrange(ck.log, 0, -1)) | set(client.hkeys(ck.msgs))
    records = decode_history(client.lrange(ck.history, 0, -1), ck.chat_id)
    records += [record_codec.decode(raw, ck.chat_id) for raw in client.lrange(ck.inbox, 0, -1)]
    records += [json.loads(raw) for raw in client.hvals(ck.msgs) + client.lrange(ck.outbox, 0, -1)]
    for record in records:
        ids |= {record[name] for name in ("id", "local_id") if isinstance(record.get(name), str)}
        ids |= {seen for seen in record.get("seen") or [] if isinstance(seen, str)}
    return ids


def _markers(client: redis.Redis, sk: keys.SessionKeys, chat_id: str, ids: set[str]) -> dict[str, set[str]]:
    """Existing ``seen:`` and ``ack:`` keys of the chat: by its known ids, and any whose id names its number.

    Older ids were trimmed from the history while their markers live on, so the session is also
    scanned (once, filtered by Redis) for marker keys that contain the number.
    """
    needle = _needle(chat_id)
    scanned = set(client.scan_iter(match=_glob(sk.tag + ":") + "*" + _glob(needle) + "*", count=1000))
    found: dict[str, set[str]] = {}
    for kind, key_of in (("seen", sk.seen), ("ack", sk.early_ack)):
        known = [key_of(message_id) for message_id in ids]
        exists = client.pipeline(transaction=False)
        for name in known:
            exists.exists(name)
        found[kind] = {name for name, n in zip(known, exists.execute(), strict=True) if n}
        found[kind] |= {name for name in scanned if name.startswith(key_of(""))}
    return found


def _deadletter_entries(client: redis.Redis, chat_id: str) -> list[str]:
    """Dead-letter entries (raw JSON) that name the chat anywhere: its ``chat`` field, a message id, an error."""
    needle = _needle(chat_id)
    return [raw for raw in read_dead_letters(client) if chat_id in raw or needle in raw]


def _needle(chat_id: str) -> str:
    """What identifies the person inside other text: the number (ids may carry another suffix), if long enough."""
    number = chat_id.partition("@")[0]
    return number if len(number) >= 8 else chat_id


def _glob(text: str) -> str:
    """``text`` as a literal inside a Redis SCAN MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)
