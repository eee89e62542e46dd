"""The schedule file: validated whole, every mistake listed; slots follow wall-clock hours, holidays, notice."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.schedule_helpers import BASE, schedule
from wsm.schedule.availability import free_slots
from wsm.schedule.config import load_schedule, parse_schedule
from wsm.schedule.errors import BadSlot, ScheduleError
from wsm.schedule.model import Appointment, AppointmentStatus, parse_slot_id


def test_the_shipped_default_loads_and_is_the_example_clinic() -> None:
    s = load_schedule(None)
    assert s.business.name == "Clínica Exemplo"
    assert s.timezone == "America/Sao_Paulo" and str(s.tz) == "America/Sao_Paulo"
    assert (s.holiday_country, s.holiday_subdiv) == ("BR", "SP")
    assert load_schedule("") == s


def test_every_mistake_is_listed_at_once() -> None:
    raw = {
        "business": {},
        "timezone": "America/Sao_Paolo",
        "holidays": {"country": "BR", "subdiv": "XX", "extra": ["2026-13-01"]},
        "slot_step_min": 0,
        "hold_min": "ten",
        "reminders_before_min": [60, -5],
        "colour": "blue",
        "services": [{"id": "consulta", "name": "C", "duration_min": 0}, {"id": "Bad Id", "name": "x"}],
        "providers": [
            {
                "id": "ana",
                "name": "Ana",
                "services": ["consulta", "massagem"],
                "hours": {"mon": ["08:00-12:00", "11:00-13:00"], "funday": ["08:00-09:00"], "tue": ["18:00-08:00"]},
                "days_off": ["tomorrow"],
            }
        ],
    }
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(raw, "clinic.yaml")
    text = "\n".join(caught.value.problems)
    for expected in (
        "business.name",
        "unknown IANA time zone 'America/Sao_Paolo'",
        "'XX' is not a subdivision of BR",
        "holidays.extra[0]",
        "slot_step_min",
        "hold_min",
        "reminders_before_min: every value must be > 0",
        "unknown field 'colour'",
        "services[0].duration_min",
        "services[1].id",
        "'massagem' is not a service id",
        "ranges overlap",
        "'funday' is not one of",
        "'18:00-08:00' is not a range",
        "days_off[0]",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert len(caught.value.problems) >= 15
    assert str(caught.value).startswith("clinic.yaml: ")


def test_an_unreadable_or_non_yaml_file_is_a_schedule_error(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="cannot read"):
        load_schedule(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(ScheduleError, match="not valid YAML"):
        load_schedule(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ScheduleError, match="mapping"):
        load_schedule(str(bad))


def test_defaults_apply_when_fields_are_left_out() -> None:
    raw = {k: v for k, v in BASE.items() if k in {"business", "timezone", "services", "providers"}}
    s = parse_schedule(raw)
    assert (s.slot_step_min, s.min_notice_min, s.horizon_days, s.hold_min, s.max_future_per_person) == (
        30,
        60,
        60,
        10,
        2,
    )
    assert s.reminders_before_min == (1440, 120)
    assert s.services["consulta"].buffer_min == 10 and s.services["exame"].buffer_min == 0


def _new_york() -> object:
    return schedule(
        timezone="America/New_York",
        holidays={"country": "US"},
        min_notice_min=0,
        providers=[
            {
                "id": "ana",
                "name": "Ana",
                "services": ["consulta", "exame"],
                "hours": {"sun": ["00:30-04:00", "09:00-10:00"]},
            }
        ],
    )


@pytest.mark.parametrize("day", [date(2026, 3, 8), date(2026, 11, 1)], ids=["spring-forward", "fall-back"])
def test_slots_keep_wall_clock_hours_across_a_daylight_saving_change(day: date) -> None:
    s = _new_york()
    now = datetime(2026, 3, 1, tzinfo=UTC) if day.month == 3 else datetime(2026, 10, 25, tzinfo=UTC)
    found = free_slots(s, "exame", now, {}, date_from=day, date_to=day, limit=50)
    walls = [x.start.strftime("%H:%M") for x in found]
    offsets = {x.start.strftime("%H:%M"): x.start.utcoffset() for x in found}
    if day.month == 3:  # 02:00-03:00 does not exist that night: 02:00 and 02:30 are never offered
        assert walls == ["00:30", "01:00", "01:30", "03:00", "09:00"]
        assert offsets["01:00"] == timedelta(hours=-5) and offsets["09:00"] == timedelta(hours=-4)
        by_wall = {x.start.strftime("%H:%M"): x for x in found}
        assert by_wall["01:30"].end.strftime("%H:%M") == "03:30"  # 60 real minutes, across the jump
    else:  # 01:00-02:00 happens twice: each wall time is offered once, at its first occurrence
        assert walls == ["00:30", "01:00", "01:30", "02:00", "02:30", "03:00", "09:00"]
        assert offsets["00:30"] == timedelta(hours=-4) and offsets["09:00"] == timedelta(hours=-5)
    assert all(x.start.tzinfo is not None and x.start.tzname() in {"EST", "EDT"} for x in found)
    # a week later, same wall-clock hours
    later = free_slots(s, "exame", now, {}, date_from=day + timedelta(days=7), date_to=day + timedelta(days=7))
    assert "09:00" in [x.start.strftime("%H:%M") for x in later]


def test_a_brazilian_holiday_and_an_extra_date_and_a_day_off_have_no_slots() -> None:
    s = schedule(
        holidays={"country": "BR", "subdiv": "SP", "extra": ["2026-11-18"]},
        providers=[
            {
                "id": "ana",
                "name": "Ana",
                "services": ["consulta"],
                "hours": {d: ["08:00-12:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                "days_off": ["2026-11-19"],
            }
        ],
    )
    now = datetime(2026, 11, 16, 12, tzinfo=UTC)
    days = {x.start.date() for x in free_slots(s, "consulta", now, {}, limit=200, date_to=date(2026, 11, 27))}
    assert date(2026, 11, 20) not in days  # Dia Nacional de Zumbi e da Consciência Negra (national since 2024)
    assert date(2026, 11, 18) not in days and date(2026, 11, 19) not in days
    assert date(2026, 11, 17) in days and date(2026, 11, 23) in days
    christmas = free_slots(s, "consulta", now, {}, date_from=date(2026, 12, 25), date_to=date(2026, 12, 25))
    assert christmas == []


def test_notice_horizon_part_of_day_and_ordering() -> None:
    s = schedule()
    now = datetime.fromisoformat("2026-12-01T10:10:00-03:00")
    first = free_slots(s, "consulta", now, {}, limit=3)
    # 10:10 + 60 min notice: 11:30 is the first, then the lunch break, then the afternoon
    assert [x.slot_id for x in first] == [
        "ana.consulta.20261201T1130",
        "ana.consulta.20261201T1300",
        "ana.consulta.20261201T1330",
    ]
    tarde = free_slots(s, "consulta", now, {}, part_of_day="tarde", limit=40)
    assert all(12 <= x.start.hour < 18 for x in tarde)
    monday = free_slots(s, "consulta", now, {}, date_from=date(2026, 12, 7), date_to=date(2026, 12, 7), limit=4)
    assert [x.provider for x in monday[:2]] == ["ana", "bruno"]  # same start: by provider id
    assert free_slots(s, "consulta", now, {}, date_from=date(2027, 3, 1)) == []  # beyond 60 days
    with pytest.raises(BadSlot):
        free_slots(s, "consulta", now, {}, part_of_day="madrugada")
    with pytest.raises(BadSlot):
        free_slots(s, "massagem", now, {})
    with pytest.raises(BadSlot):
        free_slots(s, "exame", now, {}, provider="bruno")


def test_a_slot_must_end_inside_the_range() -> None:
    s = schedule()
    now = datetime.fromisoformat("2026-12-01T00:00:00-03:00")
    day = free_slots(s, "exame", now, {}, date_from=date(2026, 12, 2), date_to=date(2026, 12, 2), limit=50)
    walls = [x.start.strftime("%H:%M") for x in day]
    assert "11:00" in walls and "11:30" not in walls and "17:00" in walls and "17:30" not in walls


def test_slot_ids_parse_back_and_bad_ones_are_refused() -> None:
    s = schedule()
    slot = parse_slot_id("ana.consulta.20261202T1030", s)
    assert slot.start.isoformat() == "2026-12-02T10:30:00-03:00" and slot.end.isoformat() == "2026-12-02T11:00:00-03:00"
    for bad in (
        "",
        "ana.consulta",
        "zeca.consulta.20261202T1030",
        "bruno.exame.20261202T1030",
        "ana.consulta.20261302T1030",
    ):
        with pytest.raises(BadSlot):
            parse_slot_id(bad, s)


def test_an_appointment_round_trips_through_its_dict() -> None:
    a = Appointment(
        "apt_1",
        "consulta",
        "ana",
        "2026-12-02T10:30:00-03:00",
        "2026-12-02T11:00:00-03:00",
        "c",
        AppointmentStatus.HELD,
        1,
        2,
        3,
        "ana.consulta.20261202T1030",
    )
    assert Appointment.from_dict(a.to_dict()) == a
    assert a.to_dict()["status"] == "held"
