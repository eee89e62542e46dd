"""Group commit: concurrent callers share pipelines, each still gets its own answer or error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from infra.platform.redis_server import free_port
from wsm.store.group_commit import GroupCommit

ECHO = "redis.call('INCR', KEYS[1]); return ARGV[1]"


def test_each_concurrent_caller_gets_its_own_result(r: redis.Redis) -> None:
    group = GroupCommit(r)
    script = r.register_script(ECHO)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: group.call(script, ["counter"], [f"v{i}"]), range(500)))
    assert results == [f"v{i}" for i in range(500)]
    assert r.get("counter") == "500"


def test_scripts_are_reloaded_after_a_script_flush(r: redis.Redis) -> None:
    group = GroupCommit(r)
    script = r.register_script(ECHO)
    assert group.call(script, ["counter"], ["a"]) == "a"
    r.script_flush()
    assert group.call(script, ["counter"], ["b"]) == "b"


def test_a_script_error_reaches_only_its_caller(r: redis.Redis) -> None:
    group = GroupCommit(r)
    failing = r.register_script("return redis.error_reply('nope')")
    fine = r.register_script(ECHO)
    with pytest.raises(redis.ResponseError, match="nope"):
        group.call(failing, [], [])
    assert group.call(fine, ["counter"], ["ok"]) == "ok"


def test_connection_errors_reach_the_caller() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    script = client.register_script(ECHO)
    with pytest.raises(redis.ConnectionError):
        GroupCommit(client).call(script, ["counter"], ["x"])
