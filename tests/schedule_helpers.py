"""A small schedule for the scheduling tests, built from a dict so each test can bend one field."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from wsm.schedule.config import Schedule, parse_schedule

BASE: dict[str, Any] = {
    "business": {"name": "Clínica Teste"},
    "timezone": "America/Sao_Paulo",
    "holidays": {"country": "BR", "subdiv": "SP"},
    "slot_step_min": 30,
    "min_notice_min": 60,
    "horizon_days": 60,
    "hold_min": 10,
    "max_future_per_person": 2,
    "reminders_before_min": [1440, 120],
    "services": [
        {"id": "consulta", "name": "Consulta", "duration_min": 30, "buffer_min": 10},
        {"id": "exame", "name": "Exame", "duration_min": 60},
    ],
    "providers": [
        {
            "id": "ana",
            "name": "Dra. Ana",
            "services": ["consulta", "exame"],
            "hours": {d: ["08:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        },
        {"id": "bruno", "name": "Dr. Bruno", "services": ["consulta"], "hours": {"mon": ["08:00-10:00"]}},
    ],
}


def schedule(**changes: Any) -> Schedule:
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return parse_schedule(raw, "<test>")


def ms(text: str, tz: str = "America/Sao_Paulo") -> int:
    """Epoch ms of a local wall time 'YYYY-MM-DD HH:MM'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += int(minutes * 60000)
