"""Push every appointment change to the clinic's CalDAV calendar, one way, without losing or doubling one.

Redis stays the truth. The schedule scripts RPUSH the appointment after each change to ``calendar:outbox``;
here, under a per-session lock (so changes reach the server in outbox order), the oldest entry is moved (LMOVE)
to ``calendar:pushing``, sent, and removed from there only after the server accepted it: a crash re-sends it on
the next tick. Sends are idempotent by UID (``<appointment id>@wsm.schedule``; a PUT to ``<uid>.ics`` replaces
the event, a DELETE of a missing one succeeds), so a re-send never doubles an event.

What the calendar shows:

* booked, done, no_show: the event (STATUS:CONFIRMED) at its start/end in the schedule's timezone (TZID);
* cancelled: the event is **deleted** (calendar apps show STATUS:CANCELLED inconsistently, and a freed slot
  should look free to the staff);
* held: nothing (a hold lasts minutes; it reaches the calendar when confirmed).

The event names the service, the provider and the person by masked chat only (``*********7777@c.us``).

Failures: unreachable, timeout or 5xx leave the entry in place, tried again after a growing delay (capped at
``RETRY_CAP_MS``) for as long as it takes; a refusal (401, 403, other 4xx) is tried ``CALDAV_MAX_ATTEMPTS`` times,
then dead-lettered with the reason, and the next entry goes; an entry that is not an appointment is
dead-lettered at once.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import redis

from wsm.core.clock import now_ms
from wsm.core.privacy import mask_chat
from wsm.core.settings import Settings
from wsm.schedule.caldav_client import CalDavCalendars, CalendarError, CalendarRejected
from wsm.schedule.config import Schedule, load_schedule
from wsm.schedule.errors import ScheduleError
from wsm.store import keys
from wsm.store.scripts import Scripts

log = logging.getLogger(__name__)
UID_SUFFIX = "@wsm.schedule"
LOCK_MS = 60_000
RUN_BUDGET_MS = LOCK_MS // 2  # stop draining well before the lock could lapse
RETRY_CAP_MS = 300_000
PRODID = "-//WhatsApp Session Manager//Schedule//PT"
SHOWN = frozenset({"booked", "done", "no_show"})
REMOVED = frozenset({"cancelled"})
NOT_YET = frozenset({"held"})
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class BadEntry(ValueError):
    """An outbox entry that is not an appointment: dead-lettered at once, never sent."""


@dataclass(frozen=True)
class Change:
    """What one outbox entry asks of the server."""

    appointment_id: str
    action: str  # "put", "delete" or "skip"
    calendar: str
    uid: str
    ics: str = ""


@dataclass
class PushResult:
    pushed: int = 0  # entries the server accepted (or that needed nothing)
    dead_lettered: int = 0
    waiting: bool = False  # an entry is left for a later run (retry delay, budget, or another pusher)


def event_uid(appointment_id: str) -> str:
    return appointment_id + UID_SUFFIX


def _when(value: Any, field: str, tz: tzinfo | None) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as e:
        raise BadEntry(f"{field} is not an ISO 8601 time") from e
    if moment.tzinfo is None:
        raise BadEntry(f"{field} has no UTC offset")
    return moment.astimezone(tz or UTC)


def to_change(apt: Any, settings: Settings, schedule: Schedule | None = None) -> Change:
    """Validate one appointment dict and build the request for it (raises :class:`BadEntry`)."""
    if not isinstance(apt, dict):
        raise BadEntry("not a JSON object")
    apt_id, status, provider = str(apt.get("id") or ""), str(apt.get("status") or ""), str(apt.get("provider") or "")
    if not _ID.match(apt_id):
        raise BadEntry("id missing or not [A-Za-z0-9_.-]")
    if status not in SHOWN | REMOVED | NOT_YET:
        raise BadEntry(f"unknown status {status[:20]!r}")
    if settings.caldav_per_provider and not _ID.match(provider):
        raise BadEntry("provider missing (one calendar per provider)")
    name = f"{settings.caldav_calendar} - {provider}" if settings.caldav_per_provider else settings.caldav_calendar
    uid = event_uid(apt_id)
    if status in NOT_YET:
        return Change(apt_id, "skip", name, uid)
    if status in REMOVED:
        return Change(apt_id, "delete", name, uid)
    return Change(apt_id, "put", name, uid, build_ics(apt, schedule))


def build_ics(apt: dict, schedule: Schedule | None = None) -> str:
    """One VCALENDAR with the appointment's VEVENT (and the VTIMEZONE its TZID needs)."""
    tz = schedule.tz if schedule else None
    start, end = _when(apt.get("start"), "start", tz), _when(apt.get("end"), "end", tz)
    if end <= start:
        raise BadEntry("end is not after start")
    service, provider = str(apt.get("service") or ""), str(apt.get("provider") or "")
    if schedule:
        service = getattr(schedule.services.get(service), "name", service)
        provider = getattr(schedule.providers.get(provider), "name", provider)
    person = mask_chat(str(apt.get("chat") or "")) if apt.get("chat") else "-"  # never the full number
    event = icalendar.Event()
    event.add("uid", event_uid(str(apt["id"])))
    event.add("dtstamp", datetime.now(UTC))
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", f"{service} - {provider}" if provider else service)
    event.add("description", f"Paciente: {person}\nAgendamento: {apt['id']}\nSituação: {apt.get('status')}")
    event.add("status", "CONFIRMED")
    changed = str(apt.get("changed_ms") or "")
    if changed.isdigit():
        event.add("last-modified", datetime.fromtimestamp(int(changed) / 1000, UTC))
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    if tz:
        cal.add_component(_vtimezone(str(tz)))
    cal.add_component(event)
    return cal.to_ical().decode()


