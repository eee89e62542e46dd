"""``make local``: the whole system on one machine, each piece its own process.

Redis: the one at ``REDIS_URL`` when set and reachable, else an embedded redis-server on
127.0.0.1:6380 with AOF (``appendfsync always``) under ``.local/``. WAHA: ``WAHA_URL`` when
set, else the WAHA simulator on 3000, wired to the webhook, with a chat page. Then the
webhook, worker, notifier and console functions under the Functions Framework, and the event router.
Like a serverless platform it restarts whatever exits (:mod:`infra.platform.supervisor`); Ctrl-C,
SIGTERM or SIGHUP stop everything it started, and nothing else; a killed ``make local`` takes its
children with it. A port already taken is reported with its holder before anything starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import redis

from infra.platform.ports import busy_ports
from infra.platform.processes import BIN, REPO, ManagedProcess, function_process
from infra.platform.pubsub import Topology, create_topology
from infra.platform.redis_server import RedisServer
from infra.platform.supervisor import Supervisor
from infra.platform.triggers import NOTIFIER, WORKER
from infra.waha_sim.dialects import local_wiring
from wsm.attendance.operators import Operators
from wsm.conversation.flow import load_flow
from wsm.core.settings import redact_url, redis_cluster_enabled
from wsm.metrics import multiproc_dir

log = logging.getLogger(__name__)
EMBEDDED_REDIS_PORT = 6380


@dataclass
class LocalConfig:
    """Where each piece listens; every field has the environment variable of the same meaning."""

    redis_url: str = ""  # "" = start the embedded redis-server
    waha_url: str = ""  # "" = start the WAHA simulator
    webhook_port: int = 8080
    worker_port: int = 8081
    notifier_port: int = 8082
    console_port: int = 8083
    waha_sim_port: int = 3000
    llm_sim_port: int = 3100
    redis_port: int = EMBEDDED_REDIS_PORT
    data_dir: Path = REPO / ".local"
    appendfsync: str = "always"
    env: dict[str, str] = field(default_factory=dict)  # passed to every process

    @classmethod
    def from_env(cls) -> LocalConfig:
        e = os.environ
        return cls(
            redis_url=e.get("REDIS_URL", ""),
            waha_url=e.get("WAHA_URL", ""),
            webhook_port=int(e.get("WEBHOOK_PORT", 8080)),
            worker_port=int(e.get("WORKER_PORT", 8081)),
            notifier_port=int(e.get("NOTIFIER_PORT", 8082)),
            console_port=int(e.get("CONSOLE_PORT", 8083)),
            waha_sim_port=int(e.get("WAHA_SIM_PORT", 3000)),
            llm_sim_port=int(e.get("LLM_SIM_PORT", 3100)),
            redis_port=int(e.get("WSM_LOCAL_REDIS_PORT", EMBEDDED_REDIS_PORT)),
            data_dir=Path(e.get("WSM_LOCAL_DATA_DIR") or REPO / ".local"),
            appendfsync=e.get("WSM_REDIS_APPENDFSYNC", "always"),
            env=dict(e),
        )


class PortsInUse(RuntimeError):
    """A port make local needs is taken; the message names each one and its holder."""


class LocalSystem:
    """Starts the pieces in dependency order under a supervisor; used by ``make local``, the end-to-end tests
    and chaos. ``stop`` ends them all within seconds."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.redis_server: RedisServer | None = None
        self.processes: dict[str, ManagedProcess] = {}
        self.logs = config.data_dir / "logs"
        self.supervisor = Supervisor()

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> LocalSystem:
        """Start everything, then supervise it; on any failure stop what was started and raise."""
        embedded = self._embedded_redis_needed()
        if embedded and redis_cluster_enabled(self.config.env):
            raise RuntimeError("WSM_REDIS_CLUSTER=1 needs REDIS_URL naming a reachable node of a Redis Cluster")
        busy = busy_ports(self._ports(embedded))
        if busy:
            raise PortsInUse("; ".join(busy))
        self.logs.mkdir(parents=True, exist_ok=True)
        self.supervisor.event_log = self.logs / "supervisor.log"
        try:
            redis_url = self._start_redis() if embedded else self.config.redis_url
            env = self._env(redis_url)
            if not self.config.waha_url:
                self._start(self._waha_sim(env))
            if self._llm_sim_needed():
                self._start(self._llm_sim(env))
                env["LLM_BASE_URL"] = self.llm_sim_url
            for name, port in (
                ("webhook", self.config.webhook_port),
                ("worker", self.config.worker_port),
                ("notifier", self.config.notifier_port),
                ("console", self.config.console_port),
            ):
                self._start(function_process(name, port, self._function_env(env, name), self._log(name)))
            self._create_pubsub_topology()
            self._start(self._router(env))
        except BaseException:
            self.stop()
            raise
        self.supervisor.watch()
        return self

    def stop(self) -> None:
        self.supervisor.stop()

    def wait_running(self, name: str, timeout_s: float = 60.0) -> bool:
        """Whether ``name`` (a process, or "redis") serves again within ``timeout_s`` after a crash."""
        return self.supervisor.wait_running(name, timeout_s)

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.processes[name]

    @property
    def redis_url(self) -> str:
        return self.config.redis_url or (self.redis_server.url if self.redis_server else "")

    @property
    def waha_url(self) -> str:
        return self.config.waha_url or f"http://127.0.0.1:{self.config.waha_sim_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.config.console_port}/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.config.webhook_port}/"

    def describe(self) -> list[str]:
        embedded = f"  (embedded, AOF in {self.redis_server.data_dir})" if self.redis_server else ""
        lines = [
            f"redis     {redact_url(self.redis_url)}{embedded}",
            f"webhook   {self.webhook_url}   <- point WAHA's webhook here",
            f"metrics   {self.webhook_url}metrics   (all counters; Authorization: Bearer $WSM_METRICS_TOKEN)",
            f"worker    http://127.0.0.1:{self.config.worker_port}/",
            f"notifier  http://127.0.0.1:{self.config.notifier_port}/",
            f"console   {self.console_url}   <- operators log in here (wsm operator add NAME)",
            f"router    Redis Pub/Sub -> {self._delivery()}",
        ]
        if self.config.waha_url:
            lines.append(f"WAHA      {self.config.waha_url}  (yours)")
        else:
            lines.append(f"WAHA      {self.waha_url}  (simulator: open it in a browser to chat)")
        if "llm-sim" in self.processes:
            lines.append(f"LLM       {self.llm_sim_url}  (rule-based stand-in; set LLM_BASE_URL for a real model)")
        lines.append(f"logs      {self.logs}/")
        return lines

    # --- pieces -------------------------------------------------------------------------------------

    @property
    def llm_sim_url(self) -> str:
        return f"http://127.0.0.1:{self.config.llm_sim_port}/v1"

    def _llm_sim_needed(self) -> bool:
        """An agent flow without LLM_BASE_URL talks to the Chat Completions stand-in."""
        if self.config.env.get("LLM_BASE_URL", "").strip():
            return False
        return load_flow(self.config.env.get("WSM_FLOW_FILE") or None).uses_agent

    def _llm_sim(self, env: dict[str, str]) -> ManagedProcess:
        argv = [str(BIN / "wsm-llm-sim"), "--port", str(self.config.llm_sim_port)]
        return ManagedProcess("llm-sim", argv, env, self.config.llm_sim_port, self._log("llm-sim"))

    def _embedded_redis_needed(self) -> bool:
        url = self.config.redis_url
        if url and _reachable(url):
            return False
        if url:
            log.warning("REDIS_URL %s is not reachable; starting the embedded redis-server", redact_url(url))
            self.config.redis_url = ""
        return True

    def _ports(self, embedded_redis: bool) -> dict[str, int]:
        """Every port this start will listen on, by the process that needs it."""
        ports = {"webhook": self.config.webhook_port, "worker": self.config.worker_port}
        ports["notifier"] = self.config.notifier_port
        ports["console"] = self.config.console_port
        if not self.config.waha_url:
            ports["waha-sim"] = self.config.waha_sim_port
        if embedded_redis:
            ports["redis"] = self.config.redis_port
        if self._llm_sim_needed():
            ports["llm-sim"] = self.config.llm_sim_port
        return ports

    def _start_redis(self) -> str:
        self.redis_server = RedisServer(
            port=self.config.redis_port, data_dir=self.config.data_dir / "redis", appendfsync=self.config.appendfsync
        )
        self.supervisor.add(self.redis_server)
        return self.redis_server.start().url

    def _env(self, redis_url: str) -> dict[str, str]:
        env = dict(self.config.env)
        env.update(REDIS_URL=redis_url, WAHA_URL=self.waha_url, PYTHONUNBUFFERED="1")
        env.update(PROMETHEUS_MULTIPROC_DIR=str(self._metrics_dir()))
        if not self.config.waha_url:  # providers: the stand-in speaks WSM_PROVIDER's API
            env.update(local_wiring(env, self.waha_url)[1])
        env.pop(multiproc_dir.AUTO_ENV, None)
        if not env.get("WSM_CONSOLE_SECRET", "").strip():  # this run's console cookies: valid until it stops
            env["WSM_CONSOLE_SECRET"] = secrets.token_urlsafe(32)
        return env

    def _metrics_dir(self) -> Path:
        """One multiprocess directory for every function here, emptied at start: any one ``/metrics`` then shows
        the counters of all their processes (a restarted process's files stay, so counters never go back)."""
        path = self.config.data_dir / "metrics"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    @staticmethod
    def _function_env(env: dict[str, str], name: str) -> dict[str, str]:
        """Serving settings: a process per core; handler threads where calls wait on WAHA (not the webhook)."""
        out = dict(env)
        out.setdefault("WORKERS", "2")
        # the console: each open page holds a thread for its live stream (at most WSM_CONSOLE_SSE_S, then the
        # browser reconnects), so 2 x 32 threads serve about 60 open pages at once; the webhook is ASGI (no threads)
        if name != "webhook":
            out.setdefault("THREADS", {"console": "32"}.get(name, "24"))
        return out

    def _waha_sim(self, env: dict[str, str]) -> ManagedProcess:
        argv = [
            str(BIN / "wsm-waha-sim"),
            "--port", str(self.config.waha_sim_port),
            "--webhook-url", self.webhook_url,
            *local_wiring(env, self.waha_url)[0],
        ]  # fmt: skip
        return ManagedProcess("waha-sim", argv, env, self.config.waha_sim_port, self._log("waha-sim"))

    def _router(self, env: dict[str, str]) -> ManagedProcess:
        argv = [
            str(BIN / "wsm-router"),
            "--worker-url", f"http://127.0.0.1:{self.config.worker_port}/",
            "--notifier-url", f"http://127.0.0.1:{self.config.notifier_port}/",
        ]  # fmt: skip
        return ManagedProcess("router", argv, env, None, self._log("router"))

    def _delivery(self) -> str:
        topic = self.config.env.get("WSM_PUBSUB_TOPIC", "").strip()
        if not topic:
            return "worker, notifier (CloudEvents)"
        where = self.config.env.get("PUBSUB_EMULATOR_HOST") or "GCP"
        return f"Pub/Sub {topic} ({where}) -> push subscriptions -> worker, notifier"

    def _create_pubsub_topology(self) -> None:
        """With ``WSM_PUBSUB_TOPIC`` on the emulator, its topics and push subscriptions to these functions.

        Against real GCP nothing is created here: ``make deploy-gcp`` owns that topology.
        """
        topic = self.config.env.get("WSM_PUBSUB_TOPIC", "").strip()
        if not topic or not self.config.env.get("PUBSUB_EMULATOR_HOST"):
            return
        endpoints = {
            WORKER: f"http://127.0.0.1:{self.config.worker_port}/",
            NOTIFIER: f"http://127.0.0.1:{self.config.notifier_port}/",
        }
        with _environ("PUBSUB_EMULATOR_HOST", self.config.env["PUBSUB_EMULATOR_HOST"]):
            create_topology(Topology.from_path(topic), endpoints)

    def _start(self, proc: ManagedProcess) -> None:
        self.processes[proc.name] = proc
        self.supervisor.add(proc)
        proc.start()

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment for a while (Google's clients read the emulator there)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def _console_login(system: LocalSystem) -> str:
    """How to log in to the console; with no operator yet, one named ``admin`` is made and its password shown."""
    client = redis.Redis.from_url(system.redis_url, decode_responses=True)
    try:
        operators = Operators(client)
        if operators.names():
            return f"Console: {system.console_url} (operators: {', '.join(operators.names())}; wsm operator add NAME)"
        password = operators.add("admin")
        return f"Console: {system.console_url}  log in as admin / {password}  (shown once; wsm operator add NAME)"
    finally:
        client.close()


@click.command()
def main() -> None:
    """Run the whole system locally until Ctrl-C (configuration from environment variables)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    system = LocalSystem(LocalConfig.from_env())
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    try:
        system.start()
    except Exception as e:  # a port in use, a process that would not start: say so plainly
        click.echo(f"make local could not start: {e}", err=True)
        sys.exit(1)
    click.echo("WhatsApp Session Manager is running:")
    for line in system.describe():
        click.echo(f"  {line}")
    click.echo(_console_login(system))
    click.echo("A process that exits is restarted; Ctrl-C stops everything started here.")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        click.echo("stopping...")
        system.stop()
        click.echo("stopped.")


if __name__ == "__main__":
    main()
