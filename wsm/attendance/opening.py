"""When people are at work: the schedule file's opening hours (any provider's hours, holidays closed).

Used to tell a person who asks for a human outside those hours when someone is back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from wsm.schedule.config import Schedule

WEEKDAYS = ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo")
SEARCH_DAYS = 14


def is_open(schedule: Schedule, at: datetime) -> bool:
    local = at.astimezone(schedule.tz)
    if schedule.is_holiday(local.date()):
        return False
    now = local.time().replace(tzinfo=None)
    for provider in schedule.providers.values():
        if local.date() in provider.days_off:
            continue
        if any(start <= now < end for start, end in provider.hours.get(local.weekday(), ())):
            return True
    return False


def next_opening(schedule: Schedule, at: datetime) -> datetime | None:
    """The next moment the business opens after ``at`` (local time), within two weeks; None if never."""
    local = at.astimezone(schedule.tz)
    for offset in range(SEARCH_DAYS + 1):
        day = (local + timedelta(days=offset)).date()
        if schedule.is_holiday(day):
            continue
        starts = [
            start
            for p in schedule.providers.values()
            if day not in p.days_off
            for start, _ in p.hours.get(day.weekday(), ())
        ]
        for start in sorted(starts):
            moment = datetime.combine(day, start, schedule.tz)
            if moment > local:
                return moment
    return None


def describe(moment: datetime | None, at: datetime) -> str:
    """``hoje às 08:00`` / ``amanhã às 08:00`` / ``segunda-feira às 08:00`` (pt-BR)."""
    if moment is None:
        return "em breve"
    days = (moment.date() - at.astimezone(moment.tzinfo).date()).days
    day = "hoje" if days == 0 else "amanhã" if days == 1 else WEEKDAYS[moment.weekday()]
    return f"{day} às {moment:%H:%M}"
