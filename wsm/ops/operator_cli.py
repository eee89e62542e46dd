"""``wsm operator add|list|remove``: the people who log in to the console."""

from __future__ import annotations

import click

from wsm.attendance.operators import OperatorError, Operators
from wsm.core.errors import RedisUnavailable
from wsm.core.settings import get_settings
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
    try:
        with redis_errors():
            password = _operators().add(name)
    except (OperatorError, RedisUnavailable) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"operator {name} added; password (shown once): {password}")


@operator.command("list")
def list_command() -> None:
    """Print every operator, one per line."""
    try:
        with redis_errors():
            names = _operators().names()
    except RedisUnavailable as e:
        raise click.ClickException(str(e)) from e
    for name in names:
        click.echo(name)
    if not names:
        click.echo("no operators; add one with: wsm operator add NAME", err=True)


@operator.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Delete an operator (they go offline; the chats they hold stay theirs until returned or closed)."""
    try:
        with redis_errors():
            removed = _operators().remove(name)
    except RedisUnavailable as e:
        raise click.ClickException(str(e)) from e
    if not removed:
        raise click.ClickException(f"no operator named {name!r}")
    click.echo(f"operator {name} removed")
