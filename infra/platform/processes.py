"""Start, watch and stop the system's processes (``make local``, end-to-end tests, chaos runs).

Each function runs as its own Functions Framework process, as it would on a
serverless platform; a process can be SIGKILLed to test crashes, and
:mod:`infra.platform.supervisor` starts it again. Every child runs in its own
session (so a group signal reaches a gunicorn master and its workers) and gets
SIGKILL if the thread that started it dies (Linux's parent-death signal), so
nothing outlives a killed ``make local``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from wsm.core.parent_death import signal_on_parent_death

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its parent thread ends.

    Resolved before the fork (the child only calls prctl), and it exits at once if the parent is already
    gone. ``None`` off Linux. Note the "parent" is the *thread* that forks: start children from threads
    that live as long as the children should (the main thread, or the supervisor's watchers).
    """
    if sys.platform != "linux":
        return None
    parent = os.getpid()

    def preexec() -> None:
        if not signal_on_parent_death(sig) or os.getppid() != parent:
            os._exit(1)

    return preexec


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
    """One child process (and its process group) with a name, a log file and, optionally, a port it serves."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(self, timeout_s: float = 30.0) -> ManagedProcess:
        self.spawn()
        return self.wait_ready(timeout_s)

    def spawn(self) -> ManagedProcess:
        """Launch the process without waiting for it to serve."""
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # only calls prctl, resolved before the fork
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        with self._lock:
            self.proc = proc
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> ManagedProcess:
        """Return once the port answers; raise if the process exits first or the port stays closed."""
        if self.port and self.proc is not None:
            wait_for_port(self.port, timeout_s, self.proc)
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
        """SIGTERM the process group, without waiting."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and its workers), as a crash would, and reap it."""
        proc = self._signal(signal.SIGKILL)
        if proc is not None:
            proc.wait()

    def wait(self, timeout_s: float) -> bool:
        """Whether the process has exited within ``timeout_s``."""
        proc = self.proc
        if proc is None:
            return True
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        self.terminate()
        if not self.wait(timeout_s):
            self.kill()

    def restart(self) -> ManagedProcess:
        self.kill()
        return self.start()

    def _signal(self, sig: int) -> subprocess.Popen[bytes] | None:
        """Signal the group led by the current process; a group outliving its leader (orphaned workers) too."""
        with self._lock:
            proc = self.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        return proc


def function_process(name: str, port: int, env: Mapping[str, str], log_path: Path | None = None) -> ManagedProcess:
    """A Functions Framework process serving ``functions/<name>/main.py`` with target ``<name>`` (its decorator says
    how: ASGI HTTP for webhook, worker and notifier; Flask for the console)."""
    argv = [
        str(BIN / "functions-framework"),
        "--source", str(REPO / "functions" / name / "main.py"),
        "--target", name,
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    return ManagedProcess(name, argv, env, port, log_path)
