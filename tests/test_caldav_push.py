"""Bookings reach the clinic's CalDAV calendar: a real Radicale server and a real Redis, both started here."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis

from wsm.attendance.notifier import Notifier
from wsm.conversation.engine import Engine
from wsm.conversation.flow import load_flow
from wsm.core.clock import now_ms
from wsm.core.settings import Settings
from wsm.schedule.book import Book
from wsm.schedule.caldav_client import CalDavCalendars
from wsm.schedule.caldav_push import UID_SUFFIX, CalendarPush
from wsm.schedule.config import load_schedule
from wsm.store import keys
from wsm.store.events import TICK, WakeUp
from wsm.waha.client import WahaClient

pytest.importorskip("radicale", reason="radicale (requirements-dev.txt) is not installed")
from tests.caldav_server import PASSWORD, USER, RadicaleServer
from tests.schedule_helpers import Clock, ms, schedule

SESSION = "default"
CHAT = "5511988887777@c.us"
SCHEDULE = load_schedule(None)  # the shipped example: America/Sao_Paulo


@pytest.fixture(scope="module")
def radicale() -> Iterator[RadicaleServer]:
    with RadicaleServer() as server:
        yield server


@pytest.fixture
def settings(radicale: RadicaleServer, redis_url: str) -> Settings:
    """Pointed at Radicale, a calendar of its own per test, retries without delay unless a test says otherwise."""
    base = Settings.from_env()
    return dataclasses.replace(
        base,
        caldav_url=radicale.url,
        caldav_username=USER,
        caldav_password=PASSWORD,
        caldav_calendar=f"Agenda {uuid.uuid4().hex[:8]}",
        caldav_max_attempts=3,
        caldav_retry_base_ms=0,
    )


def apt(apt_id: str = "apt_0123456789ab", status: str = "booked", **kw: Any) -> dict[str, Any]:
    out = {
        "id": apt_id,
        "service": next(iter(SCHEDULE.services)),
        "provider": next(iter(SCHEDULE.providers)),
        "start": "2026-12-10T09:00:00-03:00",
        "end": "2026-12-10T09:30:00-03:00",
        "chat": CHAT,
        "status": status,
        "created_ms": 1,
        "changed_ms": 2,
    }
    out.update(kw)
    return out


def queue(r: redis.Redis, *apts: dict[str, Any] | str) -> None:
    """What the schedule scripts do after each change: RPUSH the appointment's JSON to calendar:outbox."""
    for a in apts:
        r.rpush(keys.ScheduleKeys(SESSION).calendar_outbox, a if isinstance(a, str) else json.dumps(a))


def pusher(r: redis.Redis, settings: Settings) -> CalendarPush:
    return CalendarPush(r, settings, schedule=SCHEDULE)


def on_server(settings: Settings, calendar: str | None = None, password: str = PASSWORD) -> list[Any]:
    """The events the server holds (read with a client of its own), as icalendar VEVENTs."""
    reader = CalDavCalendars(settings.caldav_url, USER, password)
    return [e.icalendar_component for e in reader.events(calendar or settings.caldav_calendar)]


def raw_on_server(settings: Settings) -> str:
    reader = CalDavCalendars(settings.caldav_url, USER, PASSWORD)
    return "".join(e.data for e in reader.events(settings.caldav_calendar))


def pending(r: redis.Redis) -> int:
    ck = keys.CalendarKeys(SESSION)
    return r.llen(keys.ScheduleKeys(SESSION).calendar_outbox) + r.llen(ck.pushing)


def deadletters(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange(keys.DEADLETTER, 0, -1)]


def test_a_booking_appears_at_its_time_in_the_clinics_timezone(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt())
    result = pusher(r, settings).run(SESSION)
    assert (result.pushed, result.waiting, pending(r)) == (1, False, 0)
    [event] = on_server(settings)
    assert str(event["uid"]) == "apt_0123456789ab" + UID_SUFFIX
    start, end = event.decoded("dtstart"), event.decoded("dtend")
    assert str(start.tzinfo) == "America/Sao_Paulo" and event["dtstart"].params["TZID"] == "America/Sao_Paulo"
    assert (start.hour, start.minute, end.hour, end.minute) == (9, 0, 9, 30)
    assert start == datetime.fromisoformat("2026-12-10T12:00:00+00:00")
    service = next(iter(SCHEDULE.services.values()))
    assert service.name in str(event["summary"])
    assert "*********7777@c.us" in str(event["description"])
    assert "5511988887777" not in raw_on_server(settings)  # the full phone number never reaches the calendar


