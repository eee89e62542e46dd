"""End to end with real processes: Redis, webhook, worker, notifier and router as `make local` runs them,
and a WAHA stand-in (a real HTTP server recording every call) that also posts the webhooks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests

from infra.platform.local import LocalSystem
from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests import booking_helpers
from tests.conftest import local_config
from wsm.conversation.history import read_history
from wsm.schedule.book import Book
from wsm.store import keys
from wsm.store.connection import get_redis

pytestmark = pytest.mark.slow
A, B, C = "5511911110001@c.us", "5511911110002@c.us", "5511911110003@c.us"
HMAC_KEY = "e2e-secret"
API_KEY = "e2e-api-key"


class System:
    def __init__(self, tmp_path, **env: str) -> None:
        webhook_port = free_port()
        self.sim = WahaSimulator(
            api_key=API_KEY,
            webhook_url=f"http://127.0.0.1:{webhook_port}/",
            hmac_key=HMAC_KEY,
            webhook_retry_delay_s=0.3,
        ).start()
        base = {
            "WEBHOOK_HMAC_KEY": HMAC_KEY,
            "WAHA_API_KEY": API_KEY,
            "WSM_MAX_ACTIVE": "1",
            "WSM_TICK_S": "0.5",
            "WSM_TYPING_MS_PER_CHAR": "1",
            "WSM_TYPING_MAX_MS": "20",
            "WSM_NOTIFY_MIN_INTERVAL_S": "0",
            "WSM_LEASE_MS": "3000",
            "WSM_SCHEDULE_FILE": str(booking_helpers.write(tmp_path / "schedule.yaml")),
        }
        config = local_config(tmp_path, {**os.environ, **base, **env}, waha_url=self.sim.url, webhook_port=webhook_port)
        config.env.pop("REDIS_URL", None)
        self.local = LocalSystem(config).start()

    def stop(self) -> None:
        self.local.stop()
        self.sim.stop()

    def say(self, chat: str, text: str) -> None:
        """Post a message webhook as WAHA would, and wait until the webhook acknowledged it."""
        delivery = self.sim.post_webhook(wp.message_event(chat, text))
        assert delivery.wait(10) and delivery.ok, f"webhook did not accept {text!r}"

    def wait_text(self, chat: str, needle: str, timeout_s: float = 30.0) -> list[str]:
        ok = self.sim.wait_for(lambda: any(needle in t for t in self.texts(chat)), timeout_s)
        assert ok, f"{chat}: no reply containing {needle!r} in {self.texts(chat)}"
        return self.texts(chat)

    def texts(self, chat: str) -> list[str]:
        return [c.json["text"] for c in self.sim.sent_texts(chat)]

    def wait_texts(self, chat: str, count: int, timeout_s: float = 15.0) -> list[str]:
        assert self.sim.wait_for(lambda: len(self.sim.sent_texts(chat)) >= count, timeout_s), (
            f"{chat}: expected {count} replies, got {self.texts(chat)}"
        )
        return self.texts(chat)

    def history(self, chat: str) -> list[dict]:
        return read_history(get_redis(self.local.redis_url), "default", chat)


@pytest.fixture
def system(tmp_path) -> Iterator[System]:
    s = System(tmp_path)
    yield s
    s.stop()


def test_queue_scenario_serve_wait_leave_idle_resume(tmp_path) -> None:
    s = System(tmp_path, WSM_IDLE_TIMEOUT_S="3")
    try:
        s.say(A, "oi")
        s.wait_texts(A, 1)
        s.say(B, "olá")
        assert s.wait_texts(B, 1)[0].startswith("Você é o 1º da fila")
        s.say(C, "bom dia")
        assert s.wait_texts(C, 1)[0].startswith("Você é o 2º da fila")
        assert "Como posso ajudar?" in s.texts(A)[0]

        s.say(A, "sair")
        assert s.wait_texts(A, 2)[-1].startswith("Atendimento encerrado")
        turn = s.wait_texts(B, 2)[-1]
        assert turn.startswith("É a sua vez!") and "Como posso ajudar?" in turn
        assert s.wait_texts(C, 2)[-1].startswith("Atualização: agora você é o 1º da fila")

        s.say(B, "1")
        assert "nome completo" in s.wait_texts(B, 3)[-1]
        idle = s.wait_texts(B, 4, timeout_s=20)[-1]  # B says nothing more
        assert idle.startswith("Encerramos este atendimento por inatividade")
        assert s.wait_texts(C, 3)[-1].startswith("É a sua vez!")
        s.say(C, "sair")
        s.wait_texts(C, 4)

        s.say(B, "voltei")
        back = s.wait_texts(B, 5)[-1]
        assert "Que bom te ver de novo" in back and "nome completo" in back
        calls = s.sim.calls
        assert all(c.headers.get("X-Api-Key") == API_KEY for c in calls)
        assert [c.path for c in calls if c.json.get("chatId") == A][:3] == [
            "/api/sendSeen",
            "/api/startTyping",
            "/api/stopTyping",
        ]
    finally:
        s.stop()


def test_duplicated_webhook_never_doubles_a_reply(system: System) -> None:
    body = wp.message_event(A, "oi")
    raw = wp.encode(body)
    headers = wp.headers(raw, body, HMAC_KEY)
    for _ in range(5):
        assert requests.post(system.local.webhook_url, data=raw, headers=headers, timeout=5).status_code == 200
    system.wait_texts(A, 1)
    time.sleep(1.5)  # a few ticks: nothing more may be sent
    assert len(system.texts(A)) == 1


def test_waha_failing_for_a_while_then_every_reply_arrives_once(system: System) -> None:
    system.sim.set_outage(500)
    system.say(A, "oi")
    system.say(B, "oi")
    system.say(C, "oi")
    time.sleep(2)
    assert system.texts(A) == []
    system.sim.clear_outage()
    system.wait_texts(A, 1, timeout_s=30)
    system.wait_texts(B, 1, timeout_s=30)
    system.wait_texts(C, 1, timeout_s=30)
    time.sleep(1.5)
    assert [len(system.texts(x)) for x in (A, B, C)] == [1, 1, 1]


def test_worker_killed_mid_conversation_loses_nothing_and_keeps_order(system: System) -> None:
    system.say(A, "oi")
    system.wait_texts(A, 1)
    system.say(A, "1")
    system.local["worker"].kill()  # make local's supervisor starts it again; nothing else does
    system.say(A, "Maria Souza")
    system.say(A, "amanhã às 15h")
    system.wait_text(A, "às 15:00 com Dra. Ana")
    time.sleep(1.5)
    replies = system.texts(A)
    assert "Horários livres para Consulta:" in replies[-1] and "Obrigado, Maria Souza!" in "".join(replies[-2:])
    inbound = [m["text"] for m in system.history(A) if m["direction"] == "in"]
    assert inbound == ["oi", "1", "Maria Souza", "amanhã às 15h"]
    # A kill between WAHA's answer and the outbox pop may resend that one reply (the design's only
    # duplicate window); anything more would be a bug.
    assert len(replies) - len(set(replies)) <= 1, replies


def test_throttling_holds_end_to_end(tmp_path) -> None:
    s = System(tmp_path, WSM_NOTIFY_MIN_INTERVAL_S="3600")
    try:
        chats = [f"55119222200{i:02d}@c.us" for i in range(4)]
        for chat in chats:
            s.say(chat, "oi")
            s.wait_texts(chat, 1)
        s.say(chats[0], "sair")
        s.wait_texts(chats[1], 2)  # admitted: its turn
        time.sleep(2)  # ticks pass; the others moved up but were told less than an hour ago
        assert len(s.texts(chats[2])) == 1 and len(s.texts(chats[3])) == 1
    finally:
        s.stop()


def test_book_be_reminded_reschedule_and_cancel_in_portuguese(system: System) -> None:
    r = get_redis(system.local.redis_url)
    due = keys.ScheduleKeys("default").reminders_due
    for text, expected in [
        ("oi", "Como posso ajudar?"),
        ("1", "nome completo"),
        ("Maria Souza", "Horários livres para Consulta:"),
        ("amanhã às 10h", "às 10:00 com Dra. Ana"),
        ("1", "Confirma Consulta"),
        ("sim", "Agendado! ✅ Consulta"),
    ]:
        system.say(A, text)
        system.wait_text(A, expected)
    booked = system.texts(A)[-1]
    assert "às 10:00 com Dra. Ana" in booked
    assert system.sim.wait_for(lambda: r.zcard(due) == 1, 10)
    for member in r.zrange(due, 0, -1):
        r.zadd(due, {member: 0})  # time passes: the reminder is due
    reminder = system.wait_text(A, "Lembrete: Consulta")[-1]
    assert "às 10:00 com Dra. Ana" in reminder and "1. Confirmar\n2. Remarcar\n3. Cancelar" in reminder

    system.say(A, "2")
    system.wait_text(A, "Horários livres para Consulta:")
    system.say(A, "amanhã às 16h")
    system.wait_text(A, "às 16:00 com Dra. Ana")
    system.say(A, "1")
    system.wait_text(A, "Remarcar Consulta para")
    system.say(A, "sim")
    assert "às 16:00 com Dra. Ana" in system.wait_text(A, "Remarcado! ✅")[-1]

    system.say(A, "cancelar")
    system.wait_text(A, "Cancelar Consulta")
    system.say(A, "sim")
    assert "às 16:00" in system.wait_text(A, "Agendamento cancelado")[-1]
    system.say(A, "meus agendamentos")
    system.wait_text(A, "Você não tem agendamentos futuros")
    time.sleep(1.5)
    replies = system.texts(A)
    assert sum(t.startswith("Lembrete") for t in replies) == 1
    assert r.zcard(due) == 0


def test_twenty_people_racing_for_one_slot_end_with_one_booking(tmp_path) -> None:
    s = System(tmp_path, WSM_MAX_ACTIVE="25")
    try:
        chats = [f"55119555500{i:02d}@c.us" for i in range(20)]
        for chat in chats:
            s.say(chat, "oi")
        for chat in chats:
            s.wait_text(chat, "Como posso ajudar?")
            s.say(chat, "1")
        for chat in chats:
            s.wait_text(chat, "nome completo")
            s.say(chat, "Pessoa")
        for chat in chats:
            s.wait_text(chat, "Horários livres para Consulta:")
        assert len({s.texts(chat)[-1].splitlines()[3] for chat in chats}) == 1  # the same first slot
        bodies = [wp.message_event(chat, "1") for chat in chats]
        deliveries = [s.sim.post_webhook(body) for body in bodies]  # all at once
        assert all(d.wait(10) and d.ok for d in deliveries)
        for chat in chats:
            s.sim.wait_for(lambda chat=chat: len(s.texts(chat)) >= 4, 30)
        answers = [s.texts(chat)[-1] for chat in chats]
        assert sum(a.startswith("Confirma Consulta") for a in answers) == 1, answers
        losers = [a for a in answers if "esse horário acabou de ser ocupado" in a]
        assert len(losers) == 19 and all("Horários livres para Consulta:" in a for a in losers)
        winner = next(c for c, a in zip(chats, answers, strict=True) if a.startswith("Confirma"))
        s.say(winner, "sim")
        s.wait_text(winner, "Agendado!")
        r = get_redis(s.local.redis_url)
        schedule = booking_helpers.always_open()
        book = Book(r, schedule, "default")
        assert [len(book.appointments(c)) for c in chats].count(1) == 1
    finally:
        s.stop()
