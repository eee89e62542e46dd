"""docker-compose.yml and the Dockerfiles, checked against the code by parsing them.

There is no Docker engine on the development machines, so ``docker compose config`` cannot run here: these
tests read the YAML (with compose's ``${VAR:-default}`` interpolation) and the Dockerfiles, and check that
services, ports, variables, defaults, dependencies and health checks agree with wsm/ and infra/.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from infra.deploy.bundle import distributions, reachable_imports, read_requirements
from infra.platform.triggers import NOTIFIER, TARGET_URLS, WORKER
from infra.waha_sim import payloads as waha_payloads
from wsm.core import settings as settings_module
from wsm.core.settings import Settings
from wsm.waha.event import Ignored, parse_event

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
FUNCTION_DOCKERFILE = REPO / "infra/deploy/docker/Dockerfile"
ROUTER_DOCKERFILE = REPO / "infra/deploy/docker/router.Dockerfile"
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
FUNCTIONS = sorted(p.parent.name for p in (REPO / "functions").glob("*/main.py"))
PYTHON_SERVICES = [*FUNCTIONS, "router"]
SECRETS = {"WAHA_API_KEY": "api-key-for-tests", "WEBHOOK_HMAC_KEY": "hmac-key-for-tests"}

# Variables read by others than wsm/core/settings.py: gunicorn (WORKERS, THREADS) and the router.
FUNCTIONS_FRAMEWORK_VARS = {"WORKERS", "THREADS"}
ROUTER_VARS = {env for env, _default in TARGET_URLS.values()}
# WAHA's own variables, as named on waha.devlike.pro/docs/how-to/config ("Webhooks", "Security").
WAHA_VARS = {
    "WAHA_API_KEY",
    "WHATSAPP_HOOK_URL",
    "WHATSAPP_HOOK_EVENTS",
    "WHATSAPP_HOOK_HMAC_KEY",
    "WHATSAPP_HOOK_RETRIES_POLICY",
    "WHATSAPP_HOOK_RETRIES_DELAY_SECONDS",
    "WHATSAPP_HOOK_RETRIES_ATTEMPTS",
}
# A sample of each WAHA event, to check that the webhook uses every event WAHA is told to post.
SAMPLE_EVENTS = {
    "message": lambda: waha_payloads.message_event("5511988887777@c.us", "oi"),
    "message.any": lambda: waha_payloads.message_event("5511988887777@c.us", "oi", event="message.any"),
    "message.ack": lambda: waha_payloads.ack_event("true_5511988887777@c.us_ABC", 3, "5511988887777@c.us"),
    "session.status": lambda: waha_payloads.session_status_event("WORKING"),
}

# --- compose's variable interpolation (https://docs.docker.com/reference/compose-file/interpolation/) ---------------

VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """``$$``, ``${X}``, ``${X:-default}``, ``${X-default}``, ``${X:?error}`` and ``${X?error}``, as compose does."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        unset = value is None or (value == "" and op and op.startswith(":"))
        if op and op.endswith("?") and unset:
            raise MissingVariable(name)
        if op and op.endswith("-") and unset:
            return arg
        return value or ""

    return VARIABLE.sub(one, text)


def resolved(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file with every string interpolated (with the two secrets set unless ``env`` is given)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return interpolate(node, SECRETS if env is None else env) if isinstance(node, str) else node

    return walk(COMPOSE)


def default_of(service: str, name: str) -> str | None:
    """The ``${NAME:-default}`` default a service gives a variable, or None when it sets a fixed value."""
    match = VARIABLE.fullmatch(str(SERVICES[service]["environment"][name]))
    return match.group("arg") if match and match.group("op") == ":-" and match.group("name") == name else None


# --- what the code reads ----------------------------------------------------------------------------------------------


def settings_vars() -> set[str]:
    """Every variable Settings.from_env reads (the first argument of each _str/_int/_float/_bool call)."""
    tree = ast.parse(Path(settings_module.__file__).read_text())
    from_env = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "from_env")
    readers = {"_str", "_int", "_float", "_bool"}
    return {
        call.args[0].value
        for call in ast.walk(from_env)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) in readers
    }


SETTINGS_VARS = settings_vars()


