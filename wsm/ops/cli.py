"""``wsm``: the operators' command line: a chat's history, a person's data exported or erased on request,
and the conversion of chats stored in the old layout (``wsm migrate``)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from wsm.conversation.history import read_history
from wsm.core.errors import RedisUnavailable
from wsm.core.privacy import mask_chat
from wsm.core.settings import get_settings
from wsm.core.status import TRANSITION
from wsm.ops.chat_data import erase_chat, export_chat
from wsm.ops.migrate import known_sessions, migrate_session
from wsm.ops.operator_cli import operator
from wsm.ops.refusals import refusals
from wsm.ops.schedule_cli import schedule
from wsm.store.connection import get_redis


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
    with refusals(RedisUnavailable):
        messages = read_history(get_redis(get_settings().redis_url), session, chat_id, last)
    for message in messages:
        click.echo(json.dumps(message, ensure_ascii=False) if as_json else _line(message))
    if not messages and not as_json:
        click.echo(f"no history for {chat_id} in session {session}", err=True)


@main.command("export")
@click.option("--session", default="default", show_default=True, help="WAHA session name.")
@click.option("--chat", "chat_id", required=True, help="Chat id, e.g. 5511988887777@c.us.")
def export_command(session: str, chat_id: str) -> None:
    """Print one JSON document with everything held about a chat (LGPD/GDPR access request)."""
    with refusals(RedisUnavailable):
        document = export_chat(get_redis(get_settings().redis_url), session, chat_id)
    click.echo(json.dumps(document, ensure_ascii=False, indent=2))


@main.command("erase")
@click.option("--session", default="default", show_default=True, help="WAHA session name.")
@click.option("--chat", "chat_id", required=True, help="Chat id, e.g. 5511988887777@c.us.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase_command(session: str, chat_id: str, yes: bool) -> None:
    """Delete every trace of a chat (LGPD/GDPR erasure request); its attendant slot goes to the next in line."""
    if not yes:
        click.confirm(f"Erase all data of {chat_id} in session {session}? This cannot be undone", abort=True)
    settings = get_settings()
    with refusals(RedisUnavailable):
        erased = erase_chat(get_redis(settings.redis_url), session, chat_id, settings.max_active)
    parts = [f"{len(erased.keys_deleted)} keys", f"{erased.deadletter_entries} dead-letter entries"]
    parts.append(f"{erased.appointments} appointments")
    if erased.human_attendance:
        parts.append(f"{erased.human_attendance} human-attendance entries")
    if erased.left:
        parts.append("left " + ", ".join(erased.left))
    if erased.admitted:
        parts.append("slot given to " + ", ".join(mask_chat(c, settings.mask_phones) for c in erased.admitted))
    click.echo(f"erased {chat_id} in session {session}: " + "; ".join(parts))
    click.echo("Redis AOF/RDB files keep the erased data until the next BGREWRITEAOF; backups until they rotate.")


@main.command("migrate")
@click.option("--session", "sessions", multiple=True, help="WAHA session name (default: every known session).")
def migrate_command(sessions: tuple[str, ...]) -> None:
    """Convert chats written by the old layout (log + msgs) to the compact history list; safe to run again."""
    settings = get_settings()
    with refusals(RedisUnavailable):
        client = get_redis(settings.redis_url)
        for session in sessions or known_sessions(client):
            done = migrate_session(client, settings, session)
            line = f"session {session}: {done.chats} chats, {done.records} records migrated"
            if done.skipped:
                line += f"; {len(done.skipped)} kept changing, run again"
            click.echo(line)


main.add_command(schedule)
main.add_command(operator)


def _line(message: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(message.get("timestamp") or 0), UTC).strftime("%Y-%m-%d %H:%M:%S")
    if message.get("kind") == "tool":
        call = json.dumps(message.get("arguments"), ensure_ascii=False)
        return (
            f"{when} ** tool {message.get('tool')}({call}) -> {json.dumps(message.get('result'), ensure_ascii=False)}"
        )
    if message.get("kind") == TRANSITION:
        who = f" ({message['operator']})" if message.get("operator") else ""
        return f"{when} ** owner {message.get('from')} -> {message.get('to')}{who}, by {message.get('by')}"
    arrow = "<-" if message.get("direction") == "in" else "->"
    text = message.get("text") or ""
    media = message.get("media")
    if media:
        text = f"[{media.get('mimetype') or 'media'} {media.get('filename') or media.get('url') or ''}] {text}"
    return f"{when} {arrow} {text}  ({message.get('status')}, {message.get('id')})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