def test_a_reschedule_moves_the_same_event(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt(), apt(start="2026-12-11T14:00:00-03:00", end="2026-12-11T14:30:00-03:00", changed_ms=3))
    assert pusher(r, settings).run(SESSION).pushed == 2
    [event] = on_server(settings)
    assert event.decoded("dtstart") == datetime.fromisoformat("2026-12-11T14:00:00-03:00")
    assert event.decoded("dtend") == datetime.fromisoformat("2026-12-11T14:30:00-03:00")


def test_a_cancel_removes_the_event_and_others_stay(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt(), apt("apt_other"), apt(status="cancelled"))
    assert pusher(r, settings).run(SESSION).pushed == 3
    assert [str(e["uid"]) for e in on_server(settings)] == ["apt_other" + UID_SUFFIX]


def test_a_cancel_of_an_event_the_calendar_never_had_is_done(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt(status="cancelled"))
    result = pusher(r, settings).run(SESSION)
    assert (result.pushed, pending(r), deadletters(r)) == (1, 0, [])


def test_holds_stay_out_of_the_calendar_until_confirmed(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt(status="held"))
    assert pusher(r, settings).run(SESSION).pushed == 1
    assert on_server(settings) == [] and pending(r) == 0


def test_a_repeated_push_does_not_duplicate(r: redis.Redis, settings: Settings) -> None:
    """A crash after the server's answer and before the pop re-sends the entry: still one event."""
    queue(r, apt(), apt())
    push = pusher(r, settings)
    push.run(SESSION)
    r.rpush(keys.CalendarKeys(SESSION).pushing, json.dumps(apt()))  # as if the process died before its LREM
    push.run(SESSION)
    assert len(on_server(settings)) == 1 and pending(r) == 0


def test_an_entry_moved_before_a_crash_is_pushed_first(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt("apt_first"), apt("apt_second"))
    ck = keys.CalendarKeys(SESSION)
    r.lmove(keys.ScheduleKeys(SESSION).calendar_outbox, ck.pushing, "LEFT", "RIGHT")  # crashed after the move
    assert pusher(r, settings).run(SESSION).pushed == 2
    assert sorted(str(e["uid"]) for e in on_server(settings)) == ["apt_first@wsm.schedule", "apt_second@wsm.schedule"]


def test_server_down_keeps_every_change_and_pushes_it_when_back(r: redis.Redis, redis_url: str) -> None:
    with RadicaleServer() as server:
        s = dataclasses.replace(
            Settings.from_env(),
            caldav_url=server.url,
            caldav_username=USER,
            caldav_password=PASSWORD,
            caldav_calendar="Agendamentos",
            caldav_max_attempts=2,
            caldav_retry_base_ms=0,
            caldav_timeout_s=2,
        )
        push = pusher(r, s)
        queue(r, apt("apt_a"))
        push.run(SESSION)  # the calendar exists and the client knows it
        server.stop()
        queue(r, apt("apt_b"), apt("apt_c"), apt("apt_a", status="cancelled"))
        for _ in range(5):  # more failures than CALDAV_MAX_ATTEMPTS: an outage never dead-letters
            result = push.run(SESSION)
            assert (result.pushed, result.waiting) == (0, True)
        assert pending(r) == 3 and deadletters(r) == []
        assert "ConnectionError" in r.hget(keys.CalendarKeys(SESSION).state, "error")
        server.start()
        assert push.run(SESSION).pushed == 3
        assert pending(r) == 0 and not r.exists(keys.CalendarKeys(SESSION).state)
        assert sorted(str(e["uid"]) for e in on_server(s)) == ["apt_b@wsm.schedule", "apt_c@wsm.schedule"]


def test_a_refused_push_is_retried_then_dead_lettered_with_the_reason(r: redis.Redis, settings: Settings) -> None:
    wrong = dataclasses.replace(settings, caldav_password="wrong")
    queue(r, apt("apt_refused"), apt("apt_next"))
    push = pusher(r, wrong)
    for attempt in (1, 2):
        result = push.run(SESSION)
        assert (result.pushed, result.dead_lettered, result.waiting) == (0, 0, True)
        assert r.hget(keys.CalendarKeys(SESSION).state, "rejections") == str(attempt)
    assert pending(r) == 2 and deadletters(r) == []
    push.run(SESSION)  # the third refusal (CALDAV_MAX_ATTEMPTS=3) dead-letters the head, then the next one fails
    [dead] = deadletters(r)
    assert dead["kind"] == "calendar" and dead["session"] == SESSION and dead["appointment"] == "apt_refused"
    assert "Unauthorized" in dead["error"] and dead["at_ms"] <= now_ms()
    assert "7777" not in json.dumps(dead)  # no phone number in the dead-letter list
    assert pending(r) == 1  # apt_next waits its own turn
    assert pusher(r, settings).run(SESSION).pushed == 1  # the password fixed: the rest goes
    assert [str(e["uid"]) for e in on_server(settings)] == ["apt_next@wsm.schedule"]