@cache
def _vtimezone(name: str) -> icalendar.Timezone:
    """The VTIMEZONE of a zone, built once per process (building it took most of an event's time)."""
    probe = icalendar.Calendar()
    event = icalendar.Event()
    event.add("dtstart", datetime.now(ZoneInfo(name)))
    probe.add_component(event)
    probe.add_missing_timezones()
    return next(c for c in probe.subcomponents if isinstance(c, icalendar.Timezone))


class CalendarPush:
    """Drains the sessions' ``calendar:outbox`` into the CalDAV calendar; does nothing when ``CALDAV_URL`` is unset."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        calendars: CalDavCalendars | None = None,
        schedule: Schedule | None = None,
    ) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = Scripts(client)
        self.calendars = calendars
        self.schedule = schedule
        self._schedule_loaded = schedule is not None
        if calendars is None and settings.caldav_url:
            s = settings
            self.calendars = CalDavCalendars(s.caldav_url, s.caldav_username, s.caldav_password, s.caldav_timeout_s)

    @property
    def enabled(self) -> bool:
        return self.calendars is not None

    def sweep(self, sessions: list[str]) -> int:
        """The notifier's tick: push what every session has queued; returns how many entries were done."""
        if not self.enabled:
            return 0
        return sum(self.run(s).pushed for s in sessions)

    def run(self, session: str) -> PushResult:
        """Push one session's queued changes in order until done, failing, or out of this run's budget."""
        result = PushResult()
        if not self.enabled:
            return result
        ck, outbox = keys.CalendarKeys(session), keys.ScheduleKeys(session).calendar_outbox
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(ck.pushing)
        pipe.llen(outbox)
        if not any(pipe.execute()):  # the common tick: nothing queued, no lock taken
            return result
        token = secrets.token_hex(8)
        if not self.scripts.calendar_lock(keys=[ck.lock], args=[token, LOCK_MS]):
            result.waiting = True
            return result
        started = now_ms()
        try:
            while True:
                retry_at = self.redis.hget(ck.state, "retry_at_ms")
                if retry_at and int(retry_at) > now_ms():
                    result.waiting = True
                    break
                raw = self.redis.lindex(ck.pushing, 0) or self.redis.lmove(outbox, ck.pushing, "LEFT", "RIGHT")
                if raw is None:
                    break
                if now_ms() - started > RUN_BUDGET_MS or not self.scripts.calendar_lock(
                    keys=[ck.lock], args=[token, LOCK_MS]
                ):
                    result.waiting = True
                    break
                if not self._push_one(session, ck, raw, result):
                    result.waiting = True
                    break
        finally:
            self.scripts.calendar_lock(keys=[ck.lock], args=[token, 0])
        return result

    def _push_one(self, session: str, ck: keys.CalendarKeys, raw: str | bytes, result: PushResult) -> bool:
        """Send one entry; True when it left ``calendar:pushing`` (sent, skipped or dead-lettered)."""
        try:
            change = to_change(json.loads(raw), self.settings, self._the_schedule())
        except (ValueError, BadEntry) as e:  # json.JSONDecodeError is a ValueError
            self._dead_letter(session, ck, raw, None, f"not an appointment: {e}")
            result.dead_lettered += 1
            return True
        try:
            if change.action == "put":
                self.calendars.put(change.calendar, change.uid, change.ics)  # type: ignore[union-attr]
            elif change.action == "delete":
                self.calendars.delete(change.calendar, change.uid)  # type: ignore[union-attr]
        except CalendarError as e:
            if self._failed(session, ck, raw, change, e):
                result.dead_lettered += 1
                return True
            return False
        self._done(ck, raw)
        result.pushed += 1
        return True

    def _failed(self, session: str, ck: keys.CalendarKeys, raw: str | bytes, change: Change, e: CalendarError) -> bool:
        """Count the failure and set the retry delay; True when the entry was dead-lettered instead."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(ck.state, "attempts", 1)
        pipe.hincrby(ck.state, "rejections", 1 if isinstance(e, CalendarRejected) else 0)
        attempts, rejections = pipe.execute()
        if rejections >= self.settings.caldav_max_attempts:
            self._dead_letter(session, ck, raw, change.appointment_id, str(e))
            return True
        delay = min(RETRY_CAP_MS, self.settings.caldav_retry_base_ms * 2 ** (int(attempts) - 1))
        self.redis.hset(ck.state, mapping={"retry_at_ms": now_ms() + delay, "error": str(e)})
        log.warning(
            "CalDAV push of %s (session %s) failed (%s); attempt %d, retry in %d ms",
            change.appointment_id, session, e, attempts, delay,
        )  # fmt: skip
        return False

    def _done(self, ck: keys.CalendarKeys, raw: str | bytes) -> None:
        pipe = self.redis.pipeline()
        pipe.lrem(ck.pushing, 1, raw)
        pipe.delete(ck.state)
        pipe.execute()

    def _dead_letter(
        self, session: str, ck: keys.CalendarKeys, raw: str | bytes, appointment_id: str | None, error: str
    ) -> None:
        item = {"kind": "calendar", "session": session, "appointment": appointment_id, "error": error}
        item["at_ms"] = now_ms()
        pipe = self.redis.pipeline()
        pipe.lpush(keys.DEADLETTER, json.dumps(item))
        pipe.ltrim(keys.DEADLETTER, 0, self.settings.deadletter_max - 1)
        pipe.lrem(ck.pushing, 1, raw)
        pipe.delete(ck.state)
        pipe.execute()
        log.error("CalDAV push of %s (session %s) dead-lettered: %s", appointment_id or "-", session, error)

    def _the_schedule(self) -> Schedule | None:
        """The schedule file gives the timezone (TZID) and the names; without one times go out in UTC."""
        if not self._schedule_loaded:
            self._schedule_loaded = True
            try:
                self.schedule = load_schedule(self.settings.schedule_file)
            except ScheduleError as e:  # a bad schedule file is reported where it is used; times still go out
                log.warning("CalDAV push without the schedule file (times in UTC): %s", e)
        return self.schedule