def container_port(dockerfile: Path) -> int:
    """The port the image's CMD listens on."""
    match = re.search(r"^CMD .*--port (\d+)", dockerfile.read_text(), re.MULTILINE)
    assert match, f"{dockerfile.name}: no --port in CMD"
    return int(match.group(1))


def copies(dockerfile: Path, function: str = "") -> list[tuple[str, str]]:
    """(source, destination) of each COPY, with ``${FUNCTION}`` replaced."""
    pairs = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.replace("${FUNCTION}", function).split()[1:]
            pairs += [(source, dest) for source in sources]
    return pairs


def url_of(service: str, name: str) -> tuple[str | None, int | None, str]:
    url = urlsplit(resolved()["services"][service]["environment"][name])
    return url.hostname, url.port, url.path


# --- structure ----------------------------------------------------------------------------------------------------


SERVICE_KEYS = {"image", "build", "command", "restart", "environment", "ports", "volumes", "healthcheck", "depends_on"}


def test_structure_is_what_docker_compose_config_accepts() -> None:
    assert set(COMPOSE) <= {"name", "services", "volumes", "networks"} | {k for k in COMPOSE if k.startswith("x-")}
    assert set(SERVICES) == {"redis", "waha", *PYTHON_SERVICES}
    declared_volumes = set(COMPOSE.get("volumes") or {})
    for name, service in resolved()["services"].items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unexpected keys {set(service) - SERVICE_KEYS}"
        assert ("image" in service) != ("build" in service), f"{name}: needs an image or a build, not both"
        assert service["restart"] == "unless-stopped", name
        env = service.get("environment", {})
        assert isinstance(env, dict) and all(isinstance(v, str) for v in env.values()), f"{name}: env values as text"
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), f"{name}: {port!r} should be published on loopback"
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert source in declared_volumes and target.startswith("/"), f"{name}: volume {volume!r} not declared"
    assert re.sub(VARIABLE, "", (REPO / "docker-compose.yml").read_text()).count("$") == 0, "malformed ${...}"


def test_only_the_two_secrets_are_required() -> None:
    with pytest.raises(MissingVariable) as missing:
        resolved({"WEBHOOK_HMAC_KEY": "set"})
    assert str(missing.value) == "WAHA_API_KEY"
    with pytest.raises(MissingVariable) as missing:
        resolved({"WAHA_API_KEY": "set", "WEBHOOK_HMAC_KEY": ""})  # empty counts as unset with ":?"
    assert str(missing.value) == "WEBHOOK_HMAC_KEY"
    services = resolved()["services"]
    for name in ("waha", *PYTHON_SERVICES):
        assert services[name]["environment"]["WAHA_API_KEY"] == SECRETS["WAHA_API_KEY"], name
    assert services["waha"]["environment"]["WHATSAPP_HOOK_HMAC_KEY"] == SECRETS["WEBHOOK_HMAC_KEY"]
    for name in PYTHON_SERVICES:
        assert services[name]["environment"]["WEBHOOK_HMAC_KEY"] == SECRETS["WEBHOOK_HMAC_KEY"], name


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET} $$HOME", env) == "x d  d  $HOME"
    with pytest.raises(MissingVariable):
        interpolate("${EMPTY:?must be set}", env)
    assert interpolate("${EMPTY?only unset fails}", env) == ""


# --- variables ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", PYTHON_SERVICES)
def test_python_services_set_every_setting_and_nothing_unknown(service: str) -> None:
    env = set(SERVICES[service]["environment"])
    allowed = SETTINGS_VARS | (ROUTER_VARS if service == "router" else FUNCTIONS_FRAMEWORK_VARS)
    assert env - allowed == set(), f"{service} sets variables no code reads"
    assert SETTINGS_VARS - env == set(), f"{service} leaves settings out: a value in .env would not reach it"


def test_compose_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_VARS:
        monkeypatch.delenv(name, raising=False)
    code_defaults = Settings.from_env()
    checked = 0
    for name in sorted(SETTINGS_VARS):
        default = default_of("worker", name)
        if default is None:
            continue
        monkeypatch.setenv(name, default)
        assert Settings.from_env() == code_defaults, f"{name}: compose default {default!r} differs from the code's"
        monkeypatch.delenv(name)
        checked += 1
    fixed = {n for n in SETTINGS_VARS if default_of("worker", n) is None}
    assert fixed == {"REDIS_URL", "WAHA_URL", "WAHA_API_KEY", "WEBHOOK_HMAC_KEY"}
    assert checked == len(SETTINGS_VARS) - len(fixed)


