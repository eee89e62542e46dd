"""The appointment book in a real Redis: holds, confirms, cancels, reschedules, blocks, waitlist, idempotency."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
import redis

from tests.conftest import snapshot
from tests.schedule_helpers import Clock, ms, schedule
from wsm.schedule.book import Book
from wsm.schedule.errors import (
    BadSlot,
    BookingError,
    HoldExpired,
    LimitReached,
    NotYours,
    SlotUnavailable,
    UnknownAppointment,
)
from wsm.schedule.model import AppointmentStatus
from wsm.store.keys import ScheduleKeys

A, B, C = "5511900000001@c.us", "5511900000002@c.us", "5511900000003@c.us"
SLOT = "ana.consulta.20261202T1000"  # Wednesday 2 Dec 2026, 10:00 in São Paulo


@pytest.fixture
def clock() -> Clock:
    return Clock(ms("2026-12-01 09:00"))


@pytest.fixture
def book(r: redis.Redis, clock: Clock) -> Book:
    return Book(r, schedule(), "default", clock=clock)


def test_hold_then_confirm_books_the_slot_and_it_leaves_the_free_list(book: Book, r: redis.Redis) -> None:
    assert SLOT in [s.slot_id for s in book.slots("consulta", date_from=date(2026, 12, 2), limit=50)]
    held = book.hold(SLOT, A, "req-1")
    assert held.status == AppointmentStatus.HELD and held.hold_expires_ms == ms("2026-12-01 09:10")
    assert (held.start, held.end) == ("2026-12-02T10:00:00-03:00", "2026-12-02T10:30:00-03:00")
    booked = book.confirm(held.id, A, "req-2")
    assert booked.id == held.id and booked.status == AppointmentStatus.BOOKED and booked.hold_expires_ms is None
    free = [s.slot_id for s in book.slots("consulta", provider="ana", date_from=date(2026, 12, 2), limit=50)]
    # 10:00 is booked, and its 10 min buffer makes 10:30 overlap too (10:00-10:40)
    assert SLOT not in free and "ana.consulta.20261202T1030" not in free and "ana.consulta.20261202T1100" in free
    assert book.get(held.id) == booked
    assert [a.id for a in book.appointments(A)] == [held.id]
    assert [a.id for a in book.agenda(date(2026, 12, 2))] == [held.id]
    reminders = r.zrange(book.keys.reminders_due, 0, -1, withscores=True)
    assert reminders == [(f"{held.id}|1440", ms("2026-12-01 10:00")), (f"{held.id}|120", ms("2026-12-02 08:00"))]
    outbox = [json.loads(x) for x in r.lrange(book.keys.calendar_outbox, 0, -1)]
    assert [(x["id"], x["status"]) for x in outbox] == [(held.id, "booked")]


def test_a_second_chat_cannot_take_a_held_or_booked_slot_nor_an_overlapping_one(book: Book, r: redis.Redis) -> None:
    held = book.hold(SLOT, A, "a-1")
    before = snapshot(r)
    with pytest.raises(SlotUnavailable):
        book.hold(SLOT, B, "b-1")
    with pytest.raises(SlotUnavailable):  # exame 09:30-10:30 overlaps 10:00-10:40
        book.hold("ana.exame.20261202T0930", B, "b-2")
    after = snapshot(r)
    assert {k for k in after if k not in before} == {book.keys.request("b-1"), book.keys.request("b-2")}
    book.confirm(held.id, A, "a-2")
    with pytest.raises(SlotUnavailable):
        book.hold(SLOT, B, "b-3")
    assert book.hold("bruno.consulta.20261207T0800", B, "b-4").provider == "bruno"


def test_the_same_request_id_gives_the_first_answer_and_changes_nothing(book: Book, r: redis.Redis) -> None:
    first = book.hold(SLOT, A, "same")
    state = snapshot(r)
    assert book.hold(SLOT, A, "same") == first
    assert book.hold("ana.consulta.20261202T1400", A, "same") == first  # a retry, whatever it carries
    assert snapshot(r) == state
    with pytest.raises(SlotUnavailable):
        book.hold(SLOT, B, "other")
    with pytest.raises(SlotUnavailable):  # a refusal is remembered too
        book.hold(SLOT, B, "other")
    booked = book.confirm(first.id, A, "c-1")
    state = snapshot(r)
    assert book.confirm(first.id, A, "c-1") == booked
    assert snapshot(r) == state
    cancelled = book.cancel(first.id, A, "x-1")
    assert book.cancel(first.id, A, "x-1") == cancelled
    assert r.llen(book.keys.calendar_outbox) == 2


def test_a_new_hold_releases_the_chats_previous_hold(book: Book) -> None:
    first = book.hold(SLOT, A, "h-1")
    second = book.hold("ana.consulta.20261202T1400", A, "h-2")
    assert book.get(first.id).status == AppointmentStatus.CANCELLED and book.get(first.id).reason == "replaced"
    assert [a.id for a in book.appointments(A)] == [second.id]
    assert book.hold(SLOT, B, "h-3").chat == B


def test_an_expired_hold_is_free_and_cannot_be_confirmed(book: Book, clock: Clock, r: redis.Redis) -> None:
    held = book.hold(SLOT, A, "e-1")
    clock.advance(10)
    assert SLOT in [s.slot_id for s in book.slots("consulta", date_from=date(2026, 12, 2), limit=50)]
    assert book.get(held.id).status == AppointmentStatus.CANCELLED  # reads as run out before any script ran
    assert book.appointments(A) == []
    with pytest.raises(HoldExpired):
        book.confirm(held.id, A, "e-2")
    with pytest.raises(HoldExpired):
        book.confirm(held.id, A, "e-3")
    assert book.hold(SLOT, B, "e-4").chat == B
    assert r.zrange(book.keys.reminders_due, 0, -1) == []


def test_another_chat_taking_an_expired_hold_releases_it(book: Book, clock: Clock) -> None:
    held = book.hold(SLOT, A, "t-1")
    clock.advance(11)
    taken = book.hold(SLOT, B, "t-2")
    assert taken.chat == B
    assert book.get(held.id).reason == "hold_expired"
    with pytest.raises(HoldExpired):
        book.confirm(held.id, A, "t-3")


def test_expire_holds_releases_every_hold_that_ran_out(book: Book, clock: Clock, r: redis.Redis) -> None:
    book.hold(SLOT, A, "x-1")
    book.hold("ana.consulta.20261202T1400", B, "x-2")
    clock.advance(5)
    kept = book.hold("ana.consulta.20261202T1500", C, "x-3")
    clock.advance(6)
    assert book.expire_holds() == 2
    assert r.zrange(book.keys.holds, 0, -1) == [kept.id]
    assert r.zcard(book.keys.busy("ana")) == 1


def test_refusals_not_yours_unknown_bad_slot_and_missing_request_id(book: Book, r: redis.Redis) -> None:
    held = book.hold(SLOT, A, "n-1")
    with pytest.raises(NotYours):
        book.confirm(held.id, B, "n-2")
    with pytest.raises(NotYours):
        book.cancel(held.id, B, "n-3")
    with pytest.raises(UnknownAppointment):
        book.confirm("apt_000000000000", A, "n-4")
    before = snapshot(r)
    for bad in (
        "ana.consulta.20261202T1015",  # not on the 30-minute step
        "ana.consulta.20261201T0930",  # less than 60 min notice (now is 09:00)
        "ana.consulta.20261205T1000",  # Saturday: closed
        "ana.consulta.20261225T1000",  # Christmas
        "ana.consulta.20270601T1000",  # beyond the horizon
        "bruno.exame.20261207T0800",  # bruno does not do exams
        "nonsense",
    ):
        with pytest.raises(BadSlot):
            book.hold(bad, A, f"bad-{bad}")
    with pytest.raises(BookingError, match="request id"):
        book.hold(SLOT, A, "")
    assert snapshot(r) == before


def test_max_future_per_person(book: Book) -> None:
    for i, slot in enumerate(("ana.consulta.20261202T1000", "ana.consulta.20261202T1400")):
        book.confirm(book.hold(slot, A, f"l-{i}").id, A, f"lc-{i}")
    with pytest.raises(LimitReached):
        book.hold("ana.consulta.20261203T1000", A, "l-3")
    first = book.appointments(A)[0]
    book.cancel(first.id, A, "l-4")
    assert book.hold("ana.consulta.20261203T1000", A, "l-5").status == AppointmentStatus.HELD


def test_reschedule_moves_the_booking_keeps_its_id_and_moves_reminders(book: Book, r: redis.Redis) -> None:
    booked = book.confirm(book.hold(SLOT, A, "r-1").id, A, "r-2")
    blocker = book.confirm(book.hold("ana.consulta.20261203T1000", B, "r-3").id, B, "r-4")
    before = snapshot(r)
    with pytest.raises(SlotUnavailable):
        book.reschedule(booked.id, "ana.consulta.20261203T1000", A, "r-5")
    with pytest.raises(NotYours):
        book.reschedule(booked.id, "ana.consulta.20261203T1400", B, "r-6")
    with pytest.raises(BadSlot):
        book.reschedule(booked.id, "ana.exame.20261203T1400", A, "r-7")
    changed = {k for k, v in snapshot(r).items() if before.get(k) != v}
    assert changed == {book.keys.request(x) for x in ("r-5", "r-6", "r-7")}
    moved = book.reschedule(booked.id, "ana.consulta.20261203T1400", A, "r-8")
    assert moved.id == booked.id and moved.start == "2026-12-03T14:00:00-03:00" and moved.status == "booked"
    assert SLOT in [s.slot_id for s in book.slots("consulta", date_from=date(2026, 12, 2), limit=50)]
    due = dict(r.zrange(book.keys.reminders_due, 0, -1, withscores=True))
    assert due[f"{booked.id}|120"] == ms("2026-12-03 12:00")
    assert blocker.id != booked.id
    # moving onto an overlapping time of its own old slot is fine: it does not conflict with itself
    assert book.reschedule(booked.id, "ana.consulta.20261203T1430", A, "r-9").start.startswith("2026-12-03T14:30")


def test_cancel_frees_the_slot_removes_reminders_and_tells_the_calendar(book: Book, r: redis.Redis) -> None:
    booked = book.confirm(book.hold(SLOT, A, "c-1").id, A, "c-2")
    cancelled = book.cancel(booked.id, None, "c-3")  # an operator
    assert cancelled.status == AppointmentStatus.CANCELLED and cancelled.reason == "operator"
    assert r.zcard(book.keys.reminders_due) == 0
    assert json.loads(r.lrange(book.keys.calendar_outbox, -1, -1)[0])["status"] == "cancelled"
    assert book.agenda(date(2026, 12, 2)) == []
    assert book.appointments(A) == [] and [a.id for a in book.appointments(A, upcoming_only=False)] == [booked.id]
    assert book.hold(SLOT, B, "c-4").chat == B


def test_block_removes_slots_and_lists_appointments_already_there(book: Book) -> None:
    booked = book.confirm(book.hold(SLOT, A, "b-1").id, A, "b-2")
    tz = book.schedule.tz
    block = book.block("ana", datetime(2026, 12, 2, 10, 30, tzinfo=tz), datetime(2026, 12, 2, 12, tzinfo=tz), "b-3")
    assert block["overlapping"] == [booked.id] and block["id"].startswith("blk_")
    day = [s.slot_id for s in book.slots("consulta", provider="ana", date_from=date(2026, 12, 2), limit=50)]
    morning = [s.rpartition("T")[2] for s in day if s.startswith("ana.consulta.20261202T") and s[-4:] < "1300"]
    assert morning == ["0800", "0830", "0900"]  # 09:30 + 30 min + 10 min buffer reaches the 10:00 booking
    with pytest.raises(SlotUnavailable):
        book.hold("ana.consulta.20261202T1100", B, "b-4")
    with pytest.raises(BadSlot):
        book.block("ana", datetime(2026, 12, 2, 12, tzinfo=tz), datetime(2026, 12, 2, 11, tzinfo=tz), "b-5")
    with pytest.raises(BadSlot):
        book.block("zeca", datetime(2026, 12, 2, 11, tzinfo=tz), datetime(2026, 12, 2, 12, tzinfo=tz), "b-6")


def test_a_cancel_gives_the_freed_slot_to_the_first_matching_waiting_chat(book: Book, r: redis.Redis) -> None:
    booked = book.confirm(book.hold(SLOT, A, "w-1").id, A, "w-2")
    book.join_waitlist(B, "consulta", provider="ana", day=date(2026, 12, 9))  # another day: no match
    book.join_waitlist(C, "consulta", day=date(2026, 12, 2))
    book.cancel(booked.id, A, "w-3")
    offers = book.offers()
    assert [(o["chat"], o["appointment"]["slot_id"]) for o in offers] == [(C, SLOT)]
    offered = book.get(offers[0]["appointment"]["id"])
    assert offered.chat == C and offered.status == AppointmentStatus.HELD
    assert book.confirm(offered.id, C, "w-4").status == AppointmentStatus.BOOKED
    assert [json.loads(x)["chat"] for x in r.lrange(book.keys.waitlist, 0, -1)] == [B]


def test_erase_chat_removes_every_appointment_record_of_the_person(book: Book, r: redis.Redis) -> None:
    booked = book.confirm(book.hold(SLOT, A, "z-1").id, A, "z-2")
    book.join_waitlist(A, "exame")
    other = book.hold("ana.consulta.20261202T1400", B, "z-3")
    assert book.erase_chat(A) == 1
    assert book.get(booked.id) is None
    assert SLOT in [s.slot_id for s in book.slots("consulta", date_from=date(2026, 12, 2), limit=50)]
    assert not [k for k in r.keys("*") if A in k and "req:" not in k]
    assert r.zcard(book.keys.reminders_due) == 0 and r.llen(book.keys.waitlist) == 0
    assert all(A not in x for x in r.lrange(book.keys.calendar_outbox, 0, -1))
    assert book.get(other.id) is not None


def test_every_schedule_key_shares_the_session_hash_tag(book: Book, r: redis.Redis) -> None:
    book.confirm(book.hold(SLOT, A, "k-1").id, A, "k-2")
    book.join_waitlist(B, "consulta")
    assert r.keys("*") and all(k.startswith("wsm:{default}:") for k in r.keys("*"))
    assert ScheduleKeys("other").prefix == "wsm:{other}:sched:"
