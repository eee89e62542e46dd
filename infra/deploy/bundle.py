"""Build a function's deploy folder: ``build/<name>/`` boots from its own requirements, nothing else.

A bundle holds the function's ``main.py`` and ``requirements.txt``, a copy of the shared package
``wsm/`` (with its Lua and flow files) and ``lambda_handler.py``, the AWS Lambda entry point that adapts
Lambda events to the same function. Before a new bundle replaces the old one, the bundle step checks that
the function's requirements pin every third-party package its code imports, so a missing pin fails
here, not at deploy time.

    python -m infra.deploy.bundle worker        # or: make bundle FUNCTION=worker (no FUNCTION: all three)
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import click

from wsm.core.settings import redact_url

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
SHARED = "wsm"


@dataclass(frozen=True)
class Function:
    """A deployable function: its folder under functions/ and how its Lambda handler adapts events."""

    name: str
    signature: str  # "http" (public, called by WAHA or a browser) or "cloudevent" (only our events reach it)

    @property
    def source(self) -> Path:
        return REPO / "functions" / self.name


FUNCTIONS: Mapping[str, Function] = {
    "webhook": Function("webhook", "http"),
    "worker": Function("worker", "cloudevent"),
    "notifier": Function("notifier", "cloudevent"),
    "console": Function("console", "http"),
}

# Settings a deployed function reads (wsm/core/settings.py and friends): these prefixes, minus what only the
# local platform reads (infra/platform/local.py, infra/platform/router.py).
FUNCTION_ENV_PREFIXES = ("WSM_", "WAHA_", "WEBHOOK_")
FUNCTION_ENV = frozenset({"REDIS_URL"})
LOCAL_ONLY_ENV = frozenset(
    {"WSM_WORKER_URL", "WSM_NOTIFIER_URL", "WSM_REDIS_SERVER", "WSM_REDIS_APPENDFSYNC", "WEBHOOK_PORT", "WAHA_SIM_PORT"}
)
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN")  # names holding one are masked when shown

LAMBDA_HANDLER = '''\
"""AWS Lambda entry point of the {name} function, written by infra/deploy/bundle.py.

It adapts Lambda events to main.py's entry, so the same code answers.
"""

from main import {entry}
from wsm.adapters.aws_lambda import {adapter}

handler = {adapter}({entry})
'''
ADAPTERS = {"http": "http_handler", "cloudevent": "cloudevent_handler"}
CLOUDEVENT_ENTRY = "on_cloudevent"  # a CloudEvent function's main.py: what a direct Lambda invoke calls


class BundleError(click.ClickException):
    """The bundle cannot be built (unknown function, incomplete requirements)."""


def function(name: str) -> Function:
    """The function called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise BundleError(f"unknown function {name!r}; choose one of: {', '.join(FUNCTIONS)}") from None


def build_bundle(name: str, build_dir: Path = BUILD) -> Path:
    """Write ``build_dir/<name>/`` from scratch and return it.

    The folder is assembled next to its final place and swapped in whole, so a reader
    never sees half a bundle.
    """
    fn = function(name)
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=build_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a platform unpacking it runs as another user
    try:
        shutil.copy2(fn.source / "main.py", staging / "main.py")
        shutil.copy2(fn.source / "requirements.txt", staging / "requirements.txt")
        shutil.copytree(REPO / SHARED, staging / SHARED, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        adapter, entry = ADAPTERS[fn.signature], name if fn.signature == "http" else CLOUDEVENT_ENTRY
        (staging / "lambda_handler.py").write_text(LAMBDA_HANDLER.format(name=name, adapter=adapter, entry=entry))
        check_requirements(staging)
        dest = build_dir / name
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def check_requirements(bundle: Path) -> None:
    """Raise :class:`BundleError` unless requirements.txt pins (``==``) every distribution the code imports."""
    pinned, loose = read_requirements(bundle / "requirements.txt")
    if loose:
        raise BundleError(f"{bundle.name}: requirements.txt must pin exact versions (name==version): {loose}")
    needed = imported_distributions(bundle)
    missing = sorted(needed - pinned)
    if missing:
        raise BundleError(f"{bundle.name}: requirements.txt does not pin {missing}, which its code imports")


def read_requirements(path: Path) -> tuple[set[str], list[str]]:
    """Normalized names pinned with ``==``, and the lines that are not pins."""
    pinned: set[str] = set()
    loose: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if sep and version.strip():
            pinned.add(normalize(name.split("[", 1)[0]))
        else:
            loose.append(line)
    return pinned, loose


def imported_distributions(bundle: Path) -> set[str]:
    """Normalized names of the installed distributions providing what the bundle's code imports."""
    return distributions(third_party_imports(bundle), bundle.name)


def distributions(modules: Iterable[str], label: str) -> set[str]:
    """Normalized names of the installed distributions providing the top-level ``modules``."""
    providers = packages_distributions()
    found: set[str] = set()
    for module in modules:
        dists = providers.get(module)
        if not dists:
            raise BundleError(f"{label}: no installed distribution provides {module!r}; install it to check")
        found.update(normalize(d) for d in dists)
    return found


def third_party_imports(bundle: Path) -> set[str]:
    """Top-level names imported by the entry points and the bundled modules they reach, minus stdlib and own code."""
    own = {p.stem for p in bundle.glob("*.py")} | {SHARED}
    return reachable_imports(bundle, [bundle / "main.py", bundle / "lambda_handler.py"], own)


def reachable_imports(root: Path, entries: Iterable[Path], own: set[str]) -> set[str]:
    """Third-party top-level names imported by ``entries`` and by the modules of packages ``own`` (under ``root``)
    that they reach."""
    todo = list(entries)
    seen: set[Path] = set()
    external: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            top = module.split(".", 1)[0]
            if top in own:
                todo.extend(_module_file(root, module))
            elif top not in sys.stdlib_module_names:
                external.add(top)
    return external


# CPython 3.11 keeps the AST constructor's recursion depth in per-interpreter state, so two threads parsing
# at once can fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905);
# bundles are built in parallel threads (tests/test_bundles.py), so parsing is serialized.
_PARSE_LOCK = threading.Lock()


def _imports(path: Path) -> Iterable[str]:
    source = path.read_text()
    with _PARSE_LOCK:
        tree = ast.parse(source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)  # "from wsm import keys"


def _module_file(root: Path, module: str) -> list[Path]:
    parts = module.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return [candidate]
    return []


def normalize(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``functions_framework`` and ``functions-framework`` match."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def function_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The settings a deployed function needs, taken from ``environ`` (only those set and non-empty)."""
    return {
        name: value
        for name, value in sorted(environ.items())
        if value and name not in LOCAL_ONLY_ENV and (name in FUNCTION_ENV or name.startswith(FUNCTION_ENV_PREFIXES))
    }


def masked_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` safe to print: secret values as ``***``, a Redis URL without its password."""
    return {
        name: "***" if any(w in name for w in SECRET_WORDS) else redact_url(value) if name == "REDIS_URL" else value
        for name, value in env.items()
    }


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=BUILD, help="Build folder.")
def main(names: tuple[str, ...], out: Path) -> None:
    """Build build/NAME/ for each function NAME (webhook, worker, notifier); all three when none is given."""
    for name in names or tuple(FUNCTIONS):
        function(name)  # every name is checked before anything is built
    for name in names or tuple(FUNCTIONS):
        click.echo(f"built {build_bundle(name, out)}/")


if __name__ == "__main__":
    main()
