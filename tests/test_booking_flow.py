"""Booking through the worker and the notifier with a real Book on a private Redis and the WAHA simulator:
reminders (once, never for a cancelled appointment, answered outside any conversation), waitlist offers
(accepted, passed on when unanswered), and 20 people racing for one slot."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis

from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.booking_helpers import always_open
from wsm.attendance.notifier import Notifier
from wsm.attendance.worker import Worker
from wsm.conversation.engine import Engine
from wsm.conversation.flow import load_flow
from wsm.core.clock import now_ms
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.schedule.book import Book
from wsm.store import keys
from wsm.store.events import MESSAGE_RECEIVED, TICK, WakeUp
from wsm.waha.client import WahaClient
from wsm.waha.event import parse_event

A, B, C = "5511933330001@c.us", "5511933330002@c.us", "5511933330003@c.us"
SK, SCHK = keys.SessionKeys("default"), keys.ScheduleKeys("default")


class Clinic:
    def __init__(self, r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch, active: int = 1) -> None:
        env = {"WSM_TYPING_MS_PER_CHAR": "0", "WSM_MAX_ACTIVE": str(active), "WSM_NOTIFY_MIN_INTERVAL_S": "0"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings.from_env()
        self.r, self.sim = r, sim
        waha = WahaClient(sim.url, timeout_s=5)
        schedule = always_open()
        engine = Engine(load_flow())
        self.ingestor = Ingestor(r, settings)
        self.worker = Worker(r, settings, waha, engine, schedule)
        self.notifier = Notifier(r, settings, waha, engine, schedule)
        self.book = Book(r, schedule, "default")

    def say(self, chat: str, text: str) -> None:
        self.ingestor.ingest(parse_event(wp.message_event(chat, text)))
        self.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", chat))

    def tick(self) -> None:
        self.notifier.on_event(WakeUp(TICK))
        self.worker.on_event(WakeUp(TICK))

    def texts(self, chat: str) -> list[str]:
        return [c.json["text"] for c in self.sim.sent_texts(chat)]

    def book_first_slot(self, chat: str) -> str:
        for text in ("oi", "1", "Maria", "amanhã", "1", "sim"):  # tomorrow: its reminder is ahead
            self.say(chat, text)
        assert "Agendado!" in self.texts(chat)[-1]
        [apt] = self.book.appointments(chat)
        return apt.id

    def make_reminders_due(self) -> None:
        """Time passes: every reminder is due now."""
        for member in self.r.zrange(SCHK.reminders_due, 0, -1):
            self.r.zadd(SCHK.reminders_due, {member: now_ms() - 1})


@pytest.fixture
def sim() -> Iterator[WahaSimulator]:
    with WahaSimulator() as s:
        yield s


@pytest.fixture
def clinic(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> Clinic:
    return Clinic(r, sim, monkeypatch)


def test_a_reminder_is_sent_once_and_answered_outside_any_conversation(clinic: Clinic) -> None:
    apt = clinic.book_first_slot(A)
    assert clinic.r.zcard(SCHK.reminders_due) == 1
    clinic.tick()
    assert not any(t.startswith("Lembrete") for t in clinic.texts(A))  # not due yet
    clinic.make_reminders_due()
    clinic.tick()
    clinic.tick()
    reminders = [t for t in clinic.texts(A) if t.startswith("Lembrete: Consulta")]
    assert len(reminders) == 1 and "1. Confirmar\n2. Remarcar\n3. Cancelar" in reminders[0]
    assert clinic.r.zcard(SCHK.reminders_due) == 0
    assert clinic.r.hget(SK.chat(A).state, "status") == "closed"  # the booking conversation had ended
    clinic.say(A, "3")
    assert clinic.texts(A)[-1].startswith("Cancelar Consulta")
    clinic.say(A, "sim")
    assert "Agendamento cancelado" in clinic.texts(A)[-1]
    assert clinic.book.get(apt).status == "cancelled"


def test_a_reminder_confirmed_frees_the_slot(clinic: Clinic) -> None:
    clinic.book_first_slot(A)
    clinic.make_reminders_due()
    clinic.tick()
    clinic.say(A, "1")
    assert clinic.texts(A)[-1].startswith("Obrigado! Esperamos você")
    assert clinic.r.zcard(SK.active) == 0


def test_no_reminder_for_a_cancelled_or_moved_appointment(clinic: Clinic) -> None:
    apt = clinic.book_first_slot(A)
    member = clinic.r.zrange(SCHK.reminders_due, 0, -1)[0]
    clinic.book.cancel(apt, A, "test-cancel")
    assert clinic.r.zcard(SCHK.reminders_due) == 0  # the core removes it
    clinic.r.zadd(SCHK.reminders_due, {member: now_ms() - 1})  # ... and were a stale one left, it is checked
    before = len(clinic.texts(A))
    clinic.tick()
    assert len(clinic.texts(A)) == before
    assert clinic.r.zcard(SCHK.reminders_due) == 0


def test_reschedule_from_a_reminder(clinic: Clinic) -> None:
    apt = clinic.book_first_slot(A)
    old_start = clinic.book.get(apt).start
    clinic.make_reminders_due()
    clinic.tick()
    clinic.say(A, "2")
    assert "Horários livres para Consulta:" in clinic.texts(A)[-1]
    clinic.say(A, "2")
    assert clinic.texts(A)[-1].startswith("Remarcar Consulta para")
    clinic.say(A, "sim")
    assert clinic.texts(A)[-1].startswith("Remarcado! ✅")
    moved = clinic.book.get(apt)
    assert moved.status == "booked" and moved.start != old_start


def test_a_waitlist_offer_is_sent_and_accepted(clinic: Clinic) -> None:
    apt = clinic.book_first_slot(A)
    clinic.book.join_waitlist(B, "consulta")
    clinic.book.cancel(apt, A, "a-cancels")
    clinic.tick()
    clinic.tick()
    offers = [t for t in clinic.texts(B) if t.startswith("Abriu um horário")]
    assert len(offers) == 1 and "Quer ficar com ele?\n1. Sim\n2. Não" in offers[0]
    clinic.say(B, "sim")
    assert clinic.texts(B)[-1].startswith("Agendado! ✅")
    [mine] = clinic.book.appointments(B)
    assert mine.status == "booked"


def test_an_unanswered_offer_passes_to_the_next_person(clinic: Clinic) -> None:
    apt = clinic.book_first_slot(A)
    clinic.book.join_waitlist(B, "consulta")
    clinic.book.join_waitlist(C, "consulta")
    clinic.book.cancel(apt, A, "a-cancels")
    clinic.tick()
    assert any(t.startswith("Abriu um horário") for t in clinic.texts(B))
    for member in clinic.r.zrange(SK.offers_sent, 0, -1):
        clinic.r.zadd(SK.offers_sent, {member: now_ms() - 1})  # B's time to answer is up
    clinic.tick()
    clinic.tick()
    assert clinic.book.appointments(B) == []
    assert any(t.startswith("Abriu um horário") for t in clinic.texts(C))
    clinic.say(B, "sim")  # too late: it went to C
    assert not clinic.book.appointments(B)


def test_a_declined_offer_passes_on_at_once(clinic: Clinic) -> None:
    apt = clinic.book_first_slot(A)
    clinic.book.join_waitlist(B, "consulta")
    clinic.book.join_waitlist(C, "consulta")
    clinic.book.cancel(apt, A, "a-cancels")
    clinic.tick()
    clinic.say(B, "não")
    assert "passamos a vaga" in clinic.texts(B)[-1]
    clinic.tick()
    assert any(t.startswith("Abriu um horário") for t in clinic.texts(C))


def test_twenty_people_racing_for_one_slot_one_booking_nineteen_fresh_offers(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic = Clinic(r, sim, monkeypatch, active=20)
    chats = [f"55119444400{i:02d}@c.us" for i in range(20)]
    for chat in chats:
        for text in ("oi", "1", f"Pessoa {chat[-7:-5]}"):
            clinic.say(chat, text)
    first = {clinic.texts(chat)[-1].splitlines()[3] for chat in chats}  # "1. <the first slot>"
    assert len(first) == 1  # everyone was offered the same first slot
    for chat in chats:
        clinic.ingestor.ingest(parse_event(wp.message_event(chat, "1")))
    start = threading.Barrier(len(chats))

    def pick(chat: str) -> None:
        start.wait()
        clinic.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", chat))

    threads = [threading.Thread(target=pick, args=(chat,)) for chat in chats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = [clinic.texts(chat)[-1] for chat in chats]
    winners = [a for a in answers if a.startswith("Confirma Consulta")]
    losers = [a for a in answers if "esse horário acabou de ser ocupado" in a]
    assert len(winners) == 1 and len(losers) == 19
    taken = next(iter(first)).split(". ", 1)[1]
    assert all("Horários livres para Consulta:" in a and taken not in a for a in losers)
    winner = chats[answers.index(winners[0])]
    clinic.say(winner, "sim")
    assert clinic.texts(winner)[-1].startswith("Agendado!")
    booked = [a for chat in chats for a in clinic.book.appointments(chat)]
    assert len(booked) == 1 and booked[0].chat == winner
    loser = next(chat for chat in chats if chat != winner)  # chats[0] wins one race in twenty
    assert json.loads(clinic.r.hget(SK.chat(loser).state, "booking") or "{}").get("mode") in (None, "pick")
