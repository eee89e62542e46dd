"""Group commit: concurrent callers share pipelines, each still gets its own answer or error."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import redis.asyncio

from infra.platform.redis_server import free_port
from wsm.store.group_commit import AsyncGroupCommit, GroupCommit
from wsm.store.replication import NotReplicated

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


# --- AsyncGroupCommit: the ASGI webhook's coroutines of one event loop ----------------------------------


def run_async(url: str, work) -> object:
    """Run ``work(client)`` on a fresh event loop with its own asyncio client, closed afterwards."""

    async def main() -> object:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_concurrent_coroutines_share_round_trips_and_each_gets_its_own_result(r: redis.Redis, redis_url: str) -> None:
    script = r.register_script(ECHO)
    batches: list[int] = []

    async def work(client: redis.asyncio.Redis) -> list:
        group = AsyncGroupCommit(client)
        real_run = group._run

        async def counted(batch: list) -> None:
            batches.append(len(batch))
            await real_run(batch)

        group._run = counted  # type: ignore[method-assign]
        return await asyncio.gather(*(group.call(script, ["counter"], [f"v{i}"]) for i in range(500)))

    assert run_async(redis_url, work) == [f"v{i}" for i in range(500)]
    assert r.get("counter") == "500"
    assert sum(batches) == 500 and len(batches) < 50, batches  # the first call alone, then the rest together


def test_async_scripts_are_reloaded_after_a_script_flush(r: redis.Redis, redis_url: str) -> None:
    script = r.register_script(ECHO)

    async def work(client: redis.asyncio.Redis) -> list:
        group = AsyncGroupCommit(client)
        first = await group.call(script, ["counter"], ["a"])
        await client.script_flush()
        return [first, *await asyncio.gather(*(group.call(script, ["counter"], [x]) for x in "bc"))]

    assert run_async(redis_url, work) == ["a", "b", "c"]
    assert r.get("counter") == "3"


def test_an_async_script_error_reaches_only_its_caller(r: redis.Redis, redis_url: str) -> None:
    failing = r.register_script("return redis.error_reply('nope')")
    fine = r.register_script(ECHO)

    async def work(client: redis.asyncio.Redis) -> list:
        group = AsyncGroupCommit(client)
        return await asyncio.gather(
            group.call(failing, [], []), group.call(fine, ["counter"], ["ok"]), return_exceptions=True
        )

    bad, good = run_async(redis_url, work)
    assert isinstance(bad, redis.ResponseError) and "nope" in str(bad) and good == "ok"


def test_async_connection_errors_reach_every_caller_of_the_batch() -> None:
    script = redis.Redis().register_script(ECHO)  # registering only computes the sha: no connection

    async def work(client: redis.asyncio.Redis) -> list:
        group = AsyncGroupCommit(client)
        return await asyncio.gather(*(group.call(script, ["counter"], [i]) for i in range(3)), return_exceptions=True)

    errors = run_async(f"redis://127.0.0.1:{free_port()}/0", work)
    assert len(errors) == 3 and all(isinstance(e, redis.ConnectionError) for e in errors), errors


def test_an_async_batch_whose_wait_falls_short_is_refused_as_a_whole(r: redis.Redis, redis_url: str) -> None:
    script = r.register_script(ECHO)

    async def work(client: redis.asyncio.Redis) -> list:
        group = AsyncGroupCommit(client, min_replicas=1, wait_timeout_ms=50)  # this server has no replica
        return await asyncio.gather(*(group.call(script, ["counter"], [i]) for i in range(4)), return_exceptions=True)

    results = run_async(redis_url, work)
    assert all(isinstance(e, NotReplicated) and "0 of 1 replicas" in str(e) for e in results), results
