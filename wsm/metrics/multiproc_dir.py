"""Where this process's counters live: prometheus_client's multiprocess directory, chosen before it is imported.

Under the Functions Framework's gunicorn, every worker is a forked process with its own counters; prometheus_client's
multiprocess mode keeps each process's values in ``<kind>_<pid>.db`` files in one directory and sums them at
scrape time. The mode is fixed when ``prometheus_client`` is first imported, from ``PROMETHEUS_MULTIPROC_DIR``, so
this module runs first. When that variable is unset we make a fresh directory per *started* process tree: the
module is imported in gunicorn's master, before the fork, so all its workers share it; a new program that merely
inherited such a directory through its environment gets its own (``WSM_METRICS_AUTO_DIR`` marks it), so unrelated
processes started from one shell never mix their figures. ``make local`` sets one shared directory for every
function instead (wiped at start), so any one ``/metrics`` shows the counters of all its processes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
AUTO_ENV = "WSM_METRICS_AUTO_DIR"  # set to the directory when this module made it (not chosen by the operator)
AUTO_PREFIX = "wsm-metrics-"
_chosen: list[str] = []  # the directory of this interpreter (and its forks), once chosen


def ensure() -> str:
    """The directory in force for this process, made (and announced through the environment) if needed."""
    if _chosen:
        return _chosen[0]
    given = os.environ.get(ENV, "")
    if given and os.environ.get(AUTO_ENV) != given:
        Path(given).mkdir(parents=True, exist_ok=True)
        _chosen.append(given)
        return given
    _remove_stale()
    made = tempfile.mkdtemp(prefix=f"{AUTO_PREFIX}{os.getpid()}-")
    os.environ[ENV] = os.environ[AUTO_ENV] = made
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(made, ignore_errors=True))
    _chosen.append(made)
    return made


def _remove_stale() -> None:
    """Directories left by processes that were killed (no atexit ran): their owner pid is gone."""
    for path in Path(tempfile.gettempdir()).glob(f"{AUTO_PREFIX}*-*"):
        pid = path.name[len(AUTO_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
