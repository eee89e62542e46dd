"""Figures read from Redis at scrape time (a prometheus_client custom collector), so they are right however many
processes and instances run: queue lengths and their oldest entry, busy slots, dead letters, operators online,
WAHA session states and send holds. No label names a session, chat or person.

Keys the console adds for human attendance are read when ``wsm.store.keys.SessionKeys`` has them, and a key that
is missing (no console deployed, nobody waiting) reads as 0:

- ``SessionKeys.human_queue``: sorted set of chats waiting for a person, score = when each joined (ms);
- ``SessionKeys.operators_online``: sorted set or set of operators online now.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wsm.core.settings import Settings
from wsm.store import keys

log = logging.getLogger(__name__)
NO_STATUS = "UNKNOWN"  # a session that never sent session.status


class RedisGauges(Collector):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield _gauge("wsm_sla_seconds", "The waiting-time target WSM_SLA_S.", self.settings.sla_s)
        try:
            figures = self._read()
        except redis.RedisError as e:
            log.warning("metrics: Redis unreadable at scrape time: %s", type(e).__name__)
            yield _gauge("wsm_redis_up", "1 when the scrape could read Redis.", 0)
            return
        yield _gauge("wsm_redis_up", "1 when the scrape could read Redis.", 1)
        yield from figures

    def _read(self) -> list[GaugeMetricFamily]:
        sessions = sorted(self.redis.smembers(keys.SESSIONS))
        length = {"bot": 0, "human": 0}
        oldest_ms: dict[str, list[float]] = {"bot": [], "human": []}
        busy = held = 0
        online: set[str] = set()  # an operator online in several sessions counts once
        statuses: Counter[str] = Counter()
        for session in sessions:
            sk = keys.SessionKeys(session)
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(sk.queue).zrange(sk.queue, 0, 0).zcard(sk.active).hmget(sk.status, "status", "held_ms")
            bot_len, head, active, (status, held_ms) = pipe.execute()
            held += 1 if held_ms else 0
            length["bot"] += bot_len
            busy += active
            statuses[status or NO_STATUS] += 1
            if head:
                queued = self.redis.hget(sk.chat(head[0]).state, "queued_ms")
                if queued:
                    oldest_ms["bot"].append(float(queued))
            human = getattr(sk, "human_queue", None)
            if human:
                length["human"] += self.redis.zcard(human)
                first = self.redis.zrange(human, 0, 0, withscores=True)
                if first:
                    oldest_ms["human"].append(first[0][1])
            operators = getattr(sk, "operators_online", None)
            if operators:
                online.update(_members(self.redis, operators))
        queue_length = GaugeMetricFamily("wsm_queue_length", "Chats waiting now, by queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "wsm_queue_oldest_enqueued_timestamp_seconds",
            "When the longest-waiting chat joined its queue (Unix time); 0 when the queue is empty.",
            labels=["queue"],
        )
        for queue in ("bot", "human"):
            queue_length.add_metric([queue], length[queue])
            oldest.add_metric([queue], min(oldest_ms[queue]) / 1000 if oldest_ms[queue] else 0)
        waha = GaugeMetricFamily("wsm_waha_sessions", "WAHA sessions by their last reported status.", labels=["status"])
        for status, count in sorted(statuses.items()):
            waha.add_metric([status], count)
        slots_total = self.settings.max_active * len(sessions)
        return [
            queue_length,
            oldest,
            _gauge("wsm_slots_busy", "Attendant slots holding a chat now.", busy),
            _gauge("wsm_slots_total", "Attendant slots (WSM_MAX_ACTIVE per WAHA session).", slots_total),
            _gauge("wsm_dead_letters", "Entries in the dead-letter list.", self.redis.llen(keys.DEADLETTER)),
            _gauge("wsm_operators_online", "Human operators online now.", len(online)),
            waha,
            _gauge("wsm_waha_sends_held", "WAHA sessions whose sends are on hold after a 422 (not WORKING).", held),
        ]  # fmt: skip


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _members(client: redis.Redis, key: str) -> set[str]:
    """Members of a set or sorted set; none when the key is missing."""
    kind = client.type(key)
    if kind == "zset":
        return set(client.zrange(key, 0, -1))
    if kind == "set":
        return set(client.smembers(key))
    return set()
