"""Free slots of a service, computed from the schedule alone (pure: the busy intervals are passed in).

Each local day is walked in wall-clock time of the schedule's zone (``zoneinfo``), so "08:00" stays 08:00
across a daylight-saving change while the UTC offset moves; a wall time that does not exist that day (the
spring-forward gap) is skipped, and an ambiguous one (fall-back) is offered once, at its first occurrence.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta

from wsm.schedule.config import Provider, Schedule
from wsm.schedule.errors import BadSlot
from wsm.schedule.model import Slot, slot_id_of

PARTS_OF_DAY = {"manha": (0, 12 * 60), "tarde": (12 * 60, 18 * 60), "noite": (18 * 60, 24 * 60)}


class BusyIndex:
    """A provider's busy intervals (epoch minutes, end exclusive) merged, for O(log n) overlap questions."""

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_left(self.starts, end) - 1
        return i >= 0 and self.ends[i] > start


def window(schedule: Schedule, now: datetime) -> tuple[datetime, date]:
    """The earliest start offered (now + notice) and the last local day offered (today + horizon)."""
    earliest = now + timedelta(minutes=schedule.min_notice_min)
    last_day = now.astimezone(schedule.tz).date() + timedelta(days=schedule.horizon_days)
    return earliest, last_day


def day_slots(schedule: Schedule, provider: Provider, service: str, day: date) -> Iterator[Slot]:
    """Every slot of ``service`` with ``provider`` on local ``day`` by the hours alone (no notice, no busy)."""
    if day in provider.days_off or schedule.is_holiday(day):
        return
    tz = schedule.tz
    duration = schedule.services[service].duration
    step = schedule.slot_step_min
    for range_start, range_end in provider.hours.get(day.weekday(), ()):
        limit = datetime.combine(day, range_end)
        minute = range_start.hour * 60 + range_start.minute
        while minute < 24 * 60:
            naive = datetime.combine(day, time(minute // 60, minute % 60))
            minute += step
            start = naive.replace(tzinfo=tz)
            start_utc = start.astimezone(UTC)
            if start_utc.astimezone(tz).replace(tzinfo=None) != naive:
                continue  # the wall time does not exist today (spring forward)
            end = (start_utc + duration).astimezone(tz)
            if end.replace(tzinfo=None) > limit:
                break
            yield Slot(slot_id_of(provider.id, service, naive), service, provider.id, start, end)


def free_slots(
    schedule: Schedule,
    service: str,
    now: datetime,
    busy: Mapping[str, BusyIndex],
    provider: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    part_of_day: str | None = None,
    limit: int = 10,
) -> list[Slot]:
    """The first ``limit`` free slots in time order (then provider id); :class:`BadSlot` for a bad question."""
    if service not in schedule.services:
        raise BadSlot(f"unknown service {service!r}")
    if part_of_day is not None and part_of_day not in PARTS_OF_DAY:
        raise BadSlot(f"part of day must be one of {', '.join(PARTS_OF_DAY)}, got {part_of_day!r}")
    providers = schedule.providers_for(service)
    if provider is not None:
        providers = [p for p in providers if p.id == provider]
        if not providers:
            raise BadSlot(f"provider {provider!r} does not exist or does not offer {service!r}")
    earliest, last_day = window(schedule, now)
    day = max(date_from or earliest.astimezone(schedule.tz).date(), earliest.astimezone(schedule.tz).date())
    end_day = min(date_to or last_day, last_day)
    buffer = schedule.services[service].buffer_min
    lo, hi = PARTS_OF_DAY[part_of_day] if part_of_day else (0, 24 * 60)
    empty = BusyIndex(())
    found: list[Slot] = []
    while day <= end_day and len(found) < limit:
        today: list[Slot] = []
        for p in sorted(providers, key=lambda p: p.id):
            index = busy.get(p.id, empty)
            for slot in day_slots(schedule, p, service, day):
                wall = slot.start.hour * 60 + slot.start.minute
                if slot.start < earliest or not lo <= wall < hi:
                    continue
                if not index.overlaps(slot.start_min, slot.end_min + buffer):
                    today.append(slot)
        today.sort(key=lambda s: (s.start, s.provider))
        found += today[: limit - len(found)]
        day += timedelta(days=1)
    return found


def check_bookable(schedule: Schedule, slot: Slot, now: datetime) -> None:
    """Raise :class:`BadSlot` unless ``slot`` is one the schedule offers now (hours, holidays, notice, horizon)."""
    earliest, last_day = window(schedule, now)
    day = slot.start.astimezone(schedule.tz).date()
    if slot.start < earliest:
        raise BadSlot(f"{slot.slot_id} is too soon (at least {schedule.min_notice_min} min notice)")
    if day > last_day:
        raise BadSlot(f"{slot.slot_id} is beyond the {schedule.horizon_days}-day horizon")
    provider = schedule.providers[slot.provider]
    if not any(s.slot_id == slot.slot_id for s in day_slots(schedule, provider, slot.service, day)):
        raise BadSlot(f"{slot.slot_id} is outside {provider.name}'s hours or on a closed day")
