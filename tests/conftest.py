"""Shared fixtures: a private redis-server on a free port for the whole run, flushed per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from infra.platform.redis_server import RedisServer
from wsm.core.settings import get_settings


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(appendfsync="everysec") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """REDIS_URL of the private server, empty at the start of each test."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    get_settings.cache_clear()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
    get_settings.cache_clear()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key with its value (DUMP) and TTL presence, to assert that a refused request changed nothing."""
    kwargs = client.get_connection_kwargs()
    raw = redis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0))
    try:
        return {k.decode(): (raw.dump(k), raw.ttl(k) > 0) for k in raw.scan_iter(count=1000)}
    finally:
        raw.close()
