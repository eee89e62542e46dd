"""Keep ``make local``'s processes running the way a serverless platform does: whatever exits is started again.

Each process gets a watcher thread. An exit is restarted after a short backoff (0.5 s, doubling); a process
that exits 5 times within 60 s is reported loudly and retried every 30 s from then on, never abandoned, while
the others keep running. Only :meth:`Supervisor.stop` ends it all: SIGTERM to every process group at once,
SIGKILL ~3 s later for whatever remains. Each event is one line on the ``infra.platform.supervisor`` logger
(the console of ``make local``) and in ``supervisor.log`` beside the processes' own logs.

The watchers also start the replacements, and live until everything is reaped: a child's parent-death signal
fires when the *thread* that started it ends (see :func:`infra.platform.processes.die_with_parent`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from infra.platform.ports import describe_holders, port_is_free

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a watcher looks at its process
STOP_GRACE_S = 3.0  # SIGTERM, then SIGKILL for whatever is still there


class Unit(Protocol):
    """A process the supervisor can watch: :class:`ManagedProcess` and :class:`RedisServer` are units."""

    name: str

    @property
    def log_path(self) -> Path | None: ...
    @property
    def returncode(self) -> int | None: ...

    def spawn(self) -> object: ...
    def wait_ready(self, timeout_s: float) -> object: ...
    def alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout_s: float) -> bool: ...


@dataclass(frozen=True)
class RestartPolicy:
    """When to start an exited process again."""

    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    window_s: float = 60.0
    crash_loop_exits: int = 5  # this many exits within window_s make a crash loop
    crash_loop_delay_s: float = 30.0
    ready_timeout_s: float = 30.0  # a restart that does not serve by then counts as another exit

    def delay_s(self, exits_in_window: int) -> float:
        if exits_in_window >= self.crash_loop_exits:
            return self.crash_loop_delay_s
        return min(self.first_delay_s * 2 ** max(0, exits_in_window - 1), self.max_delay_s)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class Supervisor:
    """Watches units; ``add`` each one once it has started, ``watch`` to begin, ``stop`` to end them all."""

    def __init__(self, policy: RestartPolicy | None = None, event_log: Path | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.event_log = event_log
        self.units: dict[str, Unit] = {}
        self.restarts: dict[str, int] = {}  # name -> successful restarts so far (all time)
        self._exits: dict[str, deque[float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._ready: dict[str, threading.Event] = {}  # set while the unit serves, cleared from exit to restart
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._reaped = threading.Event()

    def add(self, unit: Unit) -> None:
        self.units[unit.name] = unit
        self.restarts[unit.name] = 0
        self._exits[unit.name] = deque()
        self._locks[unit.name] = threading.Lock()
        self._ready[unit.name] = threading.Event()
        self._ready[unit.name].set()

    def watch(self) -> Supervisor:
        for unit in self.units.values():
            thread = threading.Thread(target=self._watch, args=(unit,), name=f"supervise-{unit.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wait_running(self, name: str, timeout_s: float = 60.0) -> bool:
        """Whether ``name`` serves (alive, and restarted if it had exited) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready[name].wait(max(0.0, deadline - time.monotonic())) and self.units[name].alive():
                return True
            time.sleep(POLL_S)  # exited, and its watcher has not noticed yet
        return False

    def stop(self) -> None:
        """SIGTERM every process group at once, SIGKILL what remains after STOP_GRACE_S, then end the watchers."""
        self._stopping.set()
        units = list(self.units.values())
        for unit in units:
            with self._locks[unit.name]:  # no watcher is between deciding to start and having started
                unit.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for unit in units:
            if not unit.wait(max(0.0, deadline - time.monotonic())):
                self._event(f"{unit.name} still running {STOP_GRACE_S:g} s after SIGTERM; SIGKILL", logging.WARNING)
            unit.kill()  # also the group's stragglers: orphaned gunicorn workers
        self._reaped.set()
        for thread in self._threads:
            thread.join(timeout=5)

    # --- one watcher per unit -----------------------------------------------------------------------

    def _watch(self, unit: Unit) -> None:
        reason: str | None = None  # why the unit is down, once it is
        while not self._stopping.is_set():
            if reason is None:
                if unit.alive():
                    self._stopping.wait(POLL_S)
                    continue
                reason = f"exited ({unit.returncode})"
            self._ready[unit.name].clear()
            count, delay = self._note_exit(unit.name)
            if count >= self.policy.crash_loop_exits:
                self._event(
                    f"!!! {unit.name} keeps crashing: {count} exits in {self.policy.window_s:g} s (last: {reason}); "
                    f"retrying every {delay:g} s; see {unit.log_path}",
                    logging.ERROR,
                )
            if self._stopping.wait(delay):
                break
            reason = self._restart(unit, reason, count)
            if reason is not None:
                self._event(f"{unit.name} {reason}", logging.WARNING)
        self._reaped.wait()  # the children this thread started die with it

    def _restart(self, unit: Unit, reason: str, count: int) -> str | None:
        """Start ``unit`` again; None when it serves, else why not."""
        with self._locks[unit.name]:
            if self._stopping.is_set():
                return None
            unit.kill()  # what is left of the old group (orphaned workers hold the port)
            port = getattr(unit, "port", None)
            if port and not port_is_free(port):
                time.sleep(0.5)  # orphans release it as they die
                if not port_is_free(port):
                    return f"could not restart: {describe_holders(port)}"
            try:
                unit.spawn()
            except OSError as e:
                return f"could not restart: {e}"
        try:
            unit.wait_ready(self.policy.ready_timeout_s)
        except (RuntimeError, TimeoutError, OSError) as e:
            if self._stopping.is_set():
                return None
            unit.kill()
            return f"failed to start again: {e}"
        self.restarts[unit.name] += 1
        self._ready[unit.name].set()
        window = f"{self.policy.window_s:g} s"
        self._event(f"{unit.name} {reason}; restarted ({ordinal(count)} restart in {window})", logging.WARNING)
        return None

    def _note_exit(self, name: str) -> tuple[int, float]:
        """Record an exit now; the exits within the window and the delay before the next start."""
        now = time.monotonic()
        exits = self._exits[name]
        exits.append(now)
        while exits and exits[0] < now - self.policy.window_s:
            exits.popleft()
        return len(exits), self.policy.delay_s(len(exits))

    def _event(self, line: str, level: int) -> None:
        log.log(level, line)
        if self.event_log is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.event_log, "a", encoding="utf-8") as out:
                out.write(f"{stamp} {logging.getLevelName(level)} {line}\n")
