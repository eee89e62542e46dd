"""The schedule file (YAML): business, services, providers and their hours, read and validated whole at start-up.

Every mistake is collected and reported together (:class:`ScheduleError`), so an operator fixes the file
in one pass. Times are local wall-clock times of ``timezone`` (an IANA name, resolved with ``zoneinfo``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
import yaml

from wsm.schedule.errors import ScheduleError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ID_RE = re.compile(r"^[a-z0-9_-]{1,40}$")
RANGE_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
DEFAULTS: dict[str, Any] = {
    "slot_step_min": 30,
    "min_notice_min": 60,
    "horizon_days": 60,
    "hold_min": 10,
    "max_future_per_person": 2,
    "reminders_before_min": [1440, 120],
}


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    duration_min: int
    buffer_min: int = 0

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_min)


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    services: tuple[str, ...]
    hours: dict[int, tuple[tuple[time, time], ...]]  # weekday (0 = Monday) -> local (start, end) ranges
    days_off: frozenset[date] = frozenset()


@dataclass(frozen=True)
class Business:
    name: str
    address: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Schedule:
    timezone: str
    holiday_country: str
    holiday_subdiv: str
    extra_holidays: frozenset[date]
    slot_step_min: int
    min_notice_min: int
    horizon_days: int
    hold_min: int
    max_future_per_person: int
    reminders_before_min: tuple[int, ...]
    services: dict[str, Service]
    providers: dict[str, Provider]
    business: Business
    source: str = ""
    _holiday_years: dict[int, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_holiday(self, day: date) -> bool:
        """A public holiday of the configured country/subdivision, or one of the file's ``extra`` dates."""
        if day in self.extra_holidays:
            return True
        if not self.holiday_country:
            return False
        table = self._holiday_years.get(day.year)
        if table is None:
            table = holidays_lib.country_holidays(
                self.holiday_country, subdiv=self.holiday_subdiv or None, years=day.year
            )
            self._holiday_years[day.year] = table
        return day in table

    def providers_for(self, service: str) -> list[Provider]:
        return [p for p in self.providers.values() if service in p.services]


def default_path() -> Path:
    return Path(str(resources.files("wsm.schedule").joinpath("schedules", "default.yaml")))


def load_schedule(path: str | None) -> Schedule:
    """Read and validate the schedule file (None or "" = the shipped default); raise :class:`ScheduleError`."""
    source = path or str(default_path())
    try:
        raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except OSError as e:
        raise ScheduleError(source, [f"cannot read the file: {e.strerror or e}"]) from e
    except yaml.YAMLError as e:
        raise ScheduleError(source, [f"not valid YAML: {e}"]) from e
    return parse_schedule(raw, source)


