"""The attendance queue: admitting waiting chats into free slots, positions and estimated waits.

FIFO by ticket (a sorted set scored by an increasing counter), so a position is one
ZRANK (O(log N)) and admission is one atomic script per chat admitted.
"""

from __future__ import annotations

import math

import redis

from wsm.core.clock import now_ms
from wsm.core.status import ChatStatus
from wsm.metrics import record as metrics
from wsm.store import keys
from wsm.store.doorbells import doorbell
from wsm.store.scripts import Scripts

DEFAULT_HANDLE_MS = 180_000  # assumed conversation length until real ones are measured


def admit_waiting(client: redis.Redis, scripts: Scripts, sk: keys.SessionKeys, max_active: int) -> list[str]:
    """Admit queue heads while slots are free; returns the chats admitted (each also gets a chat.admitted event)."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(sk.active)
    pipe.zrange(sk.queue, 0, max_active - 1)
    active, heads = pipe.execute()
    admitted: list[str] = []
    channel, publish = doorbell(client, sk.session)
    for chat in heads[: max(0, max_active - active)]:  # one attempt per free slot; a lost race just stops early
        ck = sk.chat(chat)
        now = now_ms()
        result = scripts.admit_next(
            keys=[sk.active, sk.queue, sk.notify_due, ck.notify, ck.state, sk.ready],
            args=[chat, max_active, now, channel, sk.session, ChatStatus.ACTIVE, publish],
        )
        if not isinstance(result, list):  # "full" or "moved"
            break
        if result[1]:
            metrics.queue_wait("bot", (now - int(result[1])) / 1000)
        admitted.append(chat)
    return admitted


def position(client: redis.Redis, sk: keys.SessionKeys, chat_id: str, human: bool = False) -> int | None:
    """1-based place in the queue (the human queue when ``human``), or None when not waiting."""
    rank = client.zrank(sk.human_queue if human else sk.queue, chat_id)
    return None if rank is None else rank + 1


def average_handle_ms(client: redis.Redis, sk: keys.SessionKeys, human: bool = False) -> float:
    recent = [int(x) for x in client.lrange(sk.human_handle_stats if human else sk.handle_stats, 0, -1)]
    return sum(recent) / len(recent) if recent else DEFAULT_HANDLE_MS


def estimated_wait_min(avg_handle_ms: float, place: int, slots: int) -> int:
    """Rolling average handling time x position / slots, in whole minutes (at least 1)."""
    return max(1, math.ceil(avg_handle_ms * place / max(1, slots) / 60000))
