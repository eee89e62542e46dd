"""One lazily created Redis client per process.

The Functions Framework imports a function's module in the gunicorn master
before forking workers, so connections are opened on first use, after the fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from wsm.core.errors import RedisUnavailable

# Ride out a Redis restart of a second or two (retries for about 3 s in all) instead of failing the request or
# turn. Safe because every script is idempotent when repeated after a reply was lost (dedupe markers,
# turn ids, head checks), so re-sending a command that did run changes nothing.
RETRIES = 6  # backoff 0.05 s doubling, capped at 0.8 s

_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis(url: str) -> redis.Redis:
    """Return this process's client for ``url`` (``rediss://`` and passwords work as redis-py parses them)."""
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    decode_responses=True,
                    socket_connect_timeout=2,
                    socket_timeout=5,
                    health_check_interval=30,
                    max_connections=256,
                    retry=Retry(ExponentialBackoff(cap=0.8, base=0.05), retries=RETRIES),
                    retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                )
                _clients[key] = client
    return client


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn any redis-py connection or server failure into :class:`RedisUnavailable`."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
        raise RedisUnavailable(f"redis unavailable: {type(e).__name__}") from e
    except redis.ResponseError as e:
        raise RedisUnavailable(f"redis error: {str(e)[:200]}") from e
