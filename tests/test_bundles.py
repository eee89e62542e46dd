"""Each function's bundle boots from its own requirements.txt alone.

The slow tests build every bundle, make a fresh virtualenv per function (no system site-packages, no
repository on the path), install only the bundle's requirements.txt, start the Functions Framework from
the bundle folder against the test's Redis and a WAHA stand-in, and check a real answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from cloudevents.conversion import to_binary

from infra.deploy.bundle import FUNCTIONS, REPO, BundleError, build_bundle, check_requirements
from infra.platform.processes import wait_for_port
from infra.platform.redis_server import free_port
from infra.platform.router import to_cloudevent
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from wsm.conversation.history import read_history
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.store.events import MESSAGE_RECEIVED, TICK, WakeUp
from wsm.waha.event import parse_event

A, B = "5511966660001@c.us", "5511966660002@c.us"
HMAC_KEY = "bundle-secret"
VENV_TIMINGS_S: dict[str, float] = {}


# --- building (fast) -----------------------------------------------------------------------------------


def test_bundle_holds_main_requirements_the_shared_package_and_its_data(tmp_path: Path) -> None:
    bundle = build_bundle("worker", tmp_path)
    assert bundle == tmp_path / "worker"
    source = REPO / "functions" / "worker"
    assert (bundle / "main.py").read_bytes() == (source / "main.py").read_bytes()
    assert (bundle / "requirements.txt").read_bytes() == (source / "requirements.txt").read_bytes()
    assert "handler = cloudevent_handler(on_cloudevent)" in (bundle / "lambda_handler.py").read_text()
    for data in ("store/lua/*.lua", "conversation/flows/*.yaml", "**/*.py"):
        shipped = sorted(str(p.relative_to(bundle)) for p in (bundle / "wsm").glob(data))
        assert shipped == sorted(str(p.relative_to(REPO)) for p in (REPO / "wsm").glob(data))
    assert (bundle / "wsm" / "adapters" / "aws_lambda.py").is_file()
    assert not [p for p in bundle.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]


def test_rebuilding_replaces_the_old_bundle(tmp_path: Path) -> None:
    stale = build_bundle("webhook", tmp_path) / "wsm" / "removed_module.py"
    stale.write_text("")
    build_bundle("webhook", tmp_path)
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["webhook"]  # no staging folder left behind


def bundle_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.deploy.bundle", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_cli_without_a_name_builds_all_three(tmp_path: Path) -> None:
    done = bundle_cli("--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FUNCTIONS)


def test_cli_refuses_an_unknown_function_and_builds_nothing(tmp_path: Path) -> None:
    done = bundle_cli("worker", "wrker", "--out", str(tmp_path))
    assert done.returncode != 0
    assert "unknown function 'wrker'" in done.stderr and "webhook, worker, notifier" in done.stderr
    assert not list(tmp_path.iterdir())


def test_requirements_must_pin_every_imported_distribution(tmp_path: Path) -> None:
    bundle = build_bundle("notifier", tmp_path)
    requirements = bundle / "requirements.txt"
    pins = requirements.read_text()
    requirements.write_text(pins.replace("PyYAML==6.0.4\n", ""))
    with pytest.raises(BundleError, match="does not pin \\['pyyaml'\\]"):
        check_requirements(bundle)
    requirements.write_text(pins.replace("redis==8.1.0", "redis>=8"))
    with pytest.raises(BundleError, match="must pin exact versions"):
        check_requirements(bundle)


# --- booting from a clean environment (slow) ------------------------------------------------------------


@dataclass(frozen=True)
class BundleEnv:
    name: str
    bundle: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def clean_environ(venv: Path) -> dict[str, str]:
    """The environment of a deployed function: nothing that points Python at this repository or its venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSM_", "WAHA_", "WEBHOOK_", "REDIS_"))}
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    return env


def make_env(name: str, root: Path) -> BundleEnv:
    """Build the bundle, then a fresh venv holding only what its requirements.txt installs."""
    started = time.monotonic()
    bundle = build_bundle(name, root / "build")
    venv = root / "venvs" / name
    env = clean_environ(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "-r", str(bundle / "requirements.txt")],
        check=True,
        env=env,
        cwd=bundle,
        timeout=480,
    )
    VENV_TIMINGS_S[name] = time.monotonic() - started
    return BundleEnv(name, bundle, venv)


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BundleEnv]:
    """One venv per function, built in parallel (pip's download cache is shared)."""
    root = tmp_path_factory.mktemp("bundles")
    started = time.monotonic()
    with ThreadPoolExecutor(len(FUNCTIONS)) as pool:
        futures = {name: pool.submit(make_env, name, root) for name in FUNCTIONS}
        built = {name: future.result() for name, future in futures.items()}
    VENV_TIMINGS_S["all (parallel)"] = time.monotonic() - started
    print(f"\nbundle venvs built in: { {k: round(v, 1) for k, v in VENV_TIMINGS_S.items()} } s")
    return built


