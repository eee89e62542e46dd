"""Reading a chat's history: the ordered ids in ``log`` joined with their records in ``msgs``."""

from __future__ import annotations

import json
from typing import Any

import redis

from wsm.store import keys
from wsm.store.connection import redis_errors


def read_history(client: redis.Redis, session: str, chat_id: str, last: int | None = None) -> list[dict[str, Any]]:
    """Messages of a chat, oldest first; ``last`` keeps only the newest N (what an agent reads)."""
    ck = keys.SessionKeys(session).chat(chat_id)
    start = -last if last else 0
    with redis_errors():
        ids = client.lrange(ck.log, start, -1)
        records = client.hmget(ck.msgs, ids) if ids else []
    return [json.loads(raw) for raw in records if raw]
