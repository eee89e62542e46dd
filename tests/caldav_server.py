"""A private Radicale CalDAV server for the tests: a child process on a free port, storage in a temp folder.

Radicale is a test-only dependency (requirements-dev.txt). One account, ``clinic`` / ``secret`` (htpasswd,
plain), no login delay so a wrong password is refused at once. ``stop()`` / ``start()`` take it down and
bring it back on the same port and storage (the "calendar server was down" tests).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from infra.platform.redis_server import free_port

USER, PASSWORD = "clinic", "secret"


class RadicaleServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="wsm-radicale-")
        root = Path(self._dir.name)
        self.storage = root / "collections"
        self.users = root / "users"
        self.users.write_text(f"{USER}:{PASSWORD}\n")
        self.log = root / "radicale.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> RadicaleServer:
        args = [
            sys.executable, "-m", "radicale",
            "--server-hosts", f"127.0.0.1:{self.port}",
            "--storage-filesystem-folder", str(self.storage),
            "--auth-type", "htpasswd",
            "--auth-htpasswd-filename", str(self.users),
            "--auth-htpasswd-encryption", "plain",
            "--auth-delay", "0",
            "--logging-level", "warning",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"radicale exited: {self.log.read_text()[-2000:]}")
            try:
                requests.get(self.url, timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("radicale did not start listening within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RadicaleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
