"""Dates and times typed in Portuguese ("amanhã à tarde", "sexta 10h", "15/12 às 14h"), relative to "now".

A small parser of our own rather than ``dateparser``: it imports in microseconds (the worker's hot
path), understands exactly the forms a booking conversation needs, and refuses the rest (None)
instead of guessing. ``now`` is an aware datetime in the business time zone; the answer is a
:class:`When` that narrows a slot search: a day, a time of day, a part of the day, or any mix.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

PARTS_OF_DAY = ("manha", "tarde", "noite")  # the availability search's names
WEEKDAYS = {"segunda": 0, "terca": 1, "quarta": 2, "quinta": 3, "sexta": 4, "sabado": 5, "domingo": 6}
MONTHS = {
    "janeiro": 1, "fevereiro": 2, "marco": 3, "abril": 4, "maio": 5, "junho": 6, "julho": 7,
    "agosto": 8, "setembro": 9, "outubro": 10, "novembro": 11, "dezembro": 12,
}  # fmt: skip
RELATIVE = {"hoje": 0, "amanha": 1, "depois de amanha": 2}
PART_WORDS = {"manha": "manha", "tarde": "tarde", "noite": "noite"}

_NUMERIC_DATE = re.compile(r"\b(\d{1,2})[/-](\d{1,2})(?:[/-](\d{2}|\d{4}))?\b")
_NAMED_DATE = re.compile(r"\b(\d{1,2}) de (" + "|".join(MONTHS) + r")(?: de (\d{4}))?\b")
_DAY_OF_MONTH = re.compile(r"\bdia (\d{1,2})\b")
_TIME_HM = re.compile(r"\b(\d{1,2})(?::(\d{2})|h(\d{2})?\b|\s?horas?\b)")
_TIME_AS = re.compile(r"\bas (\d{1,2})\b")
_NOON = re.compile(r"\bmeio[ -]dia\b")
_WEEKDAY = re.compile(r"\b(proxima |proximo )?(" + "|".join(WEEKDAYS) + r")(?:[ -]feira)?( que vem)?\b")


@dataclass(frozen=True)
class When:
    """What the person asked for; every part is optional but at least one is set."""

    day: date | None = None
    at: time | None = None
    part_of_day: str | None = None  # "manha" | "tarde" | "noite"


def fold(text: str) -> str:
    """Lower-case, without accents, single spaces: 'Sábado À  tarde' -> 'sabado a tarde'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[,;!?]", " ", plain).split())


def parse_when(text: str, now: datetime) -> When | None:
    """The day / time / part of day in ``text``, relative to ``now``; None when nothing (valid) is there.

    An impossible date ("31/02", "25:00") makes the whole answer None: better to ask again than to book
    something the person did not say.
    """
    s = fold(text)
    today = now.date()
    try:
        day = _day(s, today)
        at = _time(s)
    except ValueError:
        return None
    part = _part(s)
    if at is not None and part in ("tarde", "noite") and at.hour < 12:
        at = at.replace(hour=at.hour + 12)  # "3h da tarde" is 15:00
    if at is not None:
        part = None  # an exact time says more than a part of the day
    if day is None and at is None and part is None:
        return None
    if day == today and _WEEKDAY.search(s) and _over(at, part, now):
        day += timedelta(days=7)  # "sexta à tarde" typed on a Friday evening: next Friday's afternoon
    return When(day, at, part)


PART_ENDS = {"manha": time(12), "tarde": time(18)}  # the night runs to midnight
LATE_FOR_A_PART = timedelta(hours=1)  # less than this left of the part of the day asked for: it is over


def _over(at: time | None, part: str | None, now: datetime) -> bool:
    """Whether the time or part of the day asked for is already past today (or all but over)."""
    if at is not None:
        return at <= now.time()
    end = PART_ENDS.get(part or "")
    if end is None:
        return False
    return now + LATE_FOR_A_PART >= now.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)


def _day(s: str, today: date) -> date | None:
    for words, offset in sorted(RELATIVE.items(), key=lambda kv: -len(kv[0])):
        if re.search(rf"\b{words}\b", s):
            return today + timedelta(days=offset)
    m = _NUMERIC_DATE.search(s)
    if m:
        return _dated(today, int(m.group(1)), int(m.group(2)), m.group(3))
    m = _NAMED_DATE.search(s)
    if m:
        return _dated(today, int(m.group(1)), MONTHS[m.group(2)], m.group(3))
    m = _DAY_OF_MONTH.search(s)
    if m:
        return _day_of_month(today, int(m.group(1)))
    m = _WEEKDAY.search(s)
    if m:
        ahead = (WEEKDAYS[m.group(2)] - today.weekday()) % 7
        if ahead == 0 and (m.group(1) or m.group(3)):
            ahead = 7  # "próxima sexta" typed on a Friday
        return today + timedelta(days=ahead)
    return None


def _dated(today: date, day: int, month: int, year_text: str | None) -> date:
    """dd/mm[/yy[yy]]; without a year, the next such date from today (15/01 typed in December: next year)."""
    if year_text:
        year = int(year_text) + (2000 if len(year_text) == 2 else 0)
        return date(year, month, day)
    for year in range(today.year, today.year + 5):  # 29/02 waits for the next leap year
        if _valid(year, month, day) and date(year, month, day) >= today:
            return date(year, month, day)
    raise ValueError(f"no such date: {day}/{month}")


def _day_of_month(today: date, day: int) -> date:
    """'dia 3': this month's 3rd, or next month's once it has passed."""
    year, month = today.year, today.month
    for _ in range(3):  # "dia 31" in a 30-day month looks further
        if _valid(year, month, day) and date(year, month, day) >= today:
            return date(year, month, day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise ValueError(f"no such day: {day}")


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _time(s: str) -> time | None:
    if _NOON.search(s):
        return time(12, 0)
    without_dates = _NUMERIC_DATE.sub(" ", s)
    m = _TIME_HM.search(without_dates)
    if m:
        return time(int(m.group(1)), int(m.group(2) or m.group(3) or 0))  # ValueError when impossible
    m = _TIME_AS.search(without_dates)
    if m:
        return time(int(m.group(1)), 0)
    return None


def _part(s: str) -> str | None:
    for word, part in PART_WORDS.items():
        if re.search(rf"\b{word}\b", s):
            return part
    return None
