"""Portuguese dates and times relative to a fixed "now" (Wednesday 2026-12-02 09:00, São Paulo)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from wsm.conversation.dates import When, parse_when

SP = ZoneInfo("America/Sao_Paulo")
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=SP)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hoje", When(date(2026, 12, 2))),
        ("amanhã", When(date(2026, 12, 3))),
        ("Amanha!", When(date(2026, 12, 3))),
        ("depois de amanhã", When(date(2026, 12, 4))),
        ("amanhã de manhã", When(date(2026, 12, 3), part_of_day="manha")),
        ("sexta", When(date(2026, 12, 4))),
        ("sexta-feira à tarde", When(date(2026, 12, 4), part_of_day="tarde")),
        ("segunda de manhã", When(date(2026, 12, 7), part_of_day="manha")),
        ("sábado", When(date(2026, 12, 5))),
        ("quarta", When(date(2026, 12, 2))),  # today is Wednesday
        ("próxima quarta", When(date(2026, 12, 9))),
        ("quarta que vem", When(date(2026, 12, 9))),
        ("15/12", When(date(2026, 12, 15))),
        ("15/12 às 14h", When(date(2026, 12, 15), time(14, 0))),
        ("15-12 14:30", When(date(2026, 12, 15), time(14, 30))),
        ("15/12/2027", When(date(2027, 12, 15))),
        ("15/12/27", When(date(2027, 12, 15))),
        ("25 de dezembro", When(date(2026, 12, 25))),
        ("dia 3 às 10h", When(date(2026, 12, 3), time(10, 0))),
        ("dia 1", When(date(2027, 1, 1))),  # the 1st of this month has passed
        ("10h", When(at=time(10, 0))),
        ("10h30", When(at=time(10, 30))),
        ("14:30", When(at=time(14, 30))),
        ("às 9", When(at=time(9, 0))),
        ("meio-dia", When(at=time(12, 0))),
        ("3h da tarde", When(at=time(15, 0))),
        ("de tarde", When(part_of_day="tarde")),
        ("à noite", When(part_of_day="noite")),
        ("manhã", When(part_of_day="manha")),
        ("amanhã às 8h da manhã", When(date(2026, 12, 3), time(8, 0))),
    ],
)
def test_understood(text: str, expected: When) -> None:
    assert parse_when(text, NOW) == expected


def test_day_and_month_already_past_is_next_year() -> None:
    assert parse_when("15/01", NOW) == When(date(2027, 1, 15))
    assert parse_when("01/12", NOW) == When(date(2027, 12, 1))  # yesterday: next year's


@pytest.mark.parametrize(
    ("text", "at_hour", "expected"),
    [
        ("quarta à tarde", 17, date(2026, 12, 9)),  # less than an hour of the afternoon left: next Wednesday's
        ("quarta à tarde", 16, date(2026, 12, 2)),
        ("quarta de manhã", 11, date(2026, 12, 9)),
        ("quarta às 10h", 11, date(2026, 12, 9)),  # that time has passed today
        ("quarta às 15h", 11, date(2026, 12, 2)),
        ("quarta à noite", 19, date(2026, 12, 2)),  # the night is still ahead
        ("quarta", 19, date(2026, 12, 2)),  # no time or part: today, as before
        ("hoje à tarde", 17, date(2026, 12, 2)),  # "hoje" says today, whatever the hour
    ],
)
def test_todays_weekday_means_next_week_once_the_time_asked_for_is_over(
    text: str, at_hour: int, expected: date
) -> None:
    found = parse_when(text, NOW.replace(hour=at_hour, minute=30))
    assert found is not None and found.day == expected


def test_weekday_across_the_year_end() -> None:
    new_years_eve = datetime(2026, 12, 31, 10, 0, tzinfo=SP)  # a Thursday
    assert parse_when("segunda", new_years_eve) == When(date(2027, 1, 4))
    assert parse_when("amanhã", new_years_eve) == When(date(2027, 1, 1))


def test_leap_day_only_in_a_leap_year() -> None:
    assert parse_when("29/02", NOW) == When(date(2028, 2, 29))
    assert parse_when("29/02/2027", NOW) is None


@pytest.mark.parametrize(
    "text", ["31/02", "32/12", "15/13", "25:00", "10:75", "dia 32", "", "quero marcar", "1", "2", "ter uma consulta"]
)
def test_not_understood(text: str) -> None:
    assert parse_when(text, NOW) is None
