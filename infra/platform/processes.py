"""Start, watch and stop the system's processes (``make local``, end-to-end tests, chaos runs).

Each function runs as its own Functions Framework process, as it would on a
serverless platform; a process can be SIGKILLed and restarted to test crashes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_for_port(port: int, timeout_s: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


class ManagedProcess:
    """One child process with a name; ``restart`` after ``kill`` models a crash and a platform restart."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> ManagedProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        if out is not subprocess.DEVNULL:
            out.close()
        if self.port:
            wait_for_port(self.port, timeout_s, self.proc)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and its workers), as a crash would."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> ManagedProcess:
        self.kill()
        return self.start()

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait()


def function_process(
    name: str, port: int, env: Mapping[str, str], log_path: Path | None = None, signature: str | None = None
) -> ManagedProcess:
    """A Functions Framework process serving ``functions/<name>/main.py`` with target ``<name>``."""
    argv = [
        str(BIN / "functions-framework"),
        "--source", str(REPO / "functions" / name / "main.py"),
        "--target", name,
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    if signature:
        argv += ["--signature-type", signature]
    return ManagedProcess(name, argv, env, port, log_path)
