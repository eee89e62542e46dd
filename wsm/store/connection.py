"""One lazily created Redis client per process.

The Functions Framework imports a function's module in the gunicorn master
before forking workers, so connections are opened on first use, after the fork.
With ``WSM_REDIS_CLUSTER=1`` the client is redis-py's ``RedisCluster`` (``REDIS_URL`` names any node):
:func:`make_client` is the one place that chooses.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterError
from redis.retry import Retry

from wsm.core.errors import RedisUnavailable
from wsm.core.settings import redis_cluster_enabled

# Ride out a Redis restart of a second or two (retries for about 3 s in all) instead of failing the request or
# turn. Safe because every script is idempotent when repeated after a reply was lost (dedupe markers,
# turn ids, head checks), so re-sending a command that did run changes nothing.
RETRIES = 6  # backoff 0.05 s doubling, capped at 0.8 s

_lock = threading.Lock()
_clients: dict[tuple[int, str, bool], redis.Redis] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


def _options() -> dict:
    return dict(
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        max_connections=256,
        retry=Retry(ExponentialBackoff(cap=0.8, base=0.05), retries=RETRIES),
    )


def make_client(url: str, cluster: bool) -> redis.Redis:
    """A new client for ``url``: a plain one, or a ``RedisCluster`` that follows MOVED and failovers.

    Both are typed ``redis.Redis``: the cluster client offers the same commands for keys of one slot.
    """
    options = _options()
    if cluster:  # retries on ConnectionError/TimeoutError re-read the slot map, which is how a failover is followed
        return redis.RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, retry_on_error=[redis.ConnectionError, redis.TimeoutError], **options)


def get_redis(url: str, cluster: bool | None = None) -> redis.Redis:
    """Return this process's client for ``url`` (``rediss://`` and passwords work as redis-py parses them).

    ``cluster`` defaults to ``WSM_REDIS_CLUSTER``.
    """
    cluster = redis_cluster_enabled() if cluster is None else cluster
    key = (os.getpid(), url, cluster)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = make_client(url, cluster)
    return client


def get_async_redis(url: str) -> redis.asyncio.Redis:
    """This event loop's asyncio client for ``url`` (a plain Redis; the ASGI webhook's hot path), with the
    same timeouts and retries as :func:`make_client`. One per loop: an asyncio connection belongs to its loop."""
    of_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = of_loop.get(url)
    if client is None:
        options = _options()
        options["retry"] = AsyncRetry(ExponentialBackoff(cap=0.8, base=0.05), retries=RETRIES)
        errors = [redis.ConnectionError, redis.TimeoutError]
        client = of_loop[url] = redis.asyncio.Redis.from_url(url, retry_on_error=errors, **options)
    return client


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    return isinstance(client, redis.RedisCluster)


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn any redis-py connection or server failure into :class:`RedisUnavailable`."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ClusterError) as e:
        raise RedisUnavailable(f"redis unavailable: {type(e).__name__}") from e
    except redis.ResponseError as e:
        raise RedisUnavailable(f"redis error: {str(e)[:200]}") from e
