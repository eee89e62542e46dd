"""``wsm schedule``: operators look at free slots and the agenda, cancel, block time and export a calendar."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import date, datetime
from typing import Any

import click

from wsm.core.errors import RedisUnavailable
from wsm.core.settings import get_settings
from wsm.ops.refusals import refusals
from wsm.schedule.book import Book
from wsm.schedule.config import Schedule, load_schedule
from wsm.schedule.errors import BookingError, ScheduleError
from wsm.schedule.ics import calendar
from wsm.schedule.model import Appointment
from wsm.store.connection import get_redis

AGENDA_FIELDS = ("id", "provider", "service", "start", "end", "chat", "status")


@click.group("schedule")
@click.option("--session", default="default", show_default=True, help="WAHA session name.")
@click.option(
    "--file", "schedule_file", default=None, help="Schedule file (default: WSM_SCHEDULE_FILE, else built-in)."
)
@click.pass_context
def schedule(ctx: click.Context, session: str, schedule_file: str | None) -> None:
    """Appointments: free slots, the agenda, cancelling, blocking time, calendar export."""
    ctx.obj = {"session": session, "file": schedule_file}


def _refusals() -> AbstractContextManager[None]:
    """Our refusals become a one-line error and exit status 1; nothing was changed."""
    return refusals(ScheduleError, BookingError, RedisUnavailable)


def _book(ctx: click.Context) -> Book:
    settings = get_settings()
    loaded: Schedule = load_schedule(ctx.obj["file"] if ctx.obj["file"] is not None else settings.schedule_file)
    return Book(get_redis(settings.redis_url), loaded, ctx.obj["session"])


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=name) from e


def _moment(value: str, name: str, book: Book) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a date-time YYYY-MM-DDTHH:MM", param_hint=name) from e
    return moment if moment.tzinfo else moment.replace(tzinfo=book.schedule.tz)


def _emit(rows: list[dict[str, Any]], as_json: bool, text: Any, empty: str) -> None:
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False) if as_json else text(row))
    if not rows and not as_json:
        click.echo(empty, err=True)


def _agenda_row(a: Appointment) -> dict[str, Any]:
    return {name: str(getattr(a, name)) for name in AGENDA_FIELDS}


@schedule.command()
@click.option("--service", required=True, help="Service id.")
@click.option("--provider", default=None, help="Only this provider.")
@click.option("--from", "date_from", default=None, help="First local day, YYYY-MM-DD (default today).")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def slots(
    ctx: click.Context, service: str, provider: str | None, date_from: str | None, limit: int, as_json: bool
) -> None:
    """The next free slots of a service, in time order."""
    day = _day(date_from, "--from")
    with _refusals():
        book = _book(ctx)
        found = book.slots(service, provider=provider, date_from=day, limit=limit)
    rows = [
        {
            "slot_id": s.slot_id,
            "service": s.service,
            "provider": s.provider,
            "start": s.start.isoformat(),
            "end": s.end.isoformat(),
        }
        for s in found
    ]
    _emit(
        rows,
        as_json,
        lambda r: f"{r['start'][:16].replace('T', ' ')}  {r['provider']:<12} {r['slot_id']}",
        "no free slots",
    )


@schedule.command()
@click.option("--date", "day", default=None, help="A local day YYYY-MM-DD (default: every upcoming).")
@click.option("--provider", default=None, help="Only this provider.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def agenda(ctx: click.Context, day: str | None, provider: str | None, as_json: bool) -> None:
    """Held and booked appointments, by start."""
    when = _day(day, "--date")
    with _refusals():
        book = _book(ctx)
        if provider is not None and provider not in book.schedule.providers:
            raise click.BadParameter(f"unknown provider {provider!r}", param_hint="--provider")
        rows = [_agenda_row(a) for a in book.agenda(when, provider)]
    _emit(
        rows,
        as_json,
        lambda r: (
            f"{r['start'][:16].replace('T', ' ')}  {r['provider']:<12} {r['service']:<12} {r['status']:<9} "
            f"{r['chat']}  {r['id']}"
        ),
        "no appointments",
    )


@schedule.command()
@click.argument("appointment_id")
@click.option("--json", "as_json", is_flag=True, help="The cancelled appointment as one JSON object.")
@click.pass_context
def cancel(ctx: click.Context, appointment_id: str, as_json: bool) -> None:
    """Cancel an appointment (as an operator); the freed slot goes to the waitlist."""
    with _refusals():
        done = _book(ctx).cancel(appointment_id, None, f"operator-cancel:{appointment_id}")
    row = _agenda_row(done)
    click.echo(json.dumps(row, ensure_ascii=False) if as_json else f"cancelled {done.id} ({done.start}, {done.chat})")


@schedule.command()
@click.option("--provider", required=True)
@click.option("--from", "start", required=True, help="Local date-time YYYY-MM-DDTHH:MM (or with an offset).")
@click.option("--to", "end", required=True, help="Local date-time YYYY-MM-DDTHH:MM (or with an offset).")
@click.option("--json", "as_json", is_flag=True, help="The block as one JSON object.")
@click.pass_context
def block(ctx: click.Context, provider: str, start: str, end: str, as_json: bool) -> None:
    """Block a provider's time: no slots are offered there (appointments already there are listed)."""
    with _refusals():
        book = _book(ctx)
        begin, finish = _moment(start, "--from", book), _moment(end, "--to", book)
        made = book.block(
            provider, begin, finish, f"operator-block:{provider}:{begin.isoformat()}:{finish.isoformat()}"
        )
    if as_json:
        click.echo(json.dumps(made, ensure_ascii=False))
        return
    click.echo(f"blocked {provider} {made['start']} - {made['end']} ({made['id']})")
    for other in made["overlapping"]:
        click.echo(f"already booked there: {other} (cancel it with: wsm schedule cancel {other})", err=True)


@schedule.command("export")
@click.option("--ics", "as_ics", is_flag=True, help="An RFC 5545 calendar (default: JSON lines).")
@click.option("--provider", default=None, help="Only this provider.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the default).")
@click.pass_context
def export(ctx: click.Context, as_ics: bool, provider: str | None, as_json: bool) -> None:
    """Every upcoming held and booked appointment, as iCalendar or JSON lines."""
    if as_ics and as_json:
        raise click.UsageError("choose one of --ics and --json")
    with _refusals():
        book = _book(ctx)
        if provider is not None and provider not in book.schedule.providers:
            raise click.BadParameter(f"unknown provider {provider!r}", param_hint="--provider")
        found = book.agenda(None, provider)
    if as_ics:
        click.echo(calendar(found, book.schedule).to_ical().decode(), nl=False)
        return
    for a in found:
        click.echo(json.dumps(a.to_dict(), ensure_ascii=False))
