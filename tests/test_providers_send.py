"""Sending through the Cloud API and Evolution stand-ins: the clients, the outbox's retries and dead letters,
and the Cloud API's 24-hour window (templates outside it, everything else held with a reason, nothing lost)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from infra.waha_sim.core import WahaSimulator
from infra.waha_sim.dialects import PHONE_NUMBER_ID
from tests import provider_helpers as ph
from wsm.conversation.history import read_history
from wsm.core.clock import now_ms
from wsm.core.errors import WahaRejected, WahaRetryable, WahaSessionNotReady
from wsm.core.settings import Settings
from wsm.delivery.deadletter import read_dead_letters
from wsm.delivery.outbox import Delivery, Sender
from wsm.providers import window
from wsm.providers.base import Template
from wsm.providers.cloud_client import CloudClient
from wsm.providers.evolution_client import EvolutionClient
from wsm.providers.outbound import client_for
from wsm.store import keys
from wsm.store.chat_store import ChatStore
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn
from wsm.waha.client import WahaClient

ALICE = "5511988887777@c.us"
SK = keys.SessionKeys("default")
DAY_MS = 86_400_000
TEMPLATES = {"reminder": {"name": "lembrete_consulta", "language": "pt_BR", "parameters": ["{text}"]}}


@pytest.fixture
def cloud_sim() -> Iterator[WahaSimulator]:
    with WahaSimulator(provider="cloud", api_key=ph.ACCESS_TOKEN) as sim:
        yield sim


@pytest.fixture
def evo_sim() -> Iterator[WahaSimulator]:
    with WahaSimulator(provider="evolution", api_key=ph.EVO_KEY) as sim:
        yield sim


def cloud_settings(monkeypatch: pytest.MonkeyPatch, sim: WahaSimulator, **env: str) -> Settings:
    base = {
        "WSM_PROVIDER": "cloud",
        "META_GRAPH_URL": f"{sim.url}/v21.0",
        "META_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "META_ACCESS_TOKEN": ph.ACCESS_TOKEN,
        "META_TEMPLATES": json.dumps(TEMPLATES),
        "WSM_TYPING_MS_PER_CHAR": "0",
        "WAHA_TIMEOUT_S": "5",
    }
    for name, value in {**base, **env}.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def queue_reply(r: redis.Redis, settings: Settings, text: str, kind: str = "reply", last_seen_ms: int | None = None):
    """A chat with one reply in its outbox (as a turn, a reminder or a queue notice leaves it), leased."""
    ck = SK.chat(ALICE)
    if last_seen_ms is not None:
        r.hset(ck.state, "last_seen_ms", last_seen_ms)  # the person's last message (ingest sets it)
    store = ChatStore(r, Scripts(r), settings, "default", ALICE)
    assert store.acquire() is not None
    assert store.commit(Turn([text]), kind=kind)
    return store


def dead_letters(r: redis.Redis) -> list[dict]:
    return [json.loads(raw) for raw in read_dead_letters(r)]


# --- the Cloud API client ---------------------------------------------------------------------


def test_cloud_text_goes_to_the_numbers_messages_endpoint_with_the_bearer_token(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim))
    wamid = client.send_text("default", ALICE, "Olá!")
    assert wamid.startswith("wamid.")
    [call] = cloud_sim.calls
    assert call.path == f"/v21.0/{PHONE_NUMBER_ID}/messages"
    assert call.headers["authorization"] == f"Bearer {ph.ACCESS_TOKEN}"
    assert call.json["to"] == "5511988887777" and call.json["text"]["body"] == "Olá!"
    assert cloud_sim.texts_to(ALICE) == ["Olá!"]


def test_cloud_read_receipt_carries_the_typing_indicator(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim))
    client.send_seen("default", ALICE, ["wamid.1", "wamid.2"])
    [call] = cloud_sim.calls
    assert call.json == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.2",
                         "typing_indicator": {"type": "text"}}  # fmt: skip


def test_cloud_interactive_options_are_buttons_up_to_three_then_a_list(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim))
    client.send_options("default", ALICE, "Confirma?", [("1", "Sim"), ("2", "Não")])
    client.send_options("default", ALICE, "Qual?", [(str(i), f"Opção {i}") for i in range(1, 6)])
    buttons, rows = (c.json["interactive"] for c in cloud_sim.calls)
    assert buttons["type"] == "button" and [b["reply"]["id"] for b in buttons["action"]["buttons"]] == ["1", "2"]
    assert rows["type"] == "list" and [r["id"] for r in rows["action"]["sections"][0]["rows"]] == list("12345")


@pytest.mark.parametrize(("status", "code"), [(429, None), (500, None), (503, None), (400, 130429), (400, 131056)])
def test_cloud_throttling_and_server_errors_are_retryable(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator, status: int, code: int | None
) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim))
    cloud_sim.dialect.fail_code = code  # type: ignore[attr-defined]
    cloud_sim.fail_next(status)
    with pytest.raises(WahaRetryable):
        client.send_text("default", ALICE, "oi")


def test_cloud_other_errors_are_rejected_with_metas_reason_and_never_the_token(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim))
    cloud_sim.dialect.fail_code = 131026  # type: ignore[attr-defined]
    cloud_sim.fail_next(400)
    with pytest.raises(WahaRejected, match="Meta error 131026"):
        client.send_text("default", ALICE, "oi")


def test_a_refused_token_holds_sends_and_never_shows_the_token(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    bad = CloudClient(cloud_settings(monkeypatch, cloud_sim, META_ACCESS_TOKEN="wrong-token"))
    with pytest.raises(WahaSessionNotReady, match="Meta error 190") as refused:
        bad.send_text("default", ALICE, "oi")
    assert "wrong-token" not in str(refused.value)
    assert bad.session_status("default") == "UNAUTHORIZED"
    assert CloudClient(cloud_settings(monkeypatch, cloud_sim)).session_status("default") == "WORKING"


def test_outbox_holds_while_the_token_is_refused_and_sends_once_it_works_again(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    settings = cloud_settings(monkeypatch, cloud_sim)
    sender = Sender(r, CloudClient(settings))
    store = queue_reply(r, settings, "Sua consulta", last_seen_ms=now_ms())
    cloud_sim.api_key = "a-newer-token"  # ours was revoked
    assert sender.deliver(store) is Delivery.HELD
    assert r.llen(SK.chat(ALICE).outbox) == 1 and dead_letters(r) == []
    r.hset(SK.status, "held_ms", now_ms() - 60_000)  # the tick's probe, a while later
    sender.probe_hold(SK)
    assert r.hexists(SK.status, "held_ms")  # still refused: still held
    cloud_sim.api_key = ph.ACCESS_TOKEN  # the token works again
    r.hset(SK.status, "held_ms", now_ms() - 60_000)
    sender.probe_hold(SK)
    assert not r.hexists(SK.status, "held_ms")
    assert sender.deliver(store) is Delivery.DONE
    assert cloud_sim.texts_to(ALICE) == ["Sua consulta"]


def test_a_session_without_a_phone_number_id_is_rejected_clearly(
    monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim, META_PHONE_NUMBER_ID=""))
    with pytest.raises(WahaRejected, match="phone_number_id"):
        client.send_text("default", ALICE, "oi")
    assert cloud_sim.calls == []


def test_cloud_api_down_is_retryable(monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator) -> None:
    client = CloudClient(cloud_settings(monkeypatch, cloud_sim))
    cloud_sim.refuse_connections()
    with pytest.raises(WahaRetryable):
        client.send_text("default", ALICE, "oi")


def test_the_provider_picks_the_client(monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator) -> None:
    assert isinstance(client_for(cloud_settings(monkeypatch, cloud_sim)), CloudClient)
    monkeypatch.setenv("WSM_PROVIDER", "evolution")
    assert isinstance(client_for(Settings.from_env()), EvolutionClient)
    monkeypatch.setenv("WSM_PROVIDER", "")
    assert isinstance(client_for(Settings.from_env()), WahaClient)
    monkeypatch.setenv("WSM_PROVIDER", "twilio")
    with pytest.raises(ValueError, match="WSM_PROVIDER must be one of"):
        Settings.from_env()


# --- the outbox through the Cloud API -----------------------------------------------------------


def test_outbox_retries_a_throttled_send_and_delivers_it_once(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    settings = cloud_settings(monkeypatch, cloud_sim)
    sender = Sender(r, CloudClient(settings))
    store = queue_reply(r, settings, "Sua consulta", last_seen_ms=now_ms())
    cloud_sim.fail_next(429, count=2)
    assert sender.deliver(store) is Delivery.RETRY_LATER
    assert r.llen(SK.chat(ALICE).outbox) == 1  # kept
    first_delay = int(r.hget(SK.chat(ALICE).state, "send_retry_at_ms")) - now_ms()
    r.hset(SK.chat(ALICE).state, "send_retry_at_ms", 0)  # its time came
    assert sender.deliver(store) is Delivery.RETRY_LATER
    second_delay = int(r.hget(SK.chat(ALICE).state, "send_retry_at_ms")) - now_ms()
    assert second_delay > first_delay  # backs off
    r.hset(SK.chat(ALICE).state, "send_retry_at_ms", 0)
    assert sender.deliver(store) is Delivery.DONE
    assert cloud_sim.texts_to(ALICE) == ["Sua consulta"]
    [record] = read_history(r, "default", ALICE)
    assert record["status"] == "SENT" and record["id"].startswith("wamid.")


def test_outbox_dead_letters_what_meta_refuses_with_its_reason(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    settings = cloud_settings(monkeypatch, cloud_sim)
    store = queue_reply(r, settings, "oi", last_seen_ms=now_ms())
    cloud_sim.dialect.fail_code = 131026  # type: ignore[attr-defined]
    cloud_sim.fail_next(400)
    assert Sender(r, CloudClient(settings)).deliver(store) is Delivery.DONE
    [letter] = dead_letters(r)
    assert letter["kind"] == "send" and "Meta error 131026" in letter["error"]
    assert read_history(r, "default", ALICE)[0]["status"] == "FAILED"


# --- the 24-hour window -------------------------------------------------------------------------


def test_a_reminder_outside_the_window_goes_as_the_configured_template(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    settings = cloud_settings(monkeypatch, cloud_sim)
    text = "Lembrete: consulta amanhã às 10:00"
    store = queue_reply(r, settings, text, kind="reminder", last_seen_ms=now_ms() - 25 * 3_600_000)
    assert Sender(r, CloudClient(settings)).deliver(store) is Delivery.DONE
    [call] = cloud_sim.calls
    assert call.json["type"] == "template"
    assert call.json["template"]["name"] == "lembrete_consulta"
    assert call.json["template"]["language"] == {"code": "pt_BR"}
    assert call.json["template"]["components"][0]["parameters"] == [{"type": "text", "text": text}]
    assert read_history(r, "default", ALICE)[0]["status"] == "SENT"
    assert dead_letters(r) == []


def test_a_free_form_text_outside_the_window_is_held_with_a_clear_reason_and_kept(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    settings = cloud_settings(monkeypatch, cloud_sim)
    store = queue_reply(r, settings, "Alguma dúvida?", last_seen_ms=now_ms() - 2 * DAY_MS)
    assert Sender(r, CloudClient(settings)).deliver(store) is Delivery.DONE
    assert cloud_sim.calls == []  # Meta would refuse it
    [letter] = dead_letters(r)
    assert letter["error"].startswith("OUTSIDE_WINDOW")
    assert letter["text"] == "Alguma dúvida?" and letter["chat"] == ALICE and letter["purpose"] == "reply"
    [record] = read_history(r, "default", ALICE)
    assert record["status"] == "HELD" and record["text"] == "Alguma dúvida?"
    assert r.llen(SK.chat(ALICE).outbox) == 0


def test_a_queue_notice_without_a_template_is_held_and_one_inside_the_window_is_sent(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, cloud_sim: WahaSimulator
) -> None:
    settings = cloud_settings(monkeypatch, cloud_sim)
    sender = Sender(r, CloudClient(settings))
    store = queue_reply(r, settings, "Você é o 2º da fila", kind="position")  # never wrote: no window
    assert sender.deliver(store) is Delivery.DONE
    assert dead_letters(r)[0]["purpose"] == "position"
    store.release()
    store = queue_reply(r, settings, "Você é o 1º da fila", kind="position", last_seen_ms=now_ms() - 60_000)
    assert sender.deliver(store) is Delivery.DONE
    assert cloud_sim.texts_to(ALICE) == ["Você é o 1º da fila"]


def test_waha_has_no_window(r: redis.Redis, monkeypatch: pytest.MonkeyPatch, sim: WahaSimulator) -> None:
    monkeypatch.setenv("WSM_TYPING_MS_PER_CHAR", "0")
    settings = Settings.from_env()
    store = queue_reply(r, settings, "Oi de novo", last_seen_ms=now_ms() - 30 * DAY_MS)
    assert Sender(r, WahaClient(sim.url, timeout_s=5)).deliver(store) is Delivery.DONE
    assert [c.json["text"] for c in sim.sent_texts(ALICE)] == ["Oi de novo"]


def test_window_and_templates_rules() -> None:
    now = 10 * DAY_MS
    assert window.is_open(now - DAY_MS + 1000, 86400, now)
    assert not window.is_open(now - DAY_MS, 86400, now)
    assert not window.is_open(None, 86400, now)
    assert window.is_open(None, 0, now)
    parsed = window.templates('{"offer": "vaga_liberada", "position": {"name": "fila", "parameters": []}}')
    assert parsed["offer"] == Template("vaga_liberada")
    assert parsed["position"].body_parameters("x") == []
    for bad in ("[1]", "{", '{"promo": "x"}', '{"offer": {"name": ""}}', '{"offer": {"name": "a", "parameters": 3}}'):
        with pytest.raises(ValueError, match="META_TEMPLATES"):
            window.templates(bad)


# --- Evolution ----------------------------------------------------------------------------------


def evo_settings(monkeypatch: pytest.MonkeyPatch, sim: WahaSimulator, **env: str) -> Settings:
    base = {"WSM_PROVIDER": "evolution", "EVOLUTION_URL": sim.url, "EVOLUTION_API_KEY": ph.EVO_KEY}
    base |= {"WSM_TYPING_MS_PER_CHAR": "5", "WSM_TYPING_MAX_MS": "20", "WAHA_TIMEOUT_S": "5"}
    for name, value in {**base, **env}.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_evolution_reply_marks_read_shows_typing_and_sends_with_the_apikey(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, evo_sim: WahaSimulator
) -> None:
    settings = evo_settings(monkeypatch, evo_sim)
    store = ChatStore(r, Scripts(r), settings, "default", ALICE)
    store.acquire()
    store.commit(Turn(["Olá, tudo bem?"]), seen_ids=["3EB0IN"])
    assert Sender(r, EvolutionClient(settings)).deliver(store) is Delivery.DONE
    assert [c.path for c in evo_sim.calls] == [
        "/chat/markMessageAsRead/default", "/chat/sendPresence/default",
        "/chat/sendPresence/default", "/message/sendText/default",
    ]  # fmt: skip
    assert all(c.headers["apikey"] == ph.EVO_KEY for c in evo_sim.calls)
    assert [c.json.get("presence") for c in evo_sim.calls[1:3]] == ["composing", "paused"]
    assert evo_sim.texts_to(ALICE) == ["Olá, tudo bem?"]
    assert read_history(r, "default", ALICE)[0]["id"].startswith("3EB0")


def test_evolution_disconnected_instance_holds_sends_until_it_is_open(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, evo_sim: WahaSimulator
) -> None:
    settings = evo_settings(monkeypatch, evo_sim, WSM_TYPING_MS_PER_CHAR="0")
    sender = Sender(r, EvolutionClient(settings))
    evo_sim.set_session_status("STOPPED")
    store = queue_reply(r, settings, "oi")
    assert sender.deliver(store) is Delivery.HELD
    assert r.llen(SK.chat(ALICE).outbox) == 1
    evo_sim.set_session_status("WORKING")
    r.hset(SK.status, "held_ms", now_ms() - 60_000)  # held long enough for the tick's probe
    sender.probe_hold(SK)
    assert not r.hexists(SK.status, "held_ms")
    assert sender.deliver(store) is Delivery.DONE
    assert evo_sim.texts_to(ALICE) == ["oi"]


def test_evolution_wrong_key_is_rejected(monkeypatch: pytest.MonkeyPatch, evo_sim: WahaSimulator) -> None:
    client = EvolutionClient(evo_settings(monkeypatch, evo_sim, EVOLUTION_API_KEY="nope"))
    with pytest.raises(WahaRejected, match="401") as refused:
        client.send_text("default", ALICE, "oi")
    assert "nope" not in str(refused.value)
