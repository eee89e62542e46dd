"""``wsm schedule ...`` through the real console script against a private Redis; export/erase include appointments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import yaml
from icalendar import Calendar

from tests.conftest import snapshot
from tests.schedule_helpers import BASE
from wsm.schedule.book import Book
from wsm.schedule.config import load_schedule

WSM = str(Path(sys.executable).with_name("wsm"))
ANA, BIA = "5511911110001@c.us", "5511911110002@c.us"
EVERY_DAY = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@pytest.fixture
def schedule_file(tmp_path: Path) -> str:
    """Open every day all day, no holidays: the tests run on the real clock, whatever the date."""
    raw = dict(BASE, holidays=None, min_notice_min=60)
    raw["providers"] = [
        {"id": "ana", "name": "Dra. Ana", "services": ["consulta", "exame"], "hours": EVERY_DAY},
        {"id": "bruno", "name": "Dr. Bruno", "services": ["consulta"], "hours": EVERY_DAY},
    ]
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return str(path)


@pytest.fixture
def book(r: redis.Redis, schedule_file: str) -> Book:
    return Book(r, load_schedule(schedule_file), "default")


def wsm(redis_url: str, schedule_file: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=redis_url, WSM_SCHEDULE_FILE=schedule_file)
    return subprocess.run([WSM, *args], env=env, capture_output=True, text=True, timeout=60)


def lines(done: subprocess.CompletedProcess[str]) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_slots_lists_free_slots_one_json_object_per_line(redis_url: str, schedule_file: str, book: Book) -> None:
    rows = lines(wsm(redis_url, schedule_file, "schedule", "slots", "--service", "consulta", "--limit", "4", "--json"))
    assert len(rows) == 4 and set(rows[0]) == {"slot_id", "service", "provider", "start", "end"}
    starts = [datetime.fromisoformat(x["start"]) for x in rows]
    assert starts == sorted(starts) and starts[0] >= datetime.now(UTC) + timedelta(minutes=60)
    book.hold(rows[0]["slot_id"], ANA, "h-1")
    again = lines(
        wsm(redis_url, schedule_file, "schedule", "slots", "--service", "consulta", "--provider", "ana", "--json")
    )
    assert rows[0]["slot_id"] not in [x["slot_id"] for x in again]
    tomorrow = (datetime.now(book.schedule.tz) + timedelta(days=1)).date().isoformat()
    later = lines(
        wsm(redis_url, schedule_file, "schedule", "slots", "--service", "exame", "--from", tomorrow, "--json")
    )
    assert later and all(x["start"].startswith(tomorrow) for x in later[:1])
    text = wsm(redis_url, schedule_file, "schedule", "slots", "--service", "consulta", "--limit", "1")
    assert text.returncode == 0 and "consulta." in text.stdout


def test_bad_input_is_a_clear_error_and_exit_status(redis_url: str, schedule_file: str, tmp_path: Path) -> None:
    for args, message in (
        (("slots", "--service", "massagem"), "unknown service"),
        (("slots", "--service", "exame", "--provider", "bruno"), "does not offer"),
        (("slots", "--service", "consulta", "--from", "amanhã"), "not a date"),
        (("agenda", "--provider", "zeca"), "unknown provider"),
        (("cancel", "apt_000000000000"), "no appointment"),
        (("block", "--provider", "ana", "--from", "2026-12-10T12:00", "--to", "2026-12-10T11:00"), "end after"),
        (("block", "--provider", "ana", "--from", "noon", "--to", "2026-12-10T11:00"), "not a date-time"),
    ):
        done = wsm(redis_url, schedule_file, "schedule", *args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
    broken = tmp_path / "broken.yaml"
    broken.write_text("timezone: Mars/Olympus\nservices: []\n")
    done = wsm(redis_url, str(broken), "schedule", "agenda")
    assert done.returncode == 1 and "Mars/Olympus" in done.stderr and "services" in done.stderr


def test_agenda_cancel_and_block(redis_url: str, schedule_file: str, book: Book, r: redis.Redis) -> None:
    first, second = book.slots("consulta", provider="ana", limit=10)[0], book.slots("consulta", provider="bruno")[0]
    a = book.confirm(book.hold(first.slot_id, ANA, "a-1").id, ANA, "a-2")
    b = book.hold(second.slot_id, BIA, "b-1")
    rows = lines(wsm(redis_url, schedule_file, "schedule", "agenda", "--json"))
    assert [(x["id"], x["status"]) for x in rows] == [(a.id, "booked"), (b.id, "held")]  # by start, then provider
    assert set(rows[0]) == {"id", "provider", "service", "start", "end", "chat", "status"}
    only_bruno = lines(wsm(redis_url, schedule_file, "schedule", "agenda", "--provider", "bruno", "--json"))
    assert [x["id"] for x in only_bruno] == [b.id]
    day = first.start.date().isoformat()
    assert a.id in [
        x["id"] for x in lines(wsm(redis_url, schedule_file, "schedule", "agenda", "--date", day, "--json"))
    ]

    done = lines(wsm(redis_url, schedule_file, "schedule", "cancel", a.id, "--json"))
    assert done[0]["status"] == "cancelled" and book.get(a.id).status == "cancelled"
    assert lines(wsm(redis_url, schedule_file, "schedule", "cancel", a.id, "--json"))[0]["status"] == "cancelled"

    start = (first.start + timedelta(days=1)).replace(tzinfo=None)
    end = start + timedelta(hours=2)
    made = lines(
        wsm(
            redis_url,
            schedule_file,
            "schedule",
            "block",
            "--provider",
            "ana",
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
            "--json",
        )
    )[0]
    assert made["id"].startswith("blk_") and made["overlapping"] == []
    free = {s.slot_id for s in book.slots("consulta", provider="ana", date_from=start.date(), limit=200)}
    blocked = {f"ana.consulta.{(start + timedelta(minutes=m)).strftime('%Y%m%dT%H%M')}" for m in range(0, 120, 30)}
    assert not free & blocked


def test_export_ics_is_a_valid_calendar_of_the_upcoming_appointments(
    redis_url: str, schedule_file: str, book: Book
) -> None:
    s1, s2 = book.slots("consulta", provider="ana")[0], book.slots("consulta", provider="bruno")[0]
    a = book.confirm(book.hold(s1.slot_id, ANA, "i-1").id, ANA, "i-2")
    b = book.confirm(book.hold(s2.slot_id, BIA, "i-3").id, BIA, "i-4")
    done = wsm(redis_url, schedule_file, "schedule", "export", "--ics")
    assert done.returncode == 0, done.stderr
    cal = Calendar.from_ical(done.stdout)
    events = {str(e["uid"]): e for e in cal.walk("VEVENT")}
    assert set(events) == {f"{a.id}@wsm", f"{b.id}@wsm"}
    event = events[f"{a.id}@wsm"]
    assert event.decoded("dtstart") == a.start_dt and event.decoded("dtend") == a.end_dt
    assert str(event["status"]) == "CONFIRMED" and "Dra. Ana" in str(event["summary"])
    assert cal.walk("VTIMEZONE")  # the zone travels with the file
    only = Calendar.from_ical(
        wsm(redis_url, schedule_file, "schedule", "export", "--ics", "--provider", "bruno").stdout
    )
    assert [str(e["uid"]) for e in only.walk("VEVENT")] == [f"{b.id}@wsm"]
    rows = lines(wsm(redis_url, schedule_file, "schedule", "export", "--json"))
    assert {x["id"] for x in rows} == {a.id, b.id}


def test_a_persons_export_and_erase_include_their_appointments(
    redis_url: str, schedule_file: str, book: Book, r: redis.Redis
) -> None:
    slot = book.slots("consulta", provider="ana")[0]
    a = book.confirm(book.hold(slot.slot_id, ANA, "p-1").id, ANA, "p-2")
    book.join_waitlist(ANA, "exame")
    other = book.hold(book.slots("consulta", provider="bruno")[0].slot_id, BIA, "p-3")
    env = dict(os.environ, REDIS_URL=redis_url)
    exported = subprocess.run([WSM, "export", "--chat", ANA], env=env, capture_output=True, text=True, timeout=60)
    doc = json.loads(exported.stdout)
    assert [x["id"] for x in doc["schedule"]["appointments"]] == [a.id]
    assert [w["service"] for w in doc["schedule"]["waitlist"]] == ["exame"]
    erased = subprocess.run([WSM, "erase", "--chat", ANA, "--yes"], env=env, capture_output=True, text=True, timeout=60)
    assert erased.returncode == 0 and "1 appointments" in erased.stdout
    assert book.get(a.id) is None and slot.slot_id in {s.slot_id for s in book.slots("consulta", provider="ana")}
    leftovers = [k for k, _ in snapshot(r).items() if ANA in k or ANA in (r.get(k) if r.type(k) == "string" else "")]
    assert leftovers == []
    assert all(ANA not in x for x in r.lrange(book.keys.calendar_outbox, 0, -1))
    assert book.get(other.id) is not None