def test_a_wrong_default_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSM_MAX_ACTIVE", raising=False)
    code_default = Settings.from_env()
    monkeypatch.setenv("WSM_MAX_ACTIVE", "2")
    assert Settings.from_env() != code_default


def test_python_services_reach_redis_and_waha_by_service_name() -> None:
    redis_command = SERVICES["redis"]["command"]
    waha_container_port = int(SERVICES["waha"]["ports"][0].rsplit(":", 1)[1])
    for service in PYTHON_SERVICES:
        assert url_of(service, "REDIS_URL") == ("redis", 6379, "/0")  # redis:7 listens on 6379 ...
        assert url_of(service, "WAHA_URL")[:2] == ("waha", waha_container_port), service
    assert "--port" not in redis_command  # ... unless told otherwise


# --- the functions and their images -------------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_service_builds_its_own_function(function: str) -> None:
    build = SERVICES[function]["build"]
    assert build["context"] == "."
    assert REPO / build["dockerfile"] == FUNCTION_DOCKERFILE
    assert build["args"] == {"FUNCTION": function}
    tree = ast.parse((REPO / "functions" / function / "main.py").read_text())
    entry = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function]
    assert entry, f"functions/{function}/main.py defines no function named {function!r} (the --target)"
    decorators = {ast.unparse(d) for d in entry[0].decorator_list}
    assert decorators & {"functions_framework.http", "functions_framework.cloud_event", "functions_framework.aio.http"}


def test_function_image_holds_what_a_bundle_holds() -> None:
    text = FUNCTION_DOCKERFILE.read_text()
    assert "WORKDIR /app" in text and "ENV FUNCTION=${FUNCTION}" in text
    for function in FUNCTIONS:
        pairs = copies(FUNCTION_DOCKERFILE, function)
        assert dict(pairs) == {
            f"functions/{function}/requirements.txt": "./requirements.txt",
            "wsm/": "./wsm/",
            f"functions/{function}/main.py": "./main.py",
        }
        for source, _ in pairs:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert '--target "$FUNCTION" --source main.py' in cmd and cmd.startswith("CMD exec functions-framework ")


def test_router_image_runs_the_router() -> None:
    assert SERVICES["router"]["build"] == {"context": ".", "dockerfile": "infra/deploy/docker/router.Dockerfile"}
    text = ROUTER_DOCKERFILE.read_text()
    assert 'CMD ["wsm-router"]' in text
    assert 'wsm-router = "infra.platform.router:main"' in (REPO / "pyproject.toml").read_text()
    for source, _ in copies(ROUTER_DOCKERFILE):
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def pinned_with_includes(path: Path) -> set[str]:
    """Distributions a requirements file pins, following its ``-r`` includes."""
    pinned, loose = read_requirements(path)
    for line in loose:
        include = line.removeprefix("-r").strip()
        assert include != line, f"{path.name}: {line!r} is neither a pin nor an include"
        pinned |= pinned_with_includes(path.parent / include)
    return pinned


def test_router_image_installs_every_distribution_the_router_imports() -> None:
    [installed] = re.findall(r"pip install .*-r (\S+)", ROUTER_DOCKERFILE.read_text())
    assert (installed, "./") in copies(ROUTER_DOCKERFILE)
    imported = reachable_imports(REPO, [REPO / "infra/platform/router.py"], {"infra", "wsm"})
    needed = distributions(imported, "router")
    assert {"boto3", "botocore"} <= needed  # its lambda: targets
    assert "localstack-client" not in needed  # a deploy tool, not the router's business
    assert needed <= pinned_with_includes(REPO / installed), needed - pinned_with_includes(REPO / installed)


