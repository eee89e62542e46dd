"""End to end through each provider's stand-in with real processes (`make local` with WSM_PROVIDER=cloud or
evolution): the attendance scenario, statuses coming back, and the booking flow with a reminder that
goes as a template once the Cloud API's 24-hour window has closed."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from infra.platform.local import LocalSystem
from tests.conftest import local_config
from tests.provider_system import BASE_ENV, ProviderSystem
from wsm.conversation.history import read_history
from wsm.core.clock import now_ms
from wsm.delivery.deadletter import read_dead_letters
from wsm.store import keys
from wsm.store.connection import get_redis

pytestmark = pytest.mark.slow
A, B, C = "5511911110001@c.us", "5511911110002@c.us", "5511911110003@c.us"
STORED = {"cloud": "@c.us", "evolution": "@s.whatsapp.net"}  # how each provider's persons are filed
TEMPLATES = {"reminder": {"name": "lembrete_consulta", "language": "pt_BR", "parameters": ["{text}"]}}


def stored(chat: str, provider: str) -> str:
    return chat.split("@")[0] + STORED[provider]


@pytest.mark.parametrize("provider", ["cloud", "evolution"])
def test_attendance_scenario_through_the_providers_stand_in(tmp_path, provider: str) -> None:
    s = ProviderSystem.single(tmp_path, provider)
    try:
        s.say(A, "oi")
        assert "Como posso ajudar?" in s.wait_texts(A, 1)[0]
        s.say(B, "olá")
        assert s.wait_texts(B, 1)[0].startswith("Você é o 1º da fila")
        s.say(C, "bom dia")
        assert s.wait_texts(C, 1)[0].startswith("Você é o 2º da fila")
        s.say(A, "sair")
        assert s.wait_texts(A, 2)[-1].startswith("Atendimento encerrado")
        turn = s.wait_texts(B, 2)[-1]
        assert turn.startswith("É a sua vez!") and "Como posso ajudar?" in turn
        assert s.wait_texts(C, 2)[-1].startswith("Atualização: agora você é o 1º da fila")

        r = get_redis(s.local.redis_url)
        sim = s.sims["default"]
        history = lambda: read_history(r, "default", stored(A, provider))  # noqa: E731
        assert sim.wait_for(lambda: all(m["status"] == "READ" for m in history() if m["direction"] == "out"), 10)
        assert [m["direction"] for m in history()] == ["in", "out", "in", "out"]
        paths = {c.path.split("/")[-1] if provider == "cloud" else c.path.rsplit("/", 1)[0] for c in sim.calls}
        expected = {"messages"} if provider == "cloud" else {"/chat/markMessageAsRead", "/chat/sendPresence",
                                                              "/message/sendText"}  # fmt: skip
        assert paths == expected
    finally:
        s.stop()


def test_booking_through_the_cloud_api_and_a_reminder_outside_the_window_goes_as_a_template(tmp_path) -> None:
    s = ProviderSystem.single(tmp_path, "cloud", META_TEMPLATES=json.dumps(TEMPLATES))
    try:
        for text, expected in [
            ("oi", "Como posso ajudar?"),
            ("1", "nome completo"),
            ("Maria Souza", "Horários livres para Consulta:"),
            ("amanhã às 10h", "às 10:00 com Dra. Ana"),
            ("1", "Confirma Consulta"),
            ("sim", "Agendado! ✅ Consulta"),
        ]:
            s.say(A, text)
            s.wait_text(A, expected)
        r = get_redis(s.local.redis_url)
        due = keys.ScheduleKeys("default").reminders_due
        assert s.sims["default"].wait_for(lambda: r.zcard(due) == 1, 10)
        state = keys.SessionKeys("default").chat(A).state
        r.hset(state, "last_seen_ms", now_ms() - 25 * 3_600_000)  # a day passes without a word from Maria
        for member in r.zrange(due, 0, -1):
            r.zadd(due, {member: 0})  # and the reminder is due
        reminder = s.wait_text(A, "[template lembrete_consulta]")[-1]
        assert "Lembrete: Consulta" in reminder and "às 10:00 com Dra. Ana" in reminder
        sent = [c for c in s.sims["default"].calls if c.json and c.json.get("type") == "template"]
        assert len(sent) == 1
        assert read_dead_letters(r) == []
    finally:
        s.stop()


def test_booking_through_evolution(tmp_path) -> None:
    s = ProviderSystem.single(tmp_path, "evolution")
    try:
        for text, expected in [
            ("oi", "Como posso ajudar?"),
            ("1", "nome completo"),
            ("Ana Lima", "Horários livres para Consulta:"),
            ("amanhã às 11h", "às 11:00 com Dra. Ana"),
            ("1", "Confirma Consulta"),
            ("sim", "Agendado! ✅ Consulta"),
        ]:
            s.say(A, text)
            s.wait_text(A, expected)
        r = get_redis(s.local.redis_url)
        assert r.scard(keys.ScheduleKeys("default").chat(stored(A, "evolution"))) == 1
        time.sleep(1.0)  # a few ticks: nothing is sent twice
        assert len(s.texts(A)) == 6
    finally:
        s.stop()


@pytest.mark.parametrize("provider", ["cloud", "evolution"])
def test_make_local_with_wsm_provider_runs_its_stand_in_and_the_chat_page_works(tmp_path, provider: str) -> None:
    """``make local`` with WSM_PROVIDER: the stand-in it starts speaks that API, wired to the functions."""
    env = {**os.environ, **BASE_ENV, "WSM_PROVIDER": provider}
    config = local_config(tmp_path, env)
    config.env.pop("REDIS_URL", None)
    config.env.pop("WAHA_URL", None)
    local = LocalSystem(config).start()
    try:
        page = local.waha_url
        sent = requests.post(f"{page}/sim/send", json={"phone": "5511933334444", "text": "oi"}, timeout=5)
        assert sent.status_code == 200 and sent.json()["webhook"]
        deadline = time.monotonic() + 30
        replies: list[str] = []
        while time.monotonic() < deadline and not replies:
            log = requests.get(f"{page}/sim/messages", params={"since": 0, "wait": 2}, timeout=10).json()
            replies = [e["text"] for e in log if e["direction"] == "out" and e["kind"] == "text"]
        assert replies and "Como posso ajudar?" in replies[0]
        assert requests.get(f"{page}/sim/state", timeout=5).json()["webhooks"]["failed"] == 0
    finally:
        local.stop()
