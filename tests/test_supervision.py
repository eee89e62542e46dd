"""`make local` supervises like a serverless platform: whatever exits comes back, only a signal to make local
stops everything, and nothing outlives it. Real processes on free ports: `wsm-local` itself as a subprocess
(configured by environment variables, as a user runs it), and the supervisor on tiny shell processes for
the failure modes that are slow to provoke in the real system (a crash loop, a process ignoring SIGTERM,
a port taken during a restart)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from infra.platform.ports import port_is_free
from infra.platform.processes import BIN, ManagedProcess
from infra.platform.redis_server import free_port
from infra.platform.supervisor import RestartPolicy, Supervisor

pytestmark = pytest.mark.slow
KINDS = ("webhook", "worker", "notifier", "router", "waha-sim", "redis")


def wait(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.1)


# --- reading /proc: who is running ----------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, pgid) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], int(fields[2])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def kind_of(command: str) -> str | None:
    for name in ("webhook", "worker", "notifier"):
        if f"--target {name} " in command:
            return name
    if "wsm-router" in command:
        return "router"
    if "wsm-waha-sim" in command:
        return "waha-sim"
    if "redis-server" in command:
        return "redis"
    return None


def children(parent: int) -> dict[str, int]:
    """The live child processes of ``parent``, by kind."""
    found = {}
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat and stat[0] == parent and stat[1] != "Z" and (kind := kind_of(cmdline(pid))):
            found[kind] = pid
    return found


def alive_in_groups(groups: set[int]) -> list[str]:
    """Live (not zombie) processes in any of these process groups: a gunicorn master's workers included."""
    left = []
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat and stat[2] in groups and stat[1] != "Z":
            left.append(f"{pid} {cmdline(pid)[:120]}")
    return left


# --- wsm-local as a user runs it ------------------------------------------------------------------


class LocalRun:
    """`wsm-local` in a subprocess with its own ports and data directory; output in ``out``."""

    def __init__(self, tmp_path: Path) -> None:
        self.ports = {name: free_port() for name in ("webhook", "worker", "notifier", "console", "waha-sim", "redis")}
        self.data_dir = tmp_path / "local"
        self.out = tmp_path / "wsm-local.out"
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WAHA_URL")}
        env.update(
            WEBHOOK_PORT=str(self.ports["webhook"]),
            WORKER_PORT=str(self.ports["worker"]),
            NOTIFIER_PORT=str(self.ports["notifier"]),
            CONSOLE_PORT=str(self.ports["console"]),
            WAHA_SIM_PORT=str(self.ports["waha-sim"]),
            WSM_LOCAL_REDIS_PORT=str(self.ports["redis"]),
            WSM_LOCAL_DATA_DIR=str(self.data_dir),
            WSM_MAX_ACTIVE="10",
            WSM_TICK_S="0.5",
            WSM_TYPING_MS_PER_CHAR="0",
            WSM_NOTIFY_MIN_INTERVAL_S="0",
            WSM_LEASE_MS="3000",
            WORKERS="2",
            THREADS="4",
            PYTHONUNBUFFERED="1",
        )
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.sim = f"http://127.0.0.1:{self.ports['waha-sim']}"
        self.http = requests.Session()

    def start(self) -> LocalRun:
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([str(BIN / "wsm-local")], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        wait(lambda: "is running" in self.output() or self.proc.poll() is not None, 90, "wsm-local to start")
        assert self.proc.poll() is None, self.output()
        return self

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def children(self) -> dict[str, int]:
        assert self.proc is not None
        return children(self.proc.pid)

    def say(self, phone: str, text: str) -> None:
        """Type a message on the simulator's chat page (the simulator posts the webhook, retrying like WAHA)."""

        def sent() -> bool:
            try:
                body = {"phone": phone, "text": text}
                return self.http.post(f"{self.sim}/sim/send", json=body, timeout=5).status_code == 200
            except requests.RequestException:
                return False  # the simulator itself is being restarted: the page would show an error

        wait(sent, 60, f"the chat page to take {text!r}")

    def replies(self, phone: str) -> list[str]:
        try:
            entries = self.http.get(f"{self.sim}/sim/messages", params={"since": 0}, timeout=5).json()
        except requests.RequestException:
            return []
        return [e["text"] for e in entries if e["chat_id"] == f"{phone}@c.us" and e["direction"] == "out"]

    def assert_answered(self, phone: str, needle: str = "Como posso ajudar?") -> None:
        wait(lambda: any(needle in t for t in self.replies(phone)), 60, f"a reply to {phone}")

    def ports_free(self) -> bool:
        return all(port_is_free(port) for port in self.ports.values())

    def kill_supervisor_tree_if_left(self) -> None:
        """Cleanup after a failed assertion: this run's own processes only, by their groups."""
        if self.proc is None:
            return
        for pid in self.children().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalRun]:
    run = LocalRun(tmp_path)
    try:
        yield run.start()
    finally:
        run.kill_supervisor_tree_if_left()


def assert_nothing_left(run: LocalRun, groups: set[int], timeout_s: float = 20.0) -> None:
    wait(lambda: not alive_in_groups(groups) and run.ports_free(), timeout_s, "every process to be gone")


