"""The pieces a benchmark part runs against: a private Redis, function processes, ``make local``'s system.

Every process gets an environment without the caller's ``REDIS_URL``/``WAHA_*``/``WSM_*``/``WORKERS``...,
so a developer's shell settings never change what is measured.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import redis

from infra.platform.local import LocalConfig, LocalSystem
from infra.platform.processes import BIN, REPO, ManagedProcess, function_process
from infra.platform.redis_server import RedisServer, free_port
from wsm.core.settings import Settings

HMAC_KEY = "bench-hmac-key"
SERVE_ENV = {"WORKERS": "2", "THREADS": "8"}  # the same for the webhook and the bare function
LOGS = REPO / ".local" / "bench" / "logs"
_OURS = ("REDIS_URL", "WAHA_", "WEBHOOK_", "WSM_", "WORKERS", "THREADS", "GUNICORN_")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def bench_settings(**changes: object) -> Settings:
    """Settings as the defaults make them (whatever this shell exports), with ``changes``."""
    with mock.patch.dict(os.environ, clean_env(), clear=True):
        base = Settings.from_env()
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def log_path(name: str) -> Path:
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / f"{name}.log"


@contextmanager
def private_redis(appendonly: bool = True) -> Iterator[RedisServer]:
    """A throw-away redis-server; AOF with ``appendfsync always`` (what we ship) unless told otherwise."""
    server = RedisServer(appendonly=appendonly, appendfsync="always").start()
    try:
        yield server
    finally:
        server.cleanup()


def client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=60)


@contextmanager
def running(proc: ManagedProcess) -> Iterator[ManagedProcess]:
    proc.start(timeout_s=60)
    try:
        yield proc
    finally:
        proc.stop()


def webhook_process(redis_url: str, **env: str) -> ManagedProcess:
    """The webhook function alone (no router): its own Functions Framework process."""
    full = clean_env(REDIS_URL=redis_url, WEBHOOK_HMAC_KEY=HMAC_KEY, **SERVE_ENV, **env)
    return function_process("webhook", free_port(), full, log_path("webhook"))


def bare_process() -> ManagedProcess:
    """The bare function under the same Functions Framework and serving settings as the webhook."""
    argv = [
        str(BIN / "functions-framework"),
        "--source", str(REPO / "bench" / "bare" / "main.py"),
        "--target", "bare",
        "--host", "127.0.0.1",
        "--port", str(port := free_port()),
    ]  # fmt: skip
    return ManagedProcess("bare", argv, clean_env(**SERVE_ENV), port, log_path("bare"))


def seed_process(redis_url: str) -> ManagedProcess:
    """The seed-style Django view (bench/seed/app.py) under gunicorn, with the Functions Framework's workers/threads."""
    argv = [
        str(BIN / "gunicorn"),
        "--workers", SERVE_ENV["WORKERS"],
        "--threads", SERVE_ENV["THREADS"],
        "--bind", f"127.0.0.1:{(port := free_port())}",
        "--chdir", str(REPO),
        "bench.seed.app:application",
    ]  # fmt: skip
    env = clean_env(REDIS_URL=redis_url, WEBHOOK_HMAC_KEY=HMAC_KEY)
    return ManagedProcess("seed", argv, env, port, log_path("seed"))


def url_of(proc: ManagedProcess) -> str:
    return f"http://127.0.0.1:{proc.port}/"


@contextmanager
def local_system(waha_url: str, **env: str) -> Iterator[LocalSystem]:
    """``make local``'s processes (Redis with AOF always, webhook, worker, notifier, router) on free ports."""
    with tempfile.TemporaryDirectory(prefix="wsm-bench-") as tmp:
        config = LocalConfig(
            waha_url=waha_url,
            webhook_port=free_port(),
            worker_port=free_port(),
            notifier_port=free_port(),
            console_port=free_port(),
            redis_port=free_port(),
            data_dir=Path(tmp),
            env=clean_env(WEBHOOK_HMAC_KEY=HMAC_KEY, **env),
        )
        system = LocalSystem(config)
        system.logs = LOGS / "local"
        system.start()
        try:
            yield system
        finally:
            system.stop()


def cpu_seconds(groups: dict[str, int], pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system, s) used so far by process groups (a gunicorn master and its workers),
    by single processes, and by this one (the load generator)."""
    ticks = os.sysconf("SC_CLK_TCK")
    leaders = {pgid: name for name, pgid in groups.items()}
    singles = {pid: name for name, pid in pids.items()}
    out = dict.fromkeys([*groups, *pids], 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = singles.get(int(entry.name)) or leaders.get(int(fields[2]))
        if name is not None:
            out[name] += (int(fields[11]) + int(fields[12])) / ticks
    out["load generator"] = time.process_time()
    return out


def system_cpu(system: LocalSystem, recorder_pid: int) -> dict[str, float]:
    """CPU seconds so far of every piece of a running system, the WAHA stand-in and the load generator."""
    groups = {name: p.proc.pid for name, p in system.processes.items() if p.proc is not None}
    groups["WAHA stand-in"] = recorder_pid
    redis_proc = system.redis_server.proc if system.redis_server else None
    return cpu_seconds(groups, {"redis": redis_proc.pid} if redis_proc else {})


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