def parse_schedule(raw: Any, source: str = "<schedule>") -> Schedule:
    """Validate a decoded schedule document; every problem is listed in the one :class:`ScheduleError`."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ScheduleError(source, ["the file must be a mapping (key: value) at the top level"])
    known = {"timezone", "holidays", "services", "providers", "business", *DEFAULTS}
    problems += [f"unknown field {k!r}" for k in raw if k not in known]

    tz_name = raw.get("timezone")
    if not isinstance(tz_name, str) or not tz_name:
        problems.append("timezone: required, an IANA name such as America/Sao_Paulo")
        tz_name = "UTC"
    else:
        try:
            ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone: unknown IANA time zone {tz_name!r}")
            tz_name = "UTC"

    country, subdiv, extra = _holidays(raw.get("holidays"), problems)
    numbers = {
        name: _int(raw, name, problems, minimum=0 if name == "min_notice_min" else 1)
        for name in DEFAULTS
        if name != "reminders_before_min"
    }
    reminders = raw.get("reminders_before_min", DEFAULTS["reminders_before_min"])
    if not isinstance(reminders, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in reminders):
        problems.append("reminders_before_min: a list of whole minutes, e.g. [1440, 120]")
        reminders = []
    elif any(m <= 0 for m in reminders):
        problems.append("reminders_before_min: every value must be > 0")

    services = _services(raw.get("services"), problems)
    providers = _providers(raw.get("providers"), set(services), problems)
    business = _business(raw.get("business"), problems)
    if problems:
        raise ScheduleError(source, problems)
    return Schedule(
        timezone=tz_name,
        holiday_country=country,
        holiday_subdiv=subdiv,
        extra_holidays=frozenset(extra),
        slot_step_min=numbers["slot_step_min"],
        min_notice_min=numbers["min_notice_min"],
        horizon_days=numbers["horizon_days"],
        hold_min=numbers["hold_min"],
        max_future_per_person=numbers["max_future_per_person"],
        reminders_before_min=tuple(sorted(set(reminders), reverse=True)),
        services=services,
        providers=providers,
        business=business,
        source=source,
    )


def _int(raw: dict[str, Any], name: str, problems: list[str], minimum: int) -> int:
    value = raw.get(name, DEFAULTS[name])
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        problems.append(f"{name}: a whole number >= {minimum}, got {value!r}")
        return max(minimum, 1)
    return value


def _date(value: Any, where: str, problems: list[str]) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        problems.append(f"{where}: {value!r} is not a date YYYY-MM-DD")
        return None


def _holidays(raw: Any, problems: list[str]) -> tuple[str, str, list[date]]:
    if raw is None:
        return "", "", []
    if not isinstance(raw, dict):
        problems.append("holidays: a mapping {country, subdiv, extra}")
        return "", "", []
    problems += [f"holidays: unknown field {k!r}" for k in raw if k not in {"country", "subdiv", "extra"}]
    country = str(raw.get("country") or "").upper()
    subdiv = str(raw.get("subdiv") or "")
    if country:
        supported = holidays_lib.list_supported_countries()
        if country not in supported:
            problems.append(f"holidays.country: {country!r} is not a country the holidays package knows")
        elif subdiv and subdiv not in supported[country]:
            problems.append(f"holidays.subdiv: {subdiv!r} is not a subdivision of {country}")
    elif subdiv:
        problems.append("holidays.subdiv: needs holidays.country")
    extra_raw = raw.get("extra") or []
    if not isinstance(extra_raw, list):
        problems.append("holidays.extra: a list of dates YYYY-MM-DD")
        extra_raw = []
    extra = [d for i, v in enumerate(extra_raw) if (d := _date(v, f"holidays.extra[{i}]", problems))]
    return country, subdiv, extra


def _services(raw: Any, problems: list[str]) -> dict[str, Service]:
    if not isinstance(raw, list) or not raw:
        problems.append("services: required, a non-empty list of {id, name, duration_min, buffer_min}")
        return {}
    out: dict[str, Service] = {}
    for i, item in enumerate(raw):
        where = f"services[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: a mapping {{id, name, duration_min, buffer_min}}")
            continue
        problems += [
            f"{where}: unknown field {k!r}" for k in item if k not in {"id", "name", "duration_min", "buffer_min"}
        ]
        sid = item.get("id")
        if not isinstance(sid, str) or not ID_RE.match(sid):
            problems.append(f"{where}.id: required, lowercase letters, digits, _ or - (got {sid!r})")
            continue
        if sid in out:
            problems.append(f"{where}.id: {sid!r} appears twice")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: required text")
        duration = item.get("duration_min")
        if not isinstance(duration, int) or isinstance(duration, bool) or not 1 <= duration <= 24 * 60:
            problems.append(f"{where}.duration_min: minutes between 1 and 1440, got {duration!r}")
            duration = 1
        buffer = item.get("buffer_min", 0)
        if not isinstance(buffer, int) or isinstance(buffer, bool) or not 0 <= buffer <= 24 * 60:
            problems.append(f"{where}.buffer_min: minutes between 0 and 1440, got {buffer!r}")
            buffer = 0
        out[sid] = Service(sid, str(name or sid), duration, buffer)
    return out


def _providers(raw: Any, services: set[str], problems: list[str]) -> dict[str, Provider]:
    if not isinstance(raw, list) or not raw:
        problems.append("providers: required, a non-empty list of {id, name, services, hours, days_off}")
        return {}
    out: dict[str, Provider] = {}
    for i, item in enumerate(raw):
        where = f"providers[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: a mapping {{id, name, services, hours, days_off}}")
            continue
        allowed = {"id", "name", "services", "hours", "days_off"}
        problems += [f"{where}: unknown field {k!r}" for k in item if k not in allowed]
        pid = item.get("id")
        if not isinstance(pid, str) or not ID_RE.match(pid):
            problems.append(f"{where}.id: required, lowercase letters, digits, _ or - (got {pid!r})")
            continue
        if pid in out:
            problems.append(f"{where}.id: {pid!r} appears twice")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: required text")
        offered = item.get("services")
        if not isinstance(offered, list) or not offered:
            problems.append(f"{where}.services: a non-empty list of service ids")
            offered = []
        for sid in offered:
            if sid not in services:
                problems.append(f"{where}.services: {sid!r} is not a service id")
        hours = _hours(item.get("hours"), f"{where}.hours", problems)
        days_raw = item.get("days_off") or []
        if not isinstance(days_raw, list):
            problems.append(f"{where}.days_off: a list of dates YYYY-MM-DD")
            days_raw = []
        days_off = {d for j, v in enumerate(days_raw) if (d := _date(v, f"{where}.days_off[{j}]", problems))}
        out[pid] = Provider(pid, str(name or pid), tuple(str(s) for s in offered), hours, frozenset(days_off))
    return out


def _hours(raw: Any, where: str, problems: list[str]) -> dict[int, tuple[tuple[time, time], ...]]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: required, e.g. {{mon: ['08:00-12:00', '13:00-18:00']}}")
        return {}
    out: dict[int, tuple[tuple[time, time], ...]] = {}
    for day, ranges in raw.items():
        if day not in WEEKDAYS:
            problems.append(f"{where}: {day!r} is not one of {', '.join(WEEKDAYS)}")
            continue
        if not isinstance(ranges, list):
            problems.append(f"{where}.{day}: a list of 'HH:MM-HH:MM' ranges")
            continue
        parsed: list[tuple[time, time]] = []
        for text in ranges:
            span = _range(text)
            if span is None:
                problems.append(f"{where}.{day}: {text!r} is not a range 'HH:MM-HH:MM' with start < end")
                continue
            parsed.append(span)
        parsed.sort()
        for (_, end), (start, _) in itertools.pairwise(parsed):
            if start < end:
                problems.append(f"{where}.{day}: ranges overlap")
        out[WEEKDAYS.index(day)] = tuple(parsed)
    return out


def _range(text: Any) -> tuple[time, time] | None:
    match = RANGE_RE.match(str(text).strip())
    if not match:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        return None
    start = time(h1, m1)
    end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
    return (start, end) if start < end else None


def _business(raw: Any, problems: list[str]) -> Business:
    if not isinstance(raw, dict):
        problems.append("business: required, a mapping {name, address, phone}")
        return Business("")
    problems += [f"business: unknown field {k!r}" for k in raw if k not in {"name", "address", "phone"}]
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("business.name: required text")
    return Business(str(name or ""), str(raw.get("address") or ""), str(raw.get("phone") or ""))
