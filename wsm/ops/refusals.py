"""How every ``wsm`` command refuses: our own errors become a one-line message and exit status 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click


@contextmanager
def refusals(*kinds: type[Exception]) -> Iterator[None]:
    """Errors of ``kinds`` raised inside become a :class:`click.ClickException` (no traceback); others pass."""
    try:
        yield
    except kinds as e:
        raise click.ClickException(str(e)) from e
