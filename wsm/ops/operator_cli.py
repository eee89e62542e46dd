"""``wsm operator add|list|remove``: the people who log in to the console."""

from __future__ import annotations

import click

from wsm.attendance.operators import OperatorError, Operators
from wsm.core.errors import RedisUnavailable
from wsm.core.settings import get_settings
from wsm.ops.refusals import refusals
from wsm.store.connection import get_redis, redis_errors


def _operators() -> Operators:
    return Operators(get_redis(get_settings().redis_url))


@click.group()
def operator() -> None:
    """Console operators (human attendants)."""


@operator.command("add")
@click.argument("name")
def add(name: str) -> None:
    """Create an operator and print a one-time password (only its scrypt hash is stored)."""
    with refusals(OperatorError, RedisUnavailable), redis_errors():
        password = _operators().add(name)
    click.echo(f"operator {name} added; password (shown once): {password}")


@operator.command("list")
def list_command() -> None:
    """Print every operator, one per line."""
    with refusals(RedisUnavailable), redis_errors():
        names = _operators().names()
    for name in names:
        click.echo(name)
    if not names:
        click.echo("no operators; add one with: wsm operator add NAME", err=True)


@operator.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Delete an operator (they go offline; the chats they hold stay theirs until returned or closed)."""
    with refusals(RedisUnavailable), redis_errors():
        removed = _operators().remove(name)
    if not removed:
        raise click.ClickException(f"no operator named {name!r}")
    click.echo(f"operator {name} removed")
