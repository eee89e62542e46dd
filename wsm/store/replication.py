"""Acknowledge a write only once replicas hold it: the script and ``WAIT`` on one connection.

Redis replicates asynchronously, so a master that dies right after answering takes its last writes
with it. With ``WSM_REDIS_MIN_REPLICAS`` ≥ 1 the webhook answers 200 only after ``WAIT`` confirms that
many replicas have the write within ``WSM_REDIS_WAIT_TIMEOUT_MS``; otherwise it answers 503 and WAHA
retries (the script is idempotent, so the retry is harmless). ``WAIT`` counts the writes of the
connection it runs on, hence the pipeline; on a cluster it runs on the master owning the keys' slot.
A retry that finds its first try stored writes nothing, yet Redis 7 makes its ``WAIT`` wait for the
master's whole stream so far, first try included (tests/test_replication.py checks it).
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


def execute_replicated(
    client: redis.Redis, script: Script, keys: list, args: list, min_replicas: int, timeout_ms: int
) -> Any:
    """Run ``script`` and return its result once ``min_replicas`` replicas have its writes."""
    node = client.get_redis_connection(client.get_node_from_key(keys[0])) if is_cluster(client) else client  # type: ignore[attr-defined]
    try:
        pipe = node.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", min_replicas, timeout_ms)
        result, acked = pipe.execute()
    except redis.RedisError:
        if is_cluster(client):  # maybe a failover: re-read the slot map so the retry finds the new master
            with contextlib.suppress(redis.RedisError):
                client.nodes_manager.initialize()  # type: ignore[attr-defined]
        raise
    if int(acked) < min_replicas:
        raise NotReplicated(f"{acked} of {min_replicas} replicas confirmed the write within {timeout_ms} ms")
    return result
