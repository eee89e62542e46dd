"""Reading a chat's history: its ``history`` list of id, body pairs, decoded (:mod:`wsm.store.record_codec`).

A chat still in the old layout (``log`` ids + ``msgs`` records, before ``wsm migrate``) is read too:
those records are older than anything in ``history``, so they come first.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from wsm.store import keys, record_codec
from wsm.store.connection import redis_errors


def read_history(client: redis.Redis, session: str, chat_id: str, last: int | None = None) -> list[dict[str, Any]]:
    """Messages of a chat, oldest first; ``last`` keeps only the newest N (what an agent reads)."""
    ck = keys.SessionKeys(session).chat(chat_id)
    start = -2 * last if last else 0
    with redis_errors():
        records = decode_history(client.lrange(ck.history, start, -1), chat_id)
        if (last is None or len(records) < last) and client.exists(ck.log):
            records = _old_layout(client, ck) + records
    return records[-last:] if last else records


def decode_history(elements: list[str], chat_id: str) -> list[dict[str, Any]]:
    """The records of a run of history elements (id, body, id, body...)."""
    return [record_codec.decode_pair(i, body, chat_id) for i, body in zip(elements[::2], elements[1::2], strict=True)]


def _old_layout(client: redis.Redis, ck: keys.ChatKeys) -> list[dict[str, Any]]:
    ids = client.lrange(ck.log, 0, -1)
    return [json.loads(raw) for raw in (client.hmget(ck.msgs, ids) if ids else []) if raw]
