"""Shared fixtures: a private redis-server on a free port for the whole run, flushed per test; a WAHA
simulator per test; the local system's config on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from infra.platform.local import LocalConfig
from infra.platform.redis_server import RedisServer, free_port
from infra.waha_sim.core import WahaSimulator
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


@pytest.fixture
def sim_options() -> dict[str, Any]:
    """Keyword arguments of the ``sim`` fixture's simulator; a module overrides this fixture to change them."""
    return {}


@pytest.fixture
def sim(sim_options: dict[str, Any]) -> Iterator[WahaSimulator]:
    """A WAHA simulator on a free port, stopped after the test."""
    with WahaSimulator(**sim_options) as s:
        yield s


def local_config(data_dir: Path, env: dict[str, str], **fields: Any) -> LocalConfig:
    """``make local``'s config with every port free (never 8080, 3000 or 6380), so tests run beside anything;
    ``fields`` set the rest (``waha_url``, ``redis_url``) or a port chosen beforehand."""
    ports = dict(
        webhook_port=free_port(),
        worker_port=free_port(),
        notifier_port=free_port(),
        console_port=free_port(),
        waha_sim_port=free_port(),
        llm_sim_port=free_port(),
        redis_port=free_port(),
    )
    return LocalConfig(**{**ports, **fields}, data_dir=data_dir, env=env)
