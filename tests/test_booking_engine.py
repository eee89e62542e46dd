"""The engine's schedule step with the in-memory booking port (tests/booking_memory.py) and a fixed "now".

Now is Wednesday 2026-12-02 09:00 in São Paulo; the default schedule (Clínica Exemplo) has Dra. Ana
(consulta: Mon-Fri mornings, Wed 08-12) and Dr. Bruno (consulta: Wed 13-21...), 60 min notice.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.booking_memory import MemoryBook
from wsm.conversation.engine import Engine
from wsm.conversation.flow import FlowError, load_flow, parse_flow
from wsm.schedule.config import load_schedule
from wsm.store.turn import Turn

SP = ZoneInfo("America/Sao_Paulo")
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=SP)
CHAT = "5511900000001@c.us"


class Chat:
    """One person talking to the engine; state is kept between turns as the worker would."""

    def __init__(self, book: MemoryBook, chat: str = CHAT) -> None:
        self.book = book
        self.engine = Engine(load_flow(), book, clock=lambda: book.now)
        self.chat = chat
        self.state: dict[str, str] = {}
        self.n = 0
        self.last: Turn = Turn()

    def say(self, *texts: str) -> str:
        ids = []
        for _ in texts:
            self.n += 1
            ids.append(f"{self.chat}-m{self.n}")
        self.last = self.engine.turn(self.state, list(texts), self.chat, ids)
        self.state.update(self.last.state)
        return self.last.text

    def to_booking(self) -> str:
        self.say("oi")
        self.say("1")
        return self.say("Maria Silva")


@pytest.fixture
def book() -> MemoryBook:
    return MemoryBook(load_schedule(None), NOW)


def test_booking_offers_slots_holds_confirms_and_ends(book: MemoryBook) -> None:
    chat = Chat(book)
    offer = chat.to_booking()
    assert "Horários livres para Consulta:" in offer
    assert "1. quarta 02/12 às 10:00 com Dra. Ana Souza" in offer  # 60 min notice: 10:00 is the first
    assert "6. ver mais horários" in offer
    confirm = chat.say("1")
    assert "Confirma Consulta quarta 02/12 às 10:00 com Dra. Ana Souza?" in confirm
    [apt] = book.appointments(CHAT)
    assert apt.status == "held"
    done = chat.say("Sim")
    assert "Agendado! ✅ Consulta quarta 02/12 às 10:00 com Dra. Ana Souza" in done
    assert "Até logo!" in done and chat.last.end == "done"
    assert book.get(apt.id).status == "booked"


def test_a_typed_date_and_time_narrows_the_search(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    offer = chat.say("sexta às 14h")
    assert offer.splitlines()[1] == "1. sexta 04/12 às 14:00 com Dra. Ana Souza"
    offer = chat.say("segunda de manhã")
    lines = offer.splitlines()
    assert lines[1].startswith("1. segunda 07/12 às 08:00")
    assert all("segunda 07/12" in line for line in lines[1:6])


def test_see_more_shows_the_next_page(book: MemoryBook) -> None:
    chat = Chat(book)
    first = chat.to_booking().splitlines()[1:6]
    second = chat.say("6").splitlines()[1:6]
    assert first and second and not set(first) & set(second)


def test_a_slot_taken_meanwhile_is_told_and_fresh_options_follow(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    book.take("ana.consulta.20261202T1000")
    answer = chat.say("1")
    assert "esse horário acabou de ser ocupado" in answer
    assert "1. quarta 02/12 às 10:00" not in answer and "Horários livres" in answer
    assert book.appointments(CHAT) == []


def test_an_expired_hold_is_told_and_fresh_options_follow(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    chat.say("1")
    book.later(11)  # hold_min is 10
    answer = chat.say("sim")
    assert "O tempo para confirmar acabou" in answer and "Horários livres" in answer
    assert book.appointments(CHAT) == []


def test_saying_no_releases_the_hold_and_offers_again(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    chat.say("1")
    assert "Horários livres" in chat.say("2")
    assert book.appointments(CHAT) == []


def test_a_retried_turn_books_once(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    before = dict(chat.state)
    first = chat.engine.turn(before, ["1"], CHAT, ["retry-me"])
    again = chat.engine.turn(before, ["1"], CHAT, ["retry-me"])  # the commit was lost; the worker runs it again
    assert first.text == again.text
    assert len(book.appointments(CHAT)) == 1


def test_nothing_fits_offers_the_waitlist(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    answer = chat.say("domingo")
    assert "Não encontrei horários livres para domingo 06/12" in answer and "lista de espera" in answer
    joined = chat.say("1")
    assert "você está na lista de espera" in joined
    assert book.waitlist == [(CHAT, "consulta", None, date(2026, 12, 6))]


def test_dates_not_understood_or_past_are_told(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    assert "Não entendi a data" in chat.say("31/02")
    assert "Não entendi a data" in chat.say("qualquer coisa")
    assert book.appointments(CHAT) == []


def test_leaving_with_a_held_slot_releases_it(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.to_booking()
    chat.say("1")
    chat.say("sair")
    assert book.appointments(CHAT) == []


def booked(book: MemoryBook, slot_id: str = "ana.consulta.20261204T1000") -> str:
    apt = book.hold(slot_id, CHAT, "setup-hold-" + slot_id)
    return book.confirm(apt.id, CHAT, "setup-confirm-" + slot_id).id


def test_my_appointments_lists_them(book: MemoryBook) -> None:
    booked(book)
    chat = Chat(book)
    chat.say("oi")
    listed = chat.say("meus agendamentos")
    assert "Seus agendamentos:\n• Consulta sexta 04/12 às 10:00 com Dra. Ana Souza" in listed
    assert "Como posso ajudar?" in listed


def test_no_appointments_is_told(book: MemoryBook) -> None:
    chat = Chat(book)
    chat.say("oi")
    assert "Você não tem agendamentos futuros" in chat.say("meus agendamentos")
    assert "Você não tem agendamentos futuros" in chat.say("remarcar")


def test_cancel_with_confirmation(book: MemoryBook) -> None:
    apt = booked(book)
    chat = Chat(book)
    chat.say("oi")
    assert "Cancelar Consulta sexta 04/12 às 10:00 com Dra. Ana Souza?" in chat.say("cancelar")
    assert "Agendamento cancelado: Consulta sexta 04/12 às 10:00" in chat.say("1")
    assert book.get(apt).status == "cancelled"


def test_cancel_answered_no_keeps_it(book: MemoryBook) -> None:
    apt = booked(book)
    chat = Chat(book)
    chat.say("oi")
    chat.say("cancelar")
    assert "nada foi alterado" in chat.say("não")
    assert book.get(apt).status == "booked"


def test_reschedule_through_slots_and_confirmation(book: MemoryBook) -> None:
    apt = booked(book)
    chat = Chat(book)
    chat.say("oi")
    offer = chat.say("remarcar")
    assert "Horários livres para Consulta:" in offer
    chat.say("quinta às 9h")
    assert "Remarcar Consulta para quinta 03/12 às 09:00 com Dra. Ana Souza?" in chat.say("1")
    assert "Remarcado! ✅ Consulta quinta 03/12 às 09:00" in chat.say("sim")
    moved = book.get(apt)
    assert moved.status == "booked" and moved.start.startswith("2026-12-03T09:00")


def test_with_two_appointments_the_person_picks_one(book: MemoryBook) -> None:
    booked(book)
    second = booked(book, "ana.consulta.20261207T0800")
    chat = Chat(book)
    chat.say("oi")
    pick = chat.say("cancelar")
    assert "Qual agendamento?\n1. Consulta sexta 04/12" in pick and "2. Consulta segunda 07/12" in pick
    assert "Cancelar Consulta segunda 07/12" in chat.say("2")
    chat.say("sim")
    assert book.get(second).status == "cancelled"


def test_a_reminder_answer_works_outside_any_conversation(book: MemoryBook) -> None:
    apt = booked(book)
    chat = Chat(book)
    chat.state = {"notice": json.dumps({"kind": "reminder", "apt": apt}), "conv": "0"}
    answer = chat.say("3")
    assert "Cancelar Consulta sexta 04/12" in answer
    assert "Agendamento cancelado" in chat.say("1")
    assert book.get(apt).status == "cancelled"


def test_a_reminder_confirmed_ends_the_conversation(book: MemoryBook) -> None:
    apt = booked(book)
    chat = Chat(book)
    chat.state = {"notice": json.dumps({"kind": "reminder", "apt": apt}), "conv": "0"}
    assert "Esperamos você sexta 04/12 às 10:00" in chat.say("1")
    assert chat.last.end == "done" and chat.state["notice"] == ""


def test_a_reminder_then_something_else_is_a_normal_conversation(book: MemoryBook) -> None:
    apt = booked(book)
    chat = Chat(book)
    chat.state = {"notice": json.dumps({"kind": "reminder", "apt": apt}), "conv": "0"}
    assert "Como posso ajudar?" in chat.say("bom dia")
    assert book.get(apt).status == "booked"


def test_a_waitlist_offer_accepted_books_it(book: MemoryBook) -> None:
    held = book.hold("ana.consulta.20261204T1000", CHAT, "core-offer")  # the core holds a freed slot for us
    chat = Chat(book)
    chat.state = {"notice": json.dumps({"kind": "offer", "apt": held.id}), "conv": "0"}
    assert "Agendado! ✅ Consulta sexta 04/12 às 10:00" in chat.say("sim")
    assert book.get(held.id).status == "booked"


def test_a_waitlist_offer_declined_releases_it(book: MemoryBook) -> None:
    held = book.hold("ana.consulta.20261204T1000", CHAT, "core-offer")
    chat = Chat(book)
    chat.state = {"notice": json.dumps({"kind": "offer", "apt": held.id}), "conv": "0"}
    assert "passamos a vaga" in chat.say("não")
    assert book.get(held.id).status == "cancelled"


def test_without_a_booking_port_the_step_says_so_and_goes_on() -> None:
    engine = Engine(load_flow())
    state: dict[str, str] = {}
    for text in ("oi", "1"):
        state.update(engine.turn(state, [text]).state)
    turn = engine.turn(state, ["Maria"])
    assert "indisponível no momento" in turn.text


def test_schedule_step_is_validated() -> None:
    base = {"start": "a", "texts": {t: "x" for t in load_flow().texts}}
    with pytest.raises(FlowError) as e:
        parse_flow({**base, "steps": {"a": {"schedule": {"action": "dance", "colour": 1}}}})
    message = str(e.value)
    assert "schedule action must be one of" in message
    assert "unknown schedule field(s) colour" in message and "has no 'next'" in message
    with pytest.raises(FlowError, match="needs a 'service'"):
        parse_flow({**base, "steps": {"a": {"schedule": {}, "next": "a"}}})
    flow = parse_flow({**base, "steps": {"a": {"schedule": {"service": "massagem", "provider": "zé"}, "next": "a"}}})
    schedule = load_schedule(None)
    assert flow.schedule_problems(set(schedule.services), set(schedule.providers)) == [
        "step 'a' books unknown service 'massagem'",
        "step 'a' books with unknown provider 'zé'",
    ]
    assert load_flow().schedule_problems(set(schedule.services), set(schedule.providers)) == []