def test_retries_wait_a_growing_delay(r: redis.Redis, settings: Settings) -> None:
    wrong = dataclasses.replace(settings, caldav_password="wrong", caldav_retry_base_ms=60_000)
    queue(r, apt())
    push = pusher(r, wrong)
    before = now_ms()
    push.run(SESSION)
    state = keys.CalendarKeys(SESSION).state
    first = int(r.hget(state, "retry_at_ms"))
    assert first >= before + 60_000
    assert push.run(SESSION).waiting and r.hget(state, "attempts") == "1"  # not tried again before its time
    r.hset(state, "retry_at_ms", 0)  # the delay has passed
    push.run(SESSION)
    assert int(r.hget(state, "retry_at_ms")) >= first + 60_000  # the second wait is twice the first


def test_an_entry_that_is_not_an_appointment_is_dead_lettered_and_the_rest_goes(
    r: redis.Redis, settings: Settings
) -> None:
    queue(r, "{not json", apt("apt_noofs", start="2026-12-10T09:00:00"), apt("bad id/x"), apt("apt_ok"))
    result = pusher(r, settings).run(SESSION)
    assert (result.pushed, result.dead_lettered) == (1, 3)
    errors = [d["error"] for d in deadletters(r)]
    assert any("not valid JSON" in e or "Expecting" in e for e in errors)
    assert any("no UTC offset" in e for e in errors) and any("id missing" in e for e in errors)
    assert [str(e["uid"]) for e in on_server(settings)] == ["apt_ok@wsm.schedule"]


def test_one_calendar_per_provider(r: redis.Redis, settings: Settings) -> None:
    s = dataclasses.replace(settings, caldav_per_provider=True)
    queue(r, apt("apt_p1", provider="ana"), apt("apt_p2", provider="bruno"))
    assert pusher(r, s).run(SESSION).pushed == 2
    base = s.caldav_calendar
    assert [str(e["uid"]) for e in on_server(s, f"{base} - ana")] == ["apt_p1@wsm.schedule"]
    assert [str(e["uid"]) for e in on_server(s, f"{base} - bruno")] == ["apt_p2@wsm.schedule"]


def test_another_pusher_holding_the_session_is_left_alone(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt())
    r.set(keys.CalendarKeys(SESSION).lock, "someone-else", px=60_000)
    result = pusher(r, settings).run(SESSION)
    assert (result.pushed, result.waiting, pending(r)) == (0, True, 1)


def test_off_without_caldav_url(r: redis.Redis, settings: Settings) -> None:
    queue(r, apt())
    push = CalendarPush(r, dataclasses.replace(settings, caldav_url=""))
    assert not push.enabled and push.sweep([SESSION]) == 0 and pending(r) == 1


def test_the_notifiers_tick_pushes(r: redis.Redis, settings: Settings) -> None:
    r.sadd(keys.SESSIONS, SESSION)
    queue(r, apt())
    notifier = Notifier(r, settings, WahaClient("http://127.0.0.1:9", "", 1), Engine(load_flow(settings.flow_file)))
    notifier.on_event(WakeUp(TICK))
    assert len(on_server(settings)) == 1 and pending(r) == 0


def test_the_password_is_not_in_the_logged_settings(settings: Settings) -> None:
    shown = settings.redacted()
    assert shown["caldav_password"] == "<set>" and PASSWORD not in json.dumps(shown, default=str)


def test_the_schedule_scripts_bookings_reach_the_calendar(r: redis.Redis, settings: Settings) -> None:
    """End to end with the real Book: hold (nothing), confirm (the event), reschedule (moved), cancel (gone)."""
    sched = schedule()
    book = Book(r, sched, SESSION, clock=Clock(ms("2026-12-01 09:00")))
    push = CalendarPush(r, settings, schedule=sched)
    held = book.hold("ana.consulta.20261202T1000", CHAT, "req-1")
    push.run(SESSION)
    assert on_server(settings) == []
    book.confirm(held.id, CHAT, "req-2")
    push.run(SESSION)
    [event] = on_server(settings)
    assert str(event["uid"]) == held.id + UID_SUFFIX and str(event["summary"]) == "Consulta - Dra. Ana"
    assert event.decoded("dtstart") == datetime.fromisoformat("2026-12-02T10:00:00-03:00")
    book.reschedule(held.id, "ana.consulta.20261203T1500", CHAT, "req-3")
    push.run(SESSION)
    [event] = on_server(settings)
    assert event.decoded("dtstart") == datetime.fromisoformat("2026-12-03T15:00:00-03:00")
    book.cancel(held.id, CHAT, "req-4")
    push.run(SESSION)
    assert on_server(settings) == [] and pending(r) == 0 and deadletters(r) == []