# --- the tests ------------------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_every_kind_of_process_killed_comes_back_and_the_next_message_is_answered(local: LocalRun) -> None:
    local.say("5511900000000", "oi")
    local.assert_answered("5511900000000")
    for i, kind in enumerate(KINDS, start=1):
        before = local.children()
        assert set(before) == set(KINDS), before
        os.kill(before[kind], signal.SIGKILL)  # the process only: a gunicorn master's workers are orphaned
        phone = f"55119000000{i:02d}"
        local.say(phone, "oi")  # right away, while it is down
        local.assert_answered(phone)
        wait(lambda k=kind: f"{k} exited (-9); restarted (1st restart in 60 s)" in local.output(), 30, "the report")
        assert local.children()[kind] != before[kind]
        assert not alive_in_groups({before[kind]})  # no orphaned worker of the old instance lingers
    log = (local.data_dir / "logs" / "supervisor.log").read_text()
    assert all(f"{kind} exited (-9); restarted" in log for kind in KINDS), log
    groups = set(local.children().values())
    local.proc.send_signal(signal.SIGHUP)  # a closed terminal stops it like Ctrl-C
    assert local.proc.wait(30) == 0
    assert_nothing_left(local, groups)
    assert "stopped." in local.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_nothing_outlives_make_local(local: LocalRun, sig: signal.Signals) -> None:
    """SIGTERM stops everything; after SIGKILL, the kernel's parent-death signal takes the children along and
    the orphaned gunicorn workers notice their master is gone."""
    running = local.children()
    assert set(running) == set(KINDS), running
    groups = set(running.values())
    assert len(alive_in_groups(groups)) > len(groups)  # gunicorn workers too
    local.proc.send_signal(sig)
    local.proc.wait(30)
    assert_nothing_left(local, groups)


def test_a_held_port_names_its_holder_and_nothing_is_started(tmp_path: Path) -> None:
    run = LocalRun(tmp_path)
    port = run.ports["worker"]
    code = (
        f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); "
        "print(1, flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert holder.stdout and holder.stdout.readline()
        done = subprocess.run([str(BIN / "wsm-local")], env=run.env, capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    assert f"worker: port {port} is held by pid {holder.pid} ({sys.executable} -c import socket" in done.stderr
    assert not run.data_dir.exists()  # no Redis data, no logs: nothing was started
    assert run.ports_free()


# --- the supervisor on small processes: the failure modes ------------------------------------------


def shell(name: str, script: str, tmp_path: Path, port: int | None = None) -> ManagedProcess:
    return ManagedProcess(name, ["sh", "-c", script], os.environ, port, tmp_path / f"{name}.log")


def test_a_crash_loop_is_reported_loudly_and_retried_slowly_forever_while_the_others_run(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    crashing = shell("crasher", f"date +%s.%N >> {starts}; exit 3", tmp_path)
    steady = shell("steady", "exec sleep 60", tmp_path)
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, crash_loop_exits=5, crash_loop_delay_s=1.0)
    supervisor = Supervisor(policy, event_log=tmp_path / "supervisor.log")
    for unit in (crashing, steady):
        supervisor.add(unit)
        unit.start()
    steady_pid = steady.pid
    supervisor.watch()
    try:
        wait(lambda: len(starts.read_text().split()) >= 8, 30, "starts after the crash loop began")
    finally:
        supervisor.stop()
    times = [float(t) for t in starts.read_text().split()]
    log = (tmp_path / "supervisor.log").read_text()
    assert "ERROR !!! crasher keeps crashing: 5 exits in 60 s (last: exited (3)); retrying every 1 s" in log
    assert "crasher exited (3); restarted (2nd restart in 60 s)" in log
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps[4:]) >= 0.9, gaps  # from the 5th exit on: every 1 s, no faster
    assert supervisor.restarts["steady"] == 0 and steady_pid == steady.pid and "steady" not in log
    assert not crashing.alive() and not steady.alive()


def test_stop_kills_what_ignores_sigterm_within_seconds(tmp_path: Path) -> None:
    stubborn = shell("stubborn", "trap '' TERM; while :; do sleep 0.1; done", tmp_path)
    polite = shell("polite", "exec sleep 60", tmp_path)
    supervisor = Supervisor(event_log=tmp_path / "supervisor.log")
    for unit in (stubborn, polite):
        supervisor.add(unit)
        unit.start()
    supervisor.watch()
    time.sleep(0.3)  # the trap is set
    group = stubborn.pid
    supervisor.stop()
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    wait(lambda: not alive_in_groups({group}), 5, "its `sleep` children to go too")
    assert "stubborn still running 3 s after SIGTERM; SIGKILL" in (tmp_path / "supervisor.log").read_text()
    assert supervisor.restarts == {"stubborn": 0, "polite": 0}


def test_a_port_taken_while_restarting_is_reported_with_its_holder_and_retried(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedProcess(
        "server",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        os.environ,
        port,
        tmp_path / "server.log",
    )
    supervisor = Supervisor(RestartPolicy(first_delay_s=1.0), event_log=tmp_path / "supervisor.log")
    supervisor.add(server)
    server.start()
    supervisor.watch()
    try:
        server.kill()
        with socket.socket() as squatter:  # takes the port before the restart (1 s later)
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            log = tmp_path / "supervisor.log"
            wait(lambda: log.exists() and "could not restart" in log.read_text(), 15, "the report")
        assert f"server could not restart: port {port} is held by pid {os.getpid()}" in log.read_text()
        assert supervisor.wait_running("server", 30)  # once freed, the next try starts it
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        supervisor.stop()
