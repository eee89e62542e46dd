"""A schedule that always has free slots (every day, all day, no notice, no holidays), for conversation tests
that run on the real clock; ``write`` puts it in a file for processes (WSM_SCHEDULE_FILE)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from wsm.schedule.config import Schedule, parse_schedule

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_OPEN: dict[str, Any] = {
    "business": {"name": "Clínica Teste"},
    "timezone": "America/Sao_Paulo",
    "slot_step_min": 30,
    "min_notice_min": 0,
    "horizon_days": 30,
    "hold_min": 10,
    "max_future_per_person": 3,
    "reminders_before_min": [60],
    "services": [{"id": "consulta", "name": "Consulta", "duration_min": 30}],
    "providers": [
        {"id": "ana", "name": "Dra. Ana", "services": ["consulta"], "hours": {d: ["00:00-23:59"] for d in DAYS}}
    ],
}


def always_open(**changes: Any) -> Schedule:
    raw = copy.deepcopy(ALWAYS_OPEN)
    raw.update(changes)
    return parse_schedule(raw, "<always open>")


def write(path: Path, **changes: Any) -> Path:
    raw = copy.deepcopy(ALWAYS_OPEN)
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path
