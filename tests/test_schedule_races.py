"""No double booking, ever: concurrent confirms of one slot, and a state machine over every operation."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import datetime

import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.schedule_helpers import Clock, ms, schedule
from wsm.schedule.book import Book
from wsm.schedule.errors import BookingError, SlotUnavailable
from wsm.schedule.model import Appointment, AppointmentStatus

SLOT = "ana.consulta.20261202T1000"


def _race(redis_url: str, n: int, work: callable) -> list[object]:  # type: ignore[valid-type]
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        book = Book(client, schedule(), "default", clock=Clock(ms("2026-12-01 09:00")))
        barrier.wait()
        try:
            results[i] = work(book, i)
        except BookingError as e:
            results[i] = e
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_fifty_chats_holding_and_confirming_one_slot_make_exactly_one_appointment(
    redis_url: str, r: redis.Redis
) -> None:
    def hold_and_confirm(book: Book, i: int) -> Appointment:
        chat = f"55119000{i:05d}@c.us"
        held = book.hold(SLOT, chat, f"hold-{i}")
        return book.confirm(held.id, chat, f"confirm-{i}")

    results = _race(redis_url, 50, hold_and_confirm)
    booked = [x for x in results if isinstance(x, Appointment)]
    assert len(booked) == 1 and booked[0].status == AppointmentStatus.BOOKED
    assert Counter(type(x).__name__ for x in results) == {"Appointment": 1, "SlotUnavailable": 49}
    book = Book(r, schedule(), "default", clock=Clock(ms("2026-12-01 09:00")))
    assert [(a.id, a.status) for a in book.agenda()] == [(booked[0].id, "booked")]
    assert r.llen(book.keys.calendar_outbox) == 1


def test_fifty_confirms_of_one_hold_book_it_once(redis_url: str, r: redis.Redis) -> None:
    owner = Book(r, schedule(), "default", clock=Clock(ms("2026-12-01 09:00")))
    held = owner.hold(SLOT, "5511900000001@c.us", "the-hold")
    results = _race(redis_url, 50, lambda book, i: book.confirm(held.id, "5511900000001@c.us", f"c-{i}"))
    assert all(isinstance(x, Appointment) and x.status == "booked" and x.id == held.id for x in results)
    assert r.llen(owner.keys.calendar_outbox) == 1  # booked once: one calendar change, one set of reminders
    assert r.zcard(owner.keys.reminders_due) == 2


def test_fifty_chats_holding_the_same_slot_with_retries_get_one_hold(redis_url: str) -> None:
    results = _race(redis_url, 50, lambda book, i: book.hold(SLOT, f"c{i}@c.us", f"h-{i % 25}"))
    winners = {x.id for x in results if isinstance(x, Appointment)}
    assert len(winners) == 1  # the winner's retry (same request id) got the same hold back
    assert all(isinstance(x, (Appointment, SlotUnavailable)) for x in results)


CHATS = [f"551190000000{i}@c.us" for i in range(4)]
SLOTS = [
    f"{p}.{s}.2026120{d}T{t}"
    for p, s in (("ana", "consulta"), ("ana", "exame"), ("bruno", "consulta"), ("carla", "exame"))
    for d in (2, 3)
    for t in ("1000", "1030", "1100")
]


class BookingMachine(RuleBasedStateMachine):
    """Random holds, confirms, cancels, reschedules and clock moves across three providers."""

    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.client.flushall()
        self.clock = Clock(ms("2026-12-01 06:00"))
        self.schedule = schedule(
            max_future_per_person=2,
            providers=[
                {
                    "id": "ana",
                    "name": "Ana",
                    "services": ["consulta", "exame"],
                    "hours": {"wed": ["10:00-12:00"], "thu": ["10:00-12:00"]},
                },
                {
                    "id": "bruno",
                    "name": "Bruno",
                    "services": ["consulta"],
                    "hours": {"wed": ["10:00-12:00"], "thu": ["10:00-12:00"]},
                },
                {
                    "id": "carla",
                    "name": "Carla",
                    "services": ["exame"],
                    "hours": {"wed": ["10:00-12:00"], "thu": ["10:00-12:00"]},
                },
            ],
        )
        self.book = Book(self.client, self.schedule, "default", clock=self.clock)
        self.ids: list[str] = []
        self.booked: dict[str, str] = {}  # booked and not cancelled by us: id -> chat
        self.last: tuple[str, object, object] | None = None

    def teardown(self) -> None:
        self.client.close()

    def _do(self, name: str, call: callable) -> object:  # type: ignore[valid-type]
        request = uuid.uuid4().hex
        try:
            result: object = call(request)
        except BookingError as e:
            result = type(e)
        self.last = (request, call, result)
        return result

    @rule(chat=st.sampled_from(CHATS), slot=st.sampled_from(SLOTS))
    def hold(self, chat: str, slot: str) -> None:
        result = self._do("hold", lambda req: self.book.hold(slot, chat, req))
        if isinstance(result, Appointment):
            self.ids.append(result.id)

    @rule(chat=st.sampled_from(CHATS), pick=st.integers(0, 50))
    def confirm(self, chat: str, pick: int) -> None:
        if self.ids:
            target = self.ids[pick % len(self.ids)]
            result = self._do("confirm", lambda req: self.book.confirm(target, chat, req))
            if isinstance(result, Appointment):
                self.booked[result.id] = chat

    @rule(chat=st.sampled_from([*CHATS, None]), pick=st.integers(0, 50))
    def cancel(self, chat: str | None, pick: int) -> None:
        if self.ids:
            target = self.ids[pick % len(self.ids)]
            result = self._do("cancel", lambda req: self.book.cancel(target, chat, req))
            if isinstance(result, Appointment):
                self.booked.pop(result.id, None)

    @rule(chat=st.sampled_from(CHATS), pick=st.integers(0, 50), slot=st.sampled_from(SLOTS))
    def reschedule(self, chat: str, pick: int, slot: str) -> None:
        if self.ids:
            target = self.ids[pick % len(self.ids)]
            self._do("reschedule", lambda req: self.book.reschedule(target, slot, chat, req))

    @rule(chat=st.sampled_from(CHATS), service=st.sampled_from(["consulta", "exame"]))
    def wait(self, chat: str, service: str) -> None:
        self.book.join_waitlist(chat, service)

    @rule(minutes=st.integers(0, 15))
    def advance(self, minutes: int) -> None:
        self.clock.advance(minutes)

    @rule()
    def expire(self) -> None:
        self.book.expire_holds()

    @rule()
    def retry_last(self) -> None:
        if self.last is None:
            return
        request, call, first = self.last
        try:
            again: object = call(request)
        except BookingError as e:
            again = type(e)
        if isinstance(first, Appointment):
            assert isinstance(again, Appointment) and again.to_dict() == first.to_dict()
        else:
            assert again == first

    def _active(self) -> list[Appointment]:
        ids = self.client.zrange(self.book.keys.index, 0, -1)
        found = [self.book.get(i) for i in ids]
        return [a for a in found if a is not None and a.status in ("held", "booked")]

    @invariant()
    def no_two_overlapping_appointments_of_a_provider(self) -> None:
        by_provider: dict[str, list[tuple[datetime, datetime]]] = {}
        for a in self._active():
            buffer = self.schedule.services[a.service].buffer_min * 60
            span = (a.start_dt.timestamp(), a.end_dt.timestamp() + buffer)
            for other in by_provider.get(a.provider, []):
                assert span[1] <= other[0] or other[1] <= span[0], f"overlap at {a.provider}: {a}"
            by_provider.setdefault(a.provider, []).append(span)

    @invariant()
    def no_booked_appointment_is_lost(self) -> None:
        for appointment_id, chat in self.booked.items():
            a = self.book.get(appointment_id)
            assert a is not None and a.status == "booked" and a.chat == chat

    @invariant()
    def nobody_has_more_than_the_limit(self) -> None:
        counts = Counter(a.chat for a in self._active())
        assert all(n <= self.schedule.max_future_per_person for n in counts.values()), counts


def test_the_state_machine_never_double_books(redis_url: str) -> None:
    BookingMachine.redis_url = redis_url
    run_state_machine_as_test(
        BookingMachine,
        settings=settings(
            max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
