"""Where wake-up events are published: one channel, or one shard channel per session on a Redis Cluster.

Plain Pub/Sub on a cluster is broadcast to every node, so the cluster uses sharded Pub/Sub
(``SPUBLISH``/``SSUBSCRIBE``): a session's events go only to the node owning its slot, on a channel
inside that slot, which is also what lets a Lua script publish them. Scripts take the channel and the
command as arguments, so one script serves both.
"""

from __future__ import annotations

import redis

from wsm.store import keys
from wsm.store.connection import is_cluster
from wsm.store.events import WakeUp

PUBLISH = "PUBLISH"
SPUBLISH = "SPUBLISH"


def doorbell(client: redis.Redis, session: str) -> tuple[str, str]:
    """``(channel, command)`` a script publishes ``session``'s events with."""
    if is_cluster(client):
        return keys.SessionKeys(session).events, SPUBLISH
    return keys.EVENTS_CHANNEL, PUBLISH


def ring(client: redis.Redis, event: WakeUp) -> None:
    """Publish ``event`` (it must name its session on a cluster)."""
    if not is_cluster(client):
        client.publish(keys.EVENTS_CHANNEL, event.to_json())
        return
    if not event.session:
        raise ValueError("on a Redis Cluster every event names its session")
    client.spublish(keys.SessionKeys(event.session).events, event.to_json())
