"""A private 3-master + 3-replica Redis Cluster for tests, session names that land on each master,
and a WAHA stand-in that serves several sessions (it serves one by default)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.crc import key_slot

from infra.platform.redis_cluster import RedisCliMissing, RedisClusterServers
from infra.waha_sim.core import WahaSimulator
from infra.waha_sim.web import Reply
from wsm.store import keys


@contextmanager
def redis_cluster() -> Iterator[RedisClusterServers]:
    """Start a cluster, or skip the test with the reason (redis-cli missing)."""
    try:
        servers = RedisClusterServers()
    except RedisCliMissing as e:
        pytest.skip(str(e))
    with servers:
        yield servers


def session_on_each_master(cluster: RedisClusterServers) -> list[str]:
    """One WAHA session name per master, each one's slot (its hash tag) served by a different master."""
    names: dict[int, str] = {}
    masters = cluster.masters()
    for i in range(1000):
        name = f"clinic{i}"
        port = cluster.master_of(keys.SessionKeys(name).ready).port
        names.setdefault(port, name)
        if len(names) == len(masters):
            return [names[m.port] for m in masters]
    raise AssertionError("no session names found for every master")


def slot_of(session: str) -> int:
    return key_slot(keys.SessionKeys(session).ready.encode())


class MultiSessionSimulator(WahaSimulator):
    """The WAHA stand-in answering sends and typing for every session in ``sessions``."""

    def __init__(self, sessions: list[str], **options: Any) -> None:
        self.sessions = set(sessions)
        super().__init__(**options)

    def _check_chat_call(self, body: Any, required: tuple[str, ...], optional: dict[str, type]) -> Reply | None:
        if isinstance(body, dict) and body.get("session") in self.sessions:
            body = {**body, "session": self.session}
        return super()._check_chat_call(body, required, optional)