@contextmanager
def serve(env: BundleEnv, redis_url: str, waha_url: str) -> Iterator[str]:
    """The bundle under its venv's Functions Framework, run from the bundle folder; yields its URL."""
    port = free_port()
    environ = clean_environ(env.venv) | {
        "REDIS_URL": redis_url,
        "WAHA_URL": waha_url,
        "WEBHOOK_HMAC_KEY": HMAC_KEY,
        "WSM_MAX_ACTIVE": "1",
        "WSM_TYPING_MS_PER_CHAR": "1",
        "WSM_TYPING_MAX_MS": "5",
        "WSM_NOTIFY_MIN_INTERVAL_S": "0",
    }
    argv = [str(env.bin / "functions-framework"), "--source", str(env.bundle / "main.py"), "--target", env.name]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log = env.venv / f"{env.name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=env.bundle, env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(port, 30, proc)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(f"{env.name} bundle did not start: {log.read_text()[-3000:]}") from e
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_event(url: str, wake: WakeUp) -> requests.Response:
    """A binary-mode CloudEvent of ``wake`` (data ``{"session": ..., "chat": ...}``), as the router posts it."""
    headers, body = to_binary(to_cloudevent(wake))
    return requests.post(url, data=body, headers=headers, timeout=30)


def assert_ran_from_its_bundle(env: BundleEnv, module: str) -> None:
    """The bundle's own copy of wsm was imported: Python wrote its bytecode there (the bundle ships none)."""
    area, _, name = module.rpartition(".")
    cache = env.bundle / "wsm" / area.replace(".", "/") / "__pycache__"
    assert list(cache.glob(f"{name}.*.pyc")), f"{module} not loaded from the bundle"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_fresh_venv_has_only_the_bundle_requirements(envs: dict[str, BundleEnv], name: str, tmp_path: Path) -> None:
    env = envs[name]
    assert "include-system-site-packages = false" in (env.venv / "pyvenv.cfg").read_text()
    for module in ("wsm", "infra"):  # the repository's packages are not reachable from outside the bundle
        done = subprocess.run(
            [str(env.bin / "python"), "-c", f"import {module}"],
            cwd=tmp_path,
            env=clean_environ(env.venv),
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0 and f"No module named '{module}'" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_webhook_bundle_stores_a_waha_message(
    envs: dict[str, BundleEnv], redis_url: str, r: redis.Redis, sim: WahaSimulator
) -> None:
    body = wp.message_event(A, "oi")
    raw = wp.encode(body)
    with serve(envs["webhook"], redis_url, sim.url) as url:
        answer = requests.post(url, data=raw, headers=wp.headers(raw, body, HMAC_KEY), timeout=10)
        forged = requests.post(url, data=raw, headers=wp.headers(raw, body, "wrong-key"), timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    assert forged.status_code == 401
    assert [m["id"] for m in read_history(r, "default", A)] == [body["payload"]["id"]]
    assert_ran_from_its_bundle(envs["webhook"], "ingest.http")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_bundle_answers_a_message_event_and_replies_through_waha(
    envs: dict[str, BundleEnv], redis_url: str, r: redis.Redis, sim: WahaSimulator
) -> None:
    Ingestor(r, Settings.from_env()).ingest(parse_event(wp.message_event(A, "oi")))
    with serve(envs["worker"], redis_url, sim.url) as url:
        answer = post_event(url, WakeUp(MESSAGE_RECEIVED, "default", A))
    assert 200 <= answer.status_code < 300, answer.text
    assert sim.wait_for(lambda: sim.sent_texts(A), 5), "the worker bundle did not answer the pending message"
    assert "Como posso ajudar?" in sim.sent_texts(A)[0].json["text"]  # the flow file shipped in the bundle
    assert_ran_from_its_bundle(envs["worker"], "attendance.worker")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notifier_bundle_answers_a_tick_and_tells_the_queue(
    envs: dict[str, BundleEnv], redis_url: str, r: redis.Redis, sim: WahaSimulator
) -> None:
    settings = Settings.from_env()
    ingestor = Ingestor(r, settings)
    for chat in (A, B):  # A takes the only slot, B waits
        ingestor.ingest(parse_event(wp.message_event(chat, "oi")))
    with serve(envs["notifier"], redis_url, sim.url) as url:
        answer = post_event(url, WakeUp(TICK))
    assert 200 <= answer.status_code < 300, answer.text
    assert sim.wait_for(lambda: sim.sent_texts(B), 5), "the notifier bundle told nobody"
    assert sim.sent_texts(B)[0].json["text"].startswith("Você é o 1º da fila")
    assert_ran_from_its_bundle(envs["notifier"], "attendance.notifier")
