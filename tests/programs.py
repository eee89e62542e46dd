"""External programs some tests run: `make test` installs them; a bare `pytest` without one skips, saying why.

On CI (``CI`` set) a missing program fails instead: there `make test` must have installed it.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str, install_hint: str) -> str:
    """The program's path, or skip (fail on CI) with ``install_hint`` as the reason."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed ({install_hint}; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