def ignored_by_dockerignore(path: str, patterns: list[str]) -> str | None:
    """The pattern that excludes ``path`` or one of its parent folders (``**/`` matches any depth), if any."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return pattern
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return pattern
    return None


def test_dockerignore_keeps_every_copied_source() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.rstrip("/") for line in lines if line and not line.startswith("#")]
    sources = [REPO / s for f in FUNCTIONS for s, _ in copies(FUNCTION_DOCKERFILE, f)]
    sources += [REPO / s for s, _ in copies(ROUTER_DOCKERFILE)]
    files = {s for s in sources if s.is_file()} | {f for s in sources if s.is_dir() for f in s.rglob("*.*")}
    for path in sorted(f for f in files if "__pycache__" not in f.parts):
        source = path.relative_to(REPO).as_posix()
        assert ignored_by_dockerignore(source, patterns) is None, f".dockerignore drops COPY source {source}"
    for kept_out in (".venv/bin/python", ".git/config", ".env", "wsm/__pycache__/x.pyc", "tests/test_compose.py"):
        assert ignored_by_dockerignore(kept_out, patterns), f"{kept_out} would be sent to the Docker daemon"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_image_layout_loads_its_target(function: str, tmp_path: Path) -> None:
    """Lay the files out as the Dockerfile COPYs them and let the Functions Framework load the target from there."""
    for source, dest in copies(FUNCTION_DOCKERFILE, function):
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, tmp_path / dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / source, tmp_path / dest)
    script = (
        "import functions_framework, wsm, sys\n"
        f"functions_framework.create_app({function!r}, 'main.py')\n"
        "assert wsm.__file__.startswith(sys.argv[1]), wsm.__file__\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]


# --- wiring between services ----------------------------------------------------------------------------------------


def test_redis_keeps_every_acknowledged_write() -> None:
    redis = SERVICES["redis"]
    assert redis["image"] == "redis:7"
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])  # where redis:7 writes its AOF
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_waha_posts_the_webhook_every_event_it_uses() -> None:
    waha = resolved()["services"]["waha"]
    assert waha["image"].split(":")[0] == "devlikeapro/waha"
    assert set(waha["environment"]) <= WAHA_VARS, "waha: variables WAHA does not document"
    url = urlsplit(waha["environment"]["WHATSAPP_HOOK_URL"])
    assert (url.hostname, url.port) == ("webhook", container_port(FUNCTION_DOCKERFILE))
    events = waha["environment"]["WHATSAPP_HOOK_EVENTS"].split(",")
    assert sorted(events) == sorted(SAMPLE_EVENTS)
    for event in events:
        assert not isinstance(parse_event(SAMPLE_EVENTS[event]()), Ignored), f"the webhook ignores {event}"
    assert {"/app/.sessions"} <= {v.split(":")[1] for v in waha["volumes"]}


def test_webhook_dedupe_outlasts_waha_retries() -> None:
    env = resolved()["services"]["waha"]["environment"]
    policy = env["WHATSAPP_HOOK_RETRIES_POLICY"]
    delay_s, attempts = int(env["WHATSAPP_HOOK_RETRIES_DELAY_SECONDS"]), int(env["WHATSAPP_HOOK_RETRIES_ATTEMPTS"])
    factor = {"constant": lambda n: 1, "linear": lambda n: n, "exponential": lambda n: 2 ** (n - 1)}[policy]
    retry_window_s = sum(delay_s * factor(n) for n in range(1, attempts + 1))
    assert retry_window_s < int(default_of("webhook", "WSM_DEDUPE_TTL_S") or 0)


def test_router_delivers_to_the_worker_and_notifier_services() -> None:
    port = container_port(FUNCTION_DOCKERFILE)
    for target, service in ((WORKER, "worker"), (NOTIFIER, "notifier")):
        assert url_of("router", TARGET_URLS[target][0]) == (service, port, "/")
    assert set(SERVICES["router"]["depends_on"]) == {"redis", "worker", "notifier"}


def test_dependencies_exist_and_wait_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES and dependency != name, f"{name} depends on unknown {dependency!r}"
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}'s health, which has no check"
    for function in FUNCTIONS:
        assert "redis" in SERVICES[function]["depends_on"], function
    assert "webhook" in SERVICES["waha"]["depends_on"]  # WAHA posts as soon as its sessions restore


def test_health_checks_probe_the_port_each_service_listens_on() -> None:
    port = container_port(FUNCTION_DOCKERFILE)
    for name, service in SERVICES.items():
        if name == "router":
            assert "healthcheck" not in service  # no port; its restart policy covers a crash
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if test[1] == "python":
            compile(test[3], f"{name} healthcheck", "exec")
            assert f"127.0.0.1', {port})" in test[3] or f"127.0.0.1:{port}/" in test[3], name
    assert "/healthz" in SERVICES["webhook"]["healthcheck"]["test"][3]
