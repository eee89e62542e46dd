"""An in-memory booking port for the engine's unit tests: a real class with the same protocol as ``Book``.

Slots come from the scheduling core's pure availability code; holds, bookings and request-id
idempotency are kept in dicts. It is not a mock: it enforces the same refusals the Redis Book does
(a slot held or booked by someone else, an expired hold, another chat's appointment).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from wsm.schedule.availability import BusyIndex, free_slots
from wsm.schedule.config import Schedule
from wsm.schedule.errors import HoldExpired, LimitReached, NotYours, SlotUnavailable, UnknownAppointment
from wsm.schedule.model import ACTIVE, Appointment, AppointmentStatus, Slot, epoch_min, parse_slot_id


class MemoryBook:
    def __init__(self, schedule: Schedule, now: datetime) -> None:
        self.schedule = schedule
        self.now = now
        self.apts: dict[str, Appointment] = {}
        self.done: dict[str, Appointment] = {}  # request id -> first answer
        self.waitlist: list[tuple[str, str, str | None, Any]] = []
        self.calls: list[str] = []

    # --- reading ---

    def _busy(self, but: str = "") -> dict[str, BusyIndex]:
        by: dict[str, list[tuple[int, int]]] = {}
        for a in self.apts.values():
            if a.status in ACTIVE and a.id != but and not self._expired(a):
                by.setdefault(a.provider, []).append((epoch_min(a.start_dt), epoch_min(a.end_dt)))
        return {p: BusyIndex(iv) for p, iv in by.items()}

    def _expired(self, a: Appointment) -> bool:
        return a.status == AppointmentStatus.HELD and (a.hold_expires_ms or 0) <= self.now.timestamp() * 1000

    def slots(self, service, provider=None, date_from=None, date_to=None, part_of_day=None, limit=10) -> list[Slot]:  # type: ignore[no-untyped-def]
        return free_slots(
            self.schedule, service, self.now, self._busy(), provider, date_from, date_to, part_of_day, limit
        )

    def appointments(self, chat: str, upcoming_only: bool = True) -> list[Appointment]:
        mine = [a for a in self.apts.values() if a.chat == chat and a.status in ACTIVE and not self._expired(a)]
        return sorted(mine, key=lambda a: a.start)

    def get(self, appointment_id: str) -> Appointment | None:
        return self.apts.get(appointment_id)

    # --- changing ---

    def _once(self, request_id: str, make) -> Appointment:  # type: ignore[no-untyped-def]
        if request_id in self.done:
            return self.done[request_id]
        self.done[request_id] = found = make()
        return found

    def hold(self, slot_id: str, chat: str, request_id: str) -> Appointment:
        def make() -> Appointment:
            slot = parse_slot_id(slot_id, self.schedule)
            for a in list(self.apts.values()):
                if a.chat == chat and a.status == AppointmentStatus.HELD:
                    self.apts[a.id] = replace(a, status=AppointmentStatus.CANCELLED)
            if not any(s.slot_id == slot_id for s in self.slots(slot.service, slot.provider, limit=10_000)):
                raise SlotUnavailable(slot_id)
            if len(self.appointments(chat)) >= self.schedule.max_future_per_person:
                raise LimitReached(chat)
            ms = int(self.now.timestamp() * 1000)
            apt = Appointment(
                f"apt_{len(self.apts) + 1:03d}", slot.service, slot.provider, slot.start.isoformat(),
                slot.end.isoformat(), chat, AppointmentStatus.HELD, ms, ms, ms + self.schedule.hold_min * 60_000,
                slot_id,
            )  # fmt: skip
            self.apts[apt.id] = apt
            return apt

        self.calls.append(f"hold {slot_id} {request_id}")
        return self._once(request_id, make)

    def _mine(self, appointment_id: str, chat: str | None) -> Appointment:
        apt = self.apts.get(appointment_id)
        if apt is None:
            raise UnknownAppointment(appointment_id)
        if chat is not None and apt.chat != chat:
            raise NotYours(appointment_id)
        return apt

    def confirm(self, appointment_id: str, chat: str, request_id: str) -> Appointment:
        def make() -> Appointment:
            apt = self._mine(appointment_id, chat)
            if apt.status != AppointmentStatus.HELD or self._expired(apt):
                raise HoldExpired(appointment_id)
            self.apts[apt.id] = done = replace(apt, status=AppointmentStatus.BOOKED, hold_expires_ms=None)
            return done

        self.calls.append(f"confirm {appointment_id} {request_id}")
        return self._once(request_id, make)

    def cancel(self, appointment_id: str, chat: str | None, request_id: str) -> Appointment:
        def make() -> Appointment:
            apt = self._mine(appointment_id, chat)
            self.apts[apt.id] = done = replace(apt, status=AppointmentStatus.CANCELLED)
            return done

        self.calls.append(f"cancel {appointment_id} {request_id}")
        return self._once(request_id, make)

    def reschedule(self, appointment_id: str, slot_id: str, chat: str, request_id: str) -> Appointment:
        def make() -> Appointment:
            apt = self._mine(appointment_id, chat)
            slot = parse_slot_id(slot_id, self.schedule)
            busy = self._busy(but=apt.id)
            free = free_slots(self.schedule, slot.service, self.now, busy, slot.provider, limit=10_000)
            if not any(s.slot_id == slot_id for s in free):
                raise SlotUnavailable(slot_id)
            moved = replace(apt, start=slot.start.isoformat(), end=slot.end.isoformat(), slot_id=slot_id)
            self.apts[apt.id] = moved
            return moved

        self.calls.append(f"reschedule {appointment_id} {slot_id} {request_id}")
        return self._once(request_id, make)

    def join_waitlist(self, chat: str, service: str, provider: str | None = None, day: Any = None) -> None:
        self.waitlist.append((chat, service, provider, day))

    # --- test helpers ---

    def take(self, slot_id: str, chat: str = "someone-else") -> None:
        """Someone else books ``slot_id`` (as if another chat got there first)."""
        apt = self.hold(slot_id, chat, f"other-{slot_id}-{chat}")
        self.confirm(apt.id, chat, f"other-confirm-{slot_id}-{chat}")

    def later(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
