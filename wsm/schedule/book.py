"""The appointment book of one WAHA session, in Redis: free slots, and hold/confirm/cancel/reschedule.

Every change is one Lua script (``wsm/store/lua/schedule_*.lua``) on the session's hash slot, so two chats
racing for a slot cannot both get it, and every change is idempotent by its request id: a retried request
gets the first answer and changes nothing. Holds run out after ``hold_min``; the scripts and :meth:`slots`
treat a hold that ran out as free, without any background job (:meth:`expire_holds` may be ticked too).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis

from wsm.core.clock import now_ms
from wsm.metrics import record as metrics
from wsm.schedule.availability import BusyIndex, check_bookable, free_slots
from wsm.schedule.config import Schedule
from wsm.schedule.errors import BY_NAME, BadSlot, BookingError, UnknownAppointment
from wsm.schedule.model import ACTIVE, Appointment, AppointmentStatus, Slot, epoch_min, parse_slot_id
from wsm.store.connection import redis_errors
from wsm.store.keys import ScheduleKeys
from wsm.store.scripts import Scripts

SEARCH_WINDOW_DAYS = 7  # busy intervals are read this many days at a time
RESCHEDULED = "rescheduled"  # the metrics label of a move (the appointment stays booked)


def _counted(appointment: Appointment) -> Appointment:
    """Count a change by the status it led to (a request retried with the same id may count twice)."""
    metrics.appointment(str(appointment.status))
    return appointment


class Book:
    """Appointments of ``session`` under ``schedule``; ``clock`` (ms) is injectable for tests."""

    def __init__(
        self, client: redis.Redis, schedule: Schedule, session: str, clock: Callable[[], int] = now_ms
    ) -> None:
        self.client = client
        self.schedule = schedule
        self.session = session
        self.keys = ScheduleKeys(session)
        self.scripts = Scripts(client)
        self.clock = clock

    # --- reading -------------------------------------------------------------------------------------

    def slots(
        self,
        service: str,
        provider: str | None = None,
        date_from: date | None = None,
        date_to: date | None = None,
        part_of_day: str | None = None,
        limit: int = 10,
        now: datetime | None = None,
    ) -> list[Slot]:
        """The first ``limit`` free slots of ``service`` (time order), minus held, booked and blocked time.

        The busy intervals are read a week at a time, so finding the next free slots does not read the
        whole horizon's bookings.
        """
        moment = now or datetime.fromtimestamp(self.clock() / 1000, UTC)
        names = [p.id for p in self.schedule.providers_for(service)] if provider is None else [provider]
        tz = self.schedule.tz
        day = max(date_from or moment.astimezone(tz).date(), moment.astimezone(tz).date())
        last = moment.astimezone(tz).date() + timedelta(days=self.schedule.horizon_days)
        last = min(date_to or last, last)
        found: list[Slot] = []
        while True:
            until = min(day + timedelta(days=SEARCH_WINDOW_DAYS - 1), last)
            busy = self._busy(names, moment, day, until)
            found += free_slots(
                self.schedule, service, moment, busy, provider, day, until, part_of_day, limit - len(found)
            )
            if len(found) >= limit or until >= last:
                return found
            day = until + timedelta(days=1)

    def _busy(self, providers: list[str], moment: datetime, first: date, last: date) -> dict[str, BusyIndex]:
        """Busy intervals of each provider over local days ``first``..``last``; holds that ran out are left out."""
        tz = self.schedule.tz
        lo = epoch_min(max(moment, datetime.combine(first, datetime.min.time(), tz)))
        hi = epoch_min(datetime.combine(last + timedelta(days=1), datetime.min.time(), tz)) + 1
        with redis_errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.zrangebyscore(self.keys.holds, "-inf", int(moment.timestamp() * 1000))
            for p in providers:
                pipe.get(self.keys.busy_span(p))
            answers = pipe.execute()
            expired = set(answers[0])
            pipe = self.client.pipeline(transaction=False)
            for p, span in zip(providers, answers[1:], strict=True):
                pipe.zrangebyscore(self.keys.busy(p), lo - int(span or 0), hi)
            members = pipe.execute()
        out: dict[str, BusyIndex] = {}
        for p, found in zip(providers, members, strict=True):
            intervals = []
            for member in found:
                span, _, owner = member.partition("|")
                if owner in expired:
                    continue
                start, _, end = span.rpartition("-")
                intervals.append((int(start), int(end)))
            out[p] = BusyIndex(intervals)
        return out

    def get(self, appointment_id: str) -> Appointment | None:
        with redis_errors():
            raw = self.client.hgetall(self.keys.appointment(appointment_id))
        return self._live(raw) if raw else None

    def appointments(self, chat: str, upcoming_only: bool = True) -> list[Appointment]:
        """The chat's appointments by start; upcoming = held (not run out) or booked, not yet ended."""
        with redis_errors():
            ids = sorted(self.client.smembers(self.keys.chat(chat)))
        return self._filter(self._many(ids), upcoming_only)

    def agenda(self, day: date | None = None, provider: str | None = None) -> list[Appointment]:
        """Held and booked appointments of a local day (no day: every upcoming one), by start."""
        if day is None:
            lo, hi = self.clock() - 24 * 3600 * 1000, "+inf"
        else:
            start = datetime.combine(day, datetime.min.time(), self.schedule.tz)
            end = datetime.combine(day + timedelta(days=1), datetime.min.time(), self.schedule.tz)
            lo, hi = int(start.timestamp() * 1000), f"({int(end.timestamp() * 1000)}"
        with redis_errors():
            ids = self.client.zrangebyscore(self.keys.index, lo, hi)
        found = [a for a in self._many(ids) if provider is None or a.provider == provider]
        if day is None:
            return self._filter(found, True)
        return [a for a in found if a.status in ACTIVE]

    def _many(self, ids: list[str]) -> list[Appointment]:
        with redis_errors():
            pipe = self.client.pipeline(transaction=False)
            for appointment_id in ids:
                pipe.hgetall(self.keys.appointment(appointment_id))
            raws = pipe.execute()
        return sorted((self._live(raw) for raw in raws if raw), key=lambda a: (a.start_dt, a.provider))

    def _live(self, raw: dict[str, Any]) -> Appointment:
        """An appointment as a reader should see it: a hold that ran out reads as cancelled."""
        appointment = Appointment.from_dict(raw)
        expires = appointment.hold_expires_ms
        if appointment.status == AppointmentStatus.HELD and expires is not None and expires <= self.clock():
            appointment.status = AppointmentStatus.CANCELLED
            appointment.reason = "hold_expired"
            appointment.hold_expires_ms = None
        return appointment

    def _filter(self, found: list[Appointment], upcoming_only: bool) -> list[Appointment]:
        if not upcoming_only:
            return found
        now = datetime.fromtimestamp(self.clock() / 1000, UTC)
        return [a for a in found if a.status in ACTIVE and a.end_dt > now]

    # --- changing (one script each) -----------------------------------------------------------------

    def hold(self, slot_id: str, chat: str, request_id: str) -> Appointment:
        """Hold a free slot for ``chat`` for ``hold_min`` minutes; its previous hold is released."""
        slot = self._bookable(slot_id)
        return _counted(self._appointment(self._run(self.scripts.schedule_hold, request_id, chat=chat, slot=slot)))

    def confirm(self, appointment_id: str, chat: str, request_id: str) -> Appointment:
        """Turn the chat's hold into a booking (reminders queued); :class:`HoldExpired` if it ran out."""
        return _counted(
            self._appointment(self._run(self.scripts.schedule_confirm, request_id, id=appointment_id, chat=chat))
        )

    def cancel(self, appointment_id: str, chat: str | None, request_id: str) -> Appointment:
        """Cancel (chat None = an operator may cancel anyone's); the freed slot goes to the waitlist."""
        return _counted(
            self._appointment(self._run(self.scripts.schedule_cancel, request_id, id=appointment_id, chat=chat or ""))
        )

    def reschedule(self, appointment_id: str, slot_id: str, chat: str, request_id: str) -> Appointment:
        """Move the appointment to ``slot_id`` (same id, new start/end) or change nothing."""
        slot = self._bookable(slot_id)
        moved = self._appointment(
            self._run(self.scripts.schedule_reschedule, request_id, id=appointment_id, chat=chat, slot=slot)
        )
        metrics.appointment(RESCHEDULED)
        return moved

    def block(self, provider: str, start: datetime, end: datetime, request_id: str) -> dict[str, Any]:
        """Block a provider's time (aware datetimes): no slots there; appointments already there are listed."""
        if provider not in self.schedule.providers:
            raise BadSlot(f"unknown provider {provider!r}")
        if start.tzinfo is None or end.tzinfo is None:
            raise BadSlot("block times need a time zone")
        if end <= start:
            raise BadSlot("a block must end after it starts")
        answer = self._run(
            self.scripts.schedule_block,
            request_id,
            provider=provider,
            busy_start=epoch_min(start),
            busy_end=-(-int(end.timestamp()) // 60),
            start=start.astimezone(self.schedule.tz).isoformat(),
            end=end.astimezone(self.schedule.tz).isoformat(),
        )
        overlapping = json.loads(answer["overlapping"])
        answer["overlapping"] = overlapping if isinstance(overlapping, list) else []
        return answer

    def join_waitlist(
        self, chat: str, service: str, provider: str | None = None, day: date | None = None, request_id: str = ""
    ) -> dict[str, Any]:
        """Wait for a slot of ``service``: a cancel that frees a matching slot holds it for the first waiting chat."""
        if service not in self.schedule.services:
            raise BadSlot(f"unknown service {service!r}")
        if provider is not None and service not in self.schedule.providers.get(provider, _NONE).services:
            raise BadSlot(f"provider {provider!r} does not exist or does not offer {service!r}")
        return self._run(
            self.scripts.schedule_waitlist,
            request_id or f"waitlist:{uuid.uuid4().hex}",
            chat=chat,
            service=service,
            provider=provider or "",
            day=day.isoformat() if day else "",
        )

    def expire_holds(self, limit: int = 1000) -> int:
        """Release holds that ran out (every script does this lazily too); returns how many."""
        with redis_errors():
            return int(self._call(self.scripts.schedule_expire, f"expire:{uuid.uuid4().hex}", limit=limit))

    def erase_chat(self, chat: str) -> int:
        """Delete every appointment of ``chat`` and every record naming it (erasure request); returns how many."""
        return erase_appointments(self.client, self.session, chat)

    def offers(self) -> list[dict[str, Any]]:
        """Waitlist offers not yet sent (oldest first), for the notifier."""
        with redis_errors():
            return [json.loads(raw) for raw in self.client.zrange(self.keys.waitlist_offers, 0, -1)]

    # --- plumbing -----------------------------------------------------------------------------------

    def _bookable(self, slot_id: str) -> dict[str, Any]:
        slot = parse_slot_id(slot_id, self.schedule)
        check_bookable(self.schedule, slot, datetime.fromtimestamp(self.clock() / 1000, UTC))
        tz = self.schedule.tz
        return {
            "slot_id": slot.slot_id,
            "provider": slot.provider,
            "service": slot.service,
            "start": slot.start.astimezone(tz).isoformat(),
            "end": slot.end.astimezone(tz).isoformat(),
            "start_ms": int(slot.start.timestamp() * 1000),
            "end_ms": int(slot.end.timestamp() * 1000),
            "busy_start": slot.start_min,
            "busy_end": slot.end_min + self.schedule.services[slot.service].buffer_min,
            "day": slot.start.astimezone(tz).date().isoformat(),
        }

    def _call(self, script: Any, request_id: str, **fields: Any) -> Any:
        s = self.schedule
        args = {
            "now_ms": self.clock(),
            "hold_ms": s.hold_min * 60000,
            "max_future": s.max_future_per_person,
            "reminders": list(s.reminders_before_min),
            "notice_ms": s.min_notice_min * 60000,
            "retention_ms": ScheduleKeys.RETENTION_MS,
            "outbox_max": ScheduleKeys.CALENDAR_OUTBOX_MAX,
            "waitlist_max": ScheduleKeys.WAITLIST_MAX,
            "req_ttl_s": ScheduleKeys.REQUEST_TTL_S,
            "request_id": request_id,
            **fields,
        }
        return script(keys=self.keys.script_keys(request_id), args=[self.keys.prefix, json.dumps(args)])

    def _run(self, script: Any, request_id: str, **fields: Any) -> dict[str, Any]:
        if not request_id or not isinstance(request_id, str):
            raise BookingError("a request id is required (it makes retries safe)")
        with redis_errors():
            answer = json.loads(self._call(script, request_id, **fields))
        if "err" in answer:
            raise BY_NAME.get(answer["err"], BookingError)(answer.get("msg") or answer["err"])
        return answer["ok"]

    @staticmethod
    def _appointment(raw: dict[str, Any]) -> Appointment:
        if not raw.get("id"):
            raise UnknownAppointment("the script answered without an appointment")
        return Appointment.from_dict(raw)


class _NoProvider:
    services: tuple[str, ...] = ()


_NONE = _NoProvider()


def export_appointments(client: redis.Redis, session: str, chat: str) -> dict[str, Any]:
    """Everything the scheduling keys hold about ``chat`` (no schedule file needed): for an access request."""
    keys = ScheduleKeys(session)
    with redis_errors():
        ids = sorted(client.smembers(keys.chat(chat)))
        pipe = client.pipeline(transaction=False)
        for appointment_id in ids:
            pipe.hgetall(keys.appointment(appointment_id))
        raws = [raw for raw in pipe.execute() if raw]
        waiting = [json.loads(raw) for raw in client.lrange(keys.waitlist, 0, -1)]
        offers = [json.loads(raw) for raw in client.zrange(keys.waitlist_offers, 0, -1)]
    appointments = sorted((Appointment.from_dict(raw).to_dict() for raw in raws), key=lambda a: a["start"])
    return {
        "appointments": appointments,
        "waitlist": [w for w in waiting if w.get("chat") == chat],
        "waitlist_offers": [o for o in offers if o.get("chat") == chat],
    }


def erase_appointments(client: redis.Redis, session: str, chat: str) -> int:
    """Delete the chat's appointments and every scheduling record naming it; returns how many appointments.

    One script frees its slots and removes hashes, reminders, waitlist, offers and calendar-outbox records;
    then remembered request answers (``sched:req:*``) that name the chat are deleted too.
    """
    keys = ScheduleKeys(session)
    script = Scripts(client).schedule_erase
    request_id = f"erase:{uuid.uuid4().hex}"
    args = {
        "now_ms": now_ms(),
        "reminders": [],
        "outbox_max": ScheduleKeys.CALENDAR_OUTBOX_MAX,
        "retention_ms": ScheduleKeys.RETENTION_MS,
        "req_ttl_s": ScheduleKeys.REQUEST_TTL_S,
        "request_id": request_id,
        "chat": chat,
    }
    with redis_errors():
        erased = int(script(keys=keys.script_keys(request_id), args=[keys.prefix, json.dumps(args)]))
        for name in client.scan_iter(match=keys.request("*"), count=1000):
            raw = client.get(name)
            if raw and chat in raw:
                client.unlink(name)
    return erased
