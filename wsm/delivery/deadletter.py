"""The dead-letter list: what failed for good, one JSON entry each, newest first, one schema for every writer.

Every entry has ``kind`` (:data:`SEND` a reply WAHA refused, :data:`EVENT` a wake-up the router gave up
delivering), ``error`` and ``at_ms`` (:func:`wsm.core.clock.now_ms`), plus what names the failed thing
(``session``, ``chat``, ...). The list keeps the newest ``keep`` entries (``WSM_DEADLETTER_MAX``).
"""

from __future__ import annotations

import json

import redis

from wsm.core.clock import now_ms
from wsm.store import event_stream, keys

SEND = "send"  # outbox: WAHA refused a reply (4xx other than 422); fields session, chat, reply_id
EVENT = "event"  # router: a delivery failed router_max_attempts times; fields type, session, chat, target, attempts
KINDS = frozenset({SEND, EVENT})


def write_dead_letter(client: redis.Redis, kind: str, error: str, keep: int, **fields: object) -> dict[str, object]:
    """Add one entry (and trim the list to ``keep``); returns the entry written."""
    if kind not in KINDS:
        raise ValueError(f"unknown dead-letter kind: {kind!r}")
    entry = {"kind": kind, **fields, "error": error, "at_ms": now_ms()}
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.DEADLETTER, json.dumps(entry))
        pipe.ltrim(keys.DEADLETTER, 0, keep - 1)
        pipe.execute()
    if isinstance(fields.get("session"), str):  # the console's dead-letter page updates live
        event_stream.append(client, str(fields["session"]), event_stream.DEAD_LETTER)
    return entry


def read_dead_letters(client: redis.Redis) -> list[str]:
    """Every entry as stored (raw JSON), newest first."""
    return client.lrange(keys.DEADLETTER, 0, -1)


def remove_dead_letter(client: redis.Redis, raw: str) -> bool:
    """Delete one entry given as :func:`read_dead_letters` returned it; False if it was gone already."""
    return bool(client.lrem(keys.DEADLETTER, 1, raw))
