"""Appointments as an RFC 5545 calendar (``icalendar``), for ``wsm schedule export --ics`` and calendar clients."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from icalendar import Calendar, Event

from wsm.schedule.config import Schedule
from wsm.schedule.model import Appointment, AppointmentStatus

PRODID = "-//WhatsApp Session Manager//wsm schedule//PT"


def appointment_event(appointment: Appointment, schedule: Schedule, stamp: datetime | None = None) -> Event:
    """One VEVENT; its UID is the appointment id, so a re-export updates rather than duplicates."""
    service = schedule.services.get(appointment.service)
    provider = schedule.providers.get(appointment.provider)
    event = Event()
    event.add("uid", f"{appointment.id}@wsm")
    event.add("dtstamp", stamp or datetime.now(UTC))
    event.add("dtstart", appointment.start_dt.astimezone(schedule.tz))
    event.add("dtend", appointment.end_dt.astimezone(schedule.tz))
    event.add("summary", f"{service.name if service else appointment.service} - {provider.name if provider else ''}")
    event.add("description", f"chat {appointment.chat}, status {appointment.status}")
    if schedule.business.address:
        event.add("location", schedule.business.address)
    status = {AppointmentStatus.HELD: "TENTATIVE", AppointmentStatus.CANCELLED: "CANCELLED"}
    event.add("status", status.get(appointment.status, "CONFIRMED"))
    event.add("categories", [appointment.provider])
    return event


def calendar(appointments: Iterable[Appointment], schedule: Schedule, name: str = "") -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("x-wr-calname", name or schedule.business.name)
    cal.add("x-wr-timezone", schedule.timezone)
    stamp = datetime.now(UTC)
    for appointment in appointments:
        cal.add_component(appointment_event(appointment, schedule, stamp))
    cal.add_missing_timezones()
    return cal
