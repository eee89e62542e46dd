"""Group commit: concurrent request threads share one Redis round trip.

Under load many webhook requests of one process wait on Redis at once; sending their script
calls as one pipeline costs one write and one read instead of one each (the leader/follower
pattern: whoever finds no flush under way flushes for everyone; no extra thread). With
``min_replicas`` one ``WAIT`` at the end of the pipeline confirms the whole batch (see
:mod:`wsm.store.replication`). redis-py's cluster pipeline refuses scripts, so on a Redis Cluster each
call goes alone.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from wsm.store.connection import is_cluster
from wsm.store.replication import NotReplicated, execute_replicated


class _Call:
    __slots__ = ("args", "done", "error", "keys", "result", "script")

    def __init__(self, script: Script, keys: list, args: list) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


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
        call = _Call(script, keys, args)
        with self._lock:
            self._pending.append(call)
            leader = not self._flushing
            self._flushing = True
        if leader:
            self._flush_until_empty()
        call.done.wait()
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
            for c in batch:
                pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            if self.min_replicas:
                pipe.execute_command("WAIT", self.min_replicas, self.wait_timeout_ms)
            results = pipe.execute(raise_on_error=False)
        except Exception as e:  # connection trouble: every caller of the batch gets it
            for c in batch:
                c.error = e
                c.done.set()
            return
        unconfirmed = self._unconfirmed(results.pop()) if self.min_replicas else None
        for c, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = self._alone(c.script, c.keys, c.args)
                except Exception as e:
                    result = e
            elif unconfirmed is not None and not isinstance(result, BaseException):
                result = unconfirmed
            if isinstance(result, BaseException):
                c.error = result
            else:
                c.result = result
            c.done.set()

    def _alone(self, script: Script, keys: list, args: list) -> Any:
        if self.min_replicas:
            return execute_replicated(self.client, script, keys, args, self.min_replicas, self.wait_timeout_ms)
        return script(keys=keys, args=args)

    def _unconfirmed(self, acked: Any) -> NotReplicated | None:
        """The error every call of the batch gets when its WAIT fell short, else None."""
        if isinstance(acked, BaseException):
            return NotReplicated(f"WAIT failed: {acked}")
        if int(acked) < self.min_replicas:
            return NotReplicated(
                f"{acked} of {self.min_replicas} replicas confirmed the write within {self.wait_timeout_ms} ms"
            )
        return None
