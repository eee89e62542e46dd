"""Group commit: concurrent requests share one Redis round trip.

Under load many webhook requests of one process wait on Redis at once; sending their script
calls as one pipeline costs one write and one read instead of one each (the leader/follower
pattern: whoever finds no flush under way flushes for everyone; no extra thread or task).
:class:`GroupCommit` batches threads, :class:`AsyncGroupCommit` the coroutines of one event loop. With
``min_replicas`` one ``WAIT`` at the end of the pipeline confirms the whole batch (see
:mod:`wsm.store.replication`). redis-py's cluster pipeline refuses scripts, so on a Redis Cluster each
call goes alone.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from wsm.store.connection import is_cluster
from wsm.store.replication import NotReplicated, execute_replicated


class _Call:
    """One script call waiting for its batch; ``done`` is set when its result is in (threads only: a coroutine
    waits on its own future, and a threading.Event per request showed in the async webhook's profile)."""

    __slots__ = ("args", "done", "error", "keys", "result", "script")

    def __init__(self, script: Script, keys: list, args: list, done: threading.Event | None = None) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = done


class GroupCommit:
    def __init__(self, client: redis.Redis, min_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self.client = client
        self.min_replicas = min_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._flushing = False

    def call(self, script: Script, keys: list, args: list) -> Any:
        if is_cluster(self.client):
            return self._alone(script, keys, args)
        call = _Call(script, keys, args, done := threading.Event())
        with self._lock:
            self._pending.append(call)
            leader = not self._flushing
            self._flushing = True
        if leader:
            self._flush_until_empty()
        done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _flush_until_empty(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._flushing = False
                    return
            self._run(batch)

    def _run(self, batch: list[_Call]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            _queue(pipe, batch, self.min_replicas, self.wait_timeout_ms)
            results = pipe.execute(raise_on_error=False)
        except Exception as e:  # connection trouble: every caller of the batch gets it
            results = [e] * (len(batch) + bool(self.min_replicas))
        for c, result in zip(batch, _settle(results, self.min_replicas, self.wait_timeout_ms), strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = self._alone(c.script, c.keys, c.args)
                except Exception as e:
                    result = e
            c.error, c.result = (result, None) if isinstance(result, BaseException) else (None, result)
            if c.done is not None:
                c.done.set()

    def _alone(self, script: Script, keys: list, args: list) -> Any:
        if self.min_replicas:
            return execute_replicated(self.client, script, keys, args, self.min_replicas, self.wait_timeout_ms)
        return script(keys=keys, args=args)


class AsyncGroupCommit:
    """The same for the coroutines of one event loop (the ASGI webhook): the first caller to find no flush under
    way flushes, and every call that arrives while it waits on Redis goes in its next round trip."""

    def __init__(self, client: redis.asyncio.Redis, min_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self.client = client
        self.min_replicas = min_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._pending: list[tuple[_Call, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None  # its own task: a caller that goes away cannot strand the rest

    async def call(self, script: Script, keys: list, args: list) -> Any:
        done = asyncio.get_running_loop().create_future()
        self._pending.append((_Call(script, keys, args), done))
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_until_empty())
        return await done

    async def _flush_until_empty(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._run(batch)
        finally:
            self._flusher = None

    async def _run(self, batch: list[tuple[_Call, asyncio.Future]]) -> None:
        calls = [c for c, _ in batch]
        try:
            pipe = self.client.pipeline(transaction=False)
            _queue(pipe, calls, self.min_replicas, self.wait_timeout_ms)
            results = await pipe.execute(raise_on_error=False)
        except Exception as e:  # connection trouble: every caller of the batch gets it
            results = [e] * (len(batch) + bool(self.min_replicas))
        settled = _settle(results, self.min_replicas, self.wait_timeout_ms)
        for (c, done), outcome in zip(batch, settled, strict=True):
            if isinstance(outcome, NoScriptError):  # after a Redis restart or SCRIPT FLUSH: EVAL loads it again
                try:
                    outcome = await self._alone(c)
                except Exception as e:
                    outcome = e
            if done.done():  # its caller went away
                continue
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

    async def _alone(self, c: _Call) -> Any:
        if self.min_replicas:
            pipe = self.client.pipeline(transaction=False)
            pipe.eval(c.script.script, len(c.keys), *c.keys, *c.args)
            _queue(pipe, [], self.min_replicas, self.wait_timeout_ms)
            results = await pipe.execute(raise_on_error=False)
            return _settle(results, self.min_replicas, self.wait_timeout_ms)[0]
        return await self.client.eval(c.script.script, len(c.keys), *c.keys, *c.args)


def _queue(pipe: Any, batch: list[_Call], min_replicas: int, wait_timeout_ms: int) -> None:
    """Add the batch's script calls, and the one WAIT that confirms them all, to a pipeline."""
    for c in batch:
        pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
    if min_replicas:
        pipe.execute_command("WAIT", min_replicas, wait_timeout_ms)


def _settle(results: list, min_replicas: int, wait_timeout_ms: int) -> list:
    """Each call's result: a value, the error it raised, or :class:`NotReplicated` for every call whose script
    ran when the batch's WAIT (the last result) fell short."""
    if not min_replicas:
        return results
    unconfirmed = _unconfirmed(results[-1], min_replicas, wait_timeout_ms)
    return [r if unconfirmed is None or isinstance(r, BaseException) else unconfirmed for r in results[:-1]]


def _unconfirmed(acked: Any, min_replicas: int, wait_timeout_ms: int) -> NotReplicated | None:
    """The error every call of the batch gets when its WAIT fell short, else None."""
    if isinstance(acked, BaseException):
        return NotReplicated(f"WAIT failed: {acked}")
    if int(acked) < min_replicas:
        return NotReplicated(f"{acked} of {min_replicas} replicas confirmed the write within {wait_timeout_ms} ms")
    return None
