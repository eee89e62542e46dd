"""Acknowledge a write only once replicas hold it: the script and ``WAIT`` on one connection.

Redis replicates asynchronously, so a master that dies right after answering takes its last writes
with it. With ``WSM_REDIS_MIN_REPLICAS`` ≥ 1 the webhook answers 200 only after ``WAIT`` confirms that
many replicas have the write within ``WSM_REDIS_WAIT_TIMEOUT_MS``; otherwise it answers 503 and WAHA
retries (the script is idempotent, so the retry is harmless). ``WAIT`` counts the writes of the
connection it runs on, hence the pipeline; on a cluster it runs on the master owning the keys' slot.
A retry that finds its first try stored writes nothing, yet Redis 7 makes its ``WAIT`` wait for the
master's whole stream so far, first try included (tests/test_replication.py checks it).
The sender uses the same: it sends a reply only once replicas hold the turn that queued it
(:func:`confirm_replicated`), and its pop waits for them like the webhook's write.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from redis.commands.core import Script

from wsm.core.errors import RedisUnavailable
from wsm.store.connection import is_cluster


class NotReplicated(RedisUnavailable):
    """Fewer replicas than required confirmed the write in time (it may still reach them: retry)."""


def confirm_replicated(client: redis.Redis, key: str, min_replicas: int, timeout_ms: int) -> None:
    """Return once ``min_replicas`` replicas hold every write the master of ``key`` has taken so far, whichever
    connection made it: Redis 7 makes a connection's ``WAIT`` count up to its own last command, so an EXISTS goes
    first on the same connection. Raises :class:`NotReplicated`."""
    node = _master_of(client, key)
    pipe = node.pipeline(transaction=False)
    pipe.exists(key)
    pipe.execute_command("WAIT", min_replicas, timeout_ms)
    _, acked = _executed(client, pipe)
    _check(acked, min_replicas, timeout_ms)


def execute_replicated(
    client: redis.Redis, script: Script, keys: list, args: list, min_replicas: int, timeout_ms: int
) -> Any:
    """Run ``script`` and return its result once ``min_replicas`` replicas have its writes."""
    pipe = _master_of(client, keys[0]).pipeline(transaction=False)
    script(keys=keys, args=args, client=pipe)
    pipe.execute_command("WAIT", min_replicas, timeout_ms)
    result, acked = _executed(client, pipe)
    _check(acked, min_replicas, timeout_ms)
    return result


def _master_of(client: redis.Redis, key: str) -> redis.Redis:
    """The client itself, or on a cluster the master owning ``key``'s slot (WAIT counts one node's stream)."""
    return client.get_redis_connection(client.get_node_from_key(key)) if is_cluster(client) else client  # type: ignore[attr-defined]


def _executed(client: redis.Redis, pipe: Any) -> list:
    try:
        return pipe.execute()
    except redis.RedisError:
        if is_cluster(client):  # maybe a failover: re-read the slot map so the retry finds the new master
            with contextlib.suppress(redis.RedisError):
                client.nodes_manager.initialize()  # type: ignore[attr-defined]
        raise


def _check(acked: object, min_replicas: int, timeout_ms: int) -> None:
    if int(acked) < min_replicas:  # type: ignore[call-overload]
        raise NotReplicated(f"{acked} of {min_replicas} replicas confirmed the write within {timeout_ms} ms")
