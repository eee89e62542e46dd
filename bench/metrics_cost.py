"""CPU per message of the metrics, side by side: what a message costs in prometheus_client's multiprocess mode (the
design) against keeping the same counts in Redis (one pipelined round trip of HINCRBYs per message), in one run.

A served message records, across the webhook and the worker: one webhook event, one message in, four WAHA calls
(seen, typing on/off, text: a counter and a histogram each), one message out, one first response.

``python -m bench.metrics_cost [N]`` (default 20000 messages); Redis is a private server on a free port.
"""

from __future__ import annotations

import sys
import time

import redis

from infra.platform.redis_server import RedisServer
from wsm.core.settings import Settings
from wsm.metrics import record
from wsm.metrics.endpoint import render
from wsm.store import keys

REDIS_FIELDS = 2 + 4 * 3 + 1 + 2  # the same figures as hash fields: counters, histogram bucket + sum + count


def one_message() -> None:
    record.webhook_event("message", "accepted")
    record.message("in", "customer")
    for endpoint in ("sendSeen", "startTyping", "stopTyping", "sendText"):
        record.waha_request(endpoint, "201", 0.004)
    record.message("out", "bot")
    record.first_response(1.2)


def in_redis(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(REDIS_FIELDS):
        pipe.hincrby("bench:metrics", f"field{i}", 1)
    pipe.execute()


def cpu_us_per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # first call opens files / connections
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n * 1e6


def main(n: int) -> None:
    with RedisServer() as rs:
        client = redis.Redis.from_url(rs.url)
        for attempt in (1, 2, 3):
            local = cpu_us_per_call(one_message, n)
            remote = cpu_us_per_call(lambda: in_redis(client), n // 4)
            print(
                f"run {attempt}: multiprocess counters {local:.1f} us CPU per message; "
                f"the same counts in Redis {remote:.1f} us client CPU per message (+ a round trip each)"
            )
        client.sadd(keys.SESSIONS, "default")
        settings = Settings.from_env()
        settings = Settings(**{**settings.__dict__, "redis_url": rs.url})
        started = time.perf_counter()
        for _ in range(50):
            size = len(render(settings))
        print(f"one scrape (render, one session): {(time.perf_counter() - started) / 50 * 1000:.1f} ms, {size} bytes")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
