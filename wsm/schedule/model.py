"""What the scheduling core hands around: statuses, a bookable slot, an appointment."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from wsm.schedule.config import Schedule
from wsm.schedule.errors import BadSlot


class AppointmentStatus(StrEnum):
    HELD = "held"
    BOOKED = "booked"
    CANCELLED = "cancelled"
    DONE = "done"
    NO_SHOW = "no_show"


ACTIVE = frozenset({AppointmentStatus.HELD, AppointmentStatus.BOOKED})
SLOT_ID_RE = re.compile(r"^([a-z0-9_-]+)\.([a-z0-9_-]+)\.(\d{8}T\d{4})$")


@dataclass(frozen=True)
class Slot:
    """One bookable time of one service with one provider; ``start``/``end`` are aware datetimes."""

    slot_id: str
    service: str
    provider: str
    start: datetime
    end: datetime

    @property
    def start_min(self) -> int:
        return epoch_min(self.start)

    @property
    def end_min(self) -> int:
        return epoch_min(self.end)


def slot_id_of(provider: str, service: str, local_start: datetime) -> str:
    return f"{provider}.{service}.{local_start.strftime('%Y%m%dT%H%M')}"


def parse_slot_id(slot_id: str, schedule: Schedule) -> Slot:
    """The slot a ``slot_id`` names (local wall time in the schedule's zone); :class:`BadSlot` if malformed.

    Whether the slot is *bookable* (hours, holidays, notice) is checked by :mod:`wsm.schedule.availability`.
    """
    match = SLOT_ID_RE.match(slot_id or "")
    if not match:
        raise BadSlot(f"malformed slot id {slot_id!r} (expected <provider>.<service>.<YYYYMMDDTHHMM>)")
    provider, service, stamp = match.groups()
    if provider not in schedule.providers:
        raise BadSlot(f"unknown provider {provider!r}")
    if service not in schedule.services:
        raise BadSlot(f"unknown service {service!r}")
    if service not in schedule.providers[provider].services:
        raise BadSlot(f"{provider!r} does not offer {service!r}")
    try:
        naive = datetime.strptime(stamp, "%Y%m%dT%H%M")
    except ValueError as e:
        raise BadSlot(f"slot id {slot_id!r} has no valid date/time") from e
    start = naive.replace(tzinfo=schedule.tz)
    if start.astimezone(UTC).astimezone(schedule.tz).replace(tzinfo=None) != naive:
        raise BadSlot(f"{stamp} does not exist in {schedule.timezone} (daylight-saving gap)")
    end = (start.astimezone(UTC) + schedule.services[service].duration).astimezone(schedule.tz)
    return Slot(slot_id, service, provider, start, end)


def epoch_min(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


@dataclass
class Appointment:
    """An appointment as stored (a Redis hash); ``start``/``end`` are ISO 8601 strings with offset."""

    id: str
    service: str
    provider: str
    start: str
    end: str
    chat: str
    status: AppointmentStatus
    created_ms: int
    changed_ms: int
    hold_expires_ms: int | None = None
    slot_id: str = ""
    reason: str = ""

    @property
    def start_dt(self) -> datetime:
        return datetime.fromisoformat(self.start)

    @property
    def end_dt(self) -> datetime:
        return datetime.fromisoformat(self.end)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Appointment:
        expires = raw.get("hold_expires_ms")
        return cls(
            id=str(raw["id"]),
            service=str(raw["service"]),
            provider=str(raw["provider"]),
            start=str(raw["start"]),
            end=str(raw["end"]),
            chat=str(raw.get("chat") or ""),
            status=AppointmentStatus(raw["status"]),
            created_ms=int(raw.get("created_ms") or 0),
            changed_ms=int(raw.get("changed_ms") or 0),
            hold_expires_ms=int(expires) if expires not in (None, "", "0", 0) else None,
            slot_id=str(raw.get("slot_id") or ""),
            reason=str(raw.get("reason") or ""),
        )
