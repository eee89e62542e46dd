"""``wsm``: the operators' command line (history now; export and erase with the privacy tools)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from wsm.errors import RedisUnavailable
from wsm.history import read_history
from wsm.redis_conn import get_redis
from wsm.settings import get_settings


@click.group()
def main() -> None:
    """WhatsApp Session Manager operator tools (Redis from REDIS_URL)."""


@main.command()
@click.option("--session", default="default", show_default=True, help="WAHA session name.")
@click.option("--chat", "chat_id", required=True, help="Chat id, e.g. 5511988887777@c.us.")
@click.option("--last", type=int, default=None, help="Only the newest N messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history(session: str, chat_id: str, last: int | None, as_json: bool) -> None:
    """Print a chat's history, oldest first."""
    try:
        messages = read_history(get_redis(get_settings().redis_url), session, chat_id, last)
    except RedisUnavailable as e:
        raise click.ClickException(str(e)) from e
    for message in messages:
        click.echo(json.dumps(message, ensure_ascii=False) if as_json else _line(message))
    if not messages and not as_json:
        click.echo(f"no history for {chat_id} in session {session}", err=True)


def _line(message: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(message.get("timestamp") or 0), UTC).strftime("%Y-%m-%d %H:%M:%S")
    arrow = "<-" if message.get("direction") == "in" else "->"
    text = message.get("text") or ""
    media = message.get("media")
    if media:
        text = f"[{media.get('mimetype') or 'media'} {media.get('filename') or media.get('url') or ''}] {text}"
    return f"{when} {arrow} {text}  ({message.get('status')}, {message.get('id')})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
