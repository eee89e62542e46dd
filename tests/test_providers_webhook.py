"""The Cloud API and Evolution webhooks in-process (the webhook's ASGI app behind Starlette's TestClient) against
the private Redis: Meta's verification handshake, signatures, batching, duplicates, out-of-order statuses,
message types, malformed bodies (refused, nothing changed) — and WAHA, untouched, beside them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from starlette.testclient import TestClient

from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from infra.waha_sim.dialects import PHONE_NUMBER_ID
from tests import provider_helpers as ph
from tests.conftest import snapshot
from tests.webhook_app import webhook_client
from wsm.conversation.history import read_history
from wsm.core.settings import get_settings
from wsm.store import keys, record_codec

REPO = Path(__file__).resolve().parent.parent
ALICE = "5511988887777@c.us"
ALICE_EVO = "5511988887777@s.whatsapp.net"
SK = keys.SessionKeys("default")


@pytest.fixture
def client(redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    for name, value in {
        "META_APP_SECRET": ph.APP_SECRET,
        "META_VERIFY_TOKEN": ph.VERIFY_TOKEN,
        "META_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "EVOLUTION_API_KEY": ph.EVO_KEY,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOK_HMAC_KEY", raising=False)
    monkeypatch.delenv("WSM_PROVIDER", raising=False)
    get_settings.cache_clear()
    yield webhook_client(request)
    get_settings.cache_clear()


def history(r: redis.Redis, chat: str = ALICE, session: str = "default") -> list[dict]:
    return read_history(r, session, chat)


# --- Meta's verification handshake ----------------------------------------------------------------


def test_meta_verification_echoes_the_challenge_as_plain_text(client: Any) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": ph.VERIFY_TOKEN, "hub.challenge": "1158201444"}
    res = client.get("/cloud", params=query)
    assert res.status_code == 200
    assert res.content == b"1158201444"
    assert res.headers["Content-Type"].partition(";")[0] == "text/plain"


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": ph.VERIFY_TOKEN, "hub.challenge": "1"},
        {"hub.verify_token": ph.VERIFY_TOKEN, "hub.challenge": "1"},
        {},
    ],
)
def test_meta_verification_with_a_wrong_token_or_mode_is_403(client: Any, query: dict[str, str]) -> None:
    res = client.get("/cloud", params=query)
    assert res.status_code == 403
    assert b"1" not in res.content


def test_without_a_verify_token_configured_no_handshake_succeeds(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("META_VERIFY_TOKEN", "")
    get_settings.cache_clear()
    res = client.get("/cloud", params={"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"})
    assert res.status_code == 403


# --- signature ------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "not-the-app-secret"])
def test_unsigned_or_wrongly_signed_post_is_401_and_changes_nothing(client: Any, r: redis.Redis, secret: str) -> None:
    _, body = ph.cloud_text(ALICE, "oi")
    before = snapshot(r)
    res = ph.cloud_post(client, body, secret=secret)
    assert res.status_code == 401
    assert "X-Hub-Signature-256" in res.json()["error"]
    assert snapshot(r) == before


def test_a_signature_over_other_bytes_is_refused(client: Any, r: redis.Redis) -> None:
    _, body = ph.cloud_text(ALICE, "oi")
    raw = ph.encode(body)
    res = client.post(
        "/cloud",
        content=raw + b" ",
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": ph.meta_signature(raw)},
    )
    assert res.status_code == 401
    assert history(r) == []


# --- messages -------------------------------------------------------------------------------------


def test_a_signed_text_is_stored_once_under_the_person_and_queued(client: Any, r: redis.Redis) -> None:
    wamid, body = ph.cloud_text(ALICE, "Oi, quero marcar")
    res = ph.cloud_post(client, body)
    assert res.status_code == 200
    assert res.json()["events"] == [{"status": "accepted", "id": wamid, "direction": "in", "chat_status": "active"}]
    [stored] = history(r)
    assert (stored["id"], stored["text"], stored["direction"]) == (wamid, "Oi, quero marcar", "in")
    assert r.zscore(SK.active, ALICE) is not None
    assert r.sismember(keys.SESSIONS, "default")


def test_meta_retrying_the_same_body_days_later_is_a_duplicate(client: Any, r: redis.Redis) -> None:
    _, body = ph.cloud_text(ALICE, "oi")
    assert ph.cloud_post(client, body).json()["events"][0]["status"] == "accepted"
    again = ph.cloud_post(client, body)
    assert again.status_code == 200
    assert again.json()["events"][0]["status"] == "duplicate"
    assert len(history(r)) == 1 and r.llen(SK.chat(ALICE).inbox) == 1
    # Meta retries for up to 7 days. Within the dedupe window the chat's history answers (kept for months);
    # past it, the chat's seen list, kept META_DEDUPE_TTL_S (14 days by default) after its last id
    assert r.ttl(SK.chat(ALICE).history) > 7 * 86400
    for i in range(60):
        ph.cloud_post(client, ph.cloud_text(ALICE, f"m{i}")[1])
    assert ph.cloud_post(client, body).json()["events"][0]["status"] == "duplicate"
    assert r.ttl(SK.chat(ALICE).seen) > 7 * 86400


def test_a_batched_body_stores_every_message_and_status_of_every_entry(client: Any, r: redis.Redis) -> None:
    bob = "5511977776666@c.us"
    _, first = ph.cloud_text(ALICE, "um")
    _, second = ph.cloud_text(bob, "dois")
    body = {"object": "whatsapp_business_account", "entry": first["entry"] + second["entry"]}
    body["entry"][0]["changes"][0]["value"]["messages"].append(
        {
            "from": ALICE.split("@")[0],
            "id": "wamid.third",
            "timestamp": "1700000000",
            "type": "text",
            "text": {"body": "três"},
        }
    )
    body["entry"][1]["changes"][0]["value"]["statuses"] = ph.cloud_status("wamid.ours", bob, "delivered")["entry"][0][
        "changes"
    ][0]["value"]["statuses"]
    res = ph.cloud_post(client, body)
    assert res.status_code == 200
    assert [e["status"] for e in res.json()["events"]] == ["accepted", "accepted", "accepted", "ignored"]
    assert [m["text"] for m in history(r)] == ["um", "três"]
    assert [m["text"] for m in history(r, bob)] == ["dois"]
    assert r.exists(SK.early_ack("wamid.ours"))  # a status for a message not stored yet waits for it


def test_interactive_replies_become_their_option_key(client: Any, r: redis.Redis) -> None:
    button = {
        "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "1", "title": "Sim"}},
    }
    row = {"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "3", "title": "Cancelar"}}}
    for message in (button, row):
        assert ph.cloud_post(client, ph.cloud_message(ALICE, message)[1]).status_code == 200
    stored = history(r)
    assert [(m["text"], m["title"]) for m in stored] == [("1", "Sim"), ("3", "Cancelar")]
    inbox = [record_codec.decode(raw, ALICE) for raw in r.lrange(SK.chat(ALICE).inbox, 0, -1)]
    assert [m["text"] for m in inbox] == ["1", "3"]


def test_media_location_and_reaction_keep_their_metadata(client: Any, r: redis.Redis) -> None:
    image = {"type": "image", "image": {"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "abc", "caption": "exame"}}
    location = {"type": "location", "location": {"latitude": -23.5, "longitude": -46.6, "name": "Clínica"}}
    reaction = {"type": "reaction", "reaction": {"message_id": "wamid.ours", "emoji": "👍"}}
    for message in (image, location, reaction):
        assert ph.cloud_post(client, ph.cloud_message(ALICE, message)[1]).status_code == 200
    img, loc, react = history(r)
    assert img["media"]["mimetype"] == "image/jpeg" and img["media"]["media_id"] == "MEDIA1" and img["text"] == "exame"
    assert loc["location"] == {"latitude": -23.5, "longitude": -46.6, "name": "Clínica", "address": None}
    assert react["text"] == "👍" and react["reaction_to"] == "wamid.ours"


def test_a_message_to_another_phone_number_is_ignored(client: Any, r: redis.Redis) -> None:
    _, body = ph.cloud_text(ALICE, "oi", phone_number_id="999999")
    res = ph.cloud_post(client, body)
    assert res.status_code == 200
    assert res.json()["events"][0]["status"] == "ignored"
    assert history(r) == []


# --- statuses -------------------------------------------------------------------------------------


def _our_message(r: redis.Redis, wamid: str) -> None:
    """A reply of ours as the outbox files it once Meta accepted it (status SENT, ack 1)."""
    record = {"id": wamid, "direction": "out", "text": "olá", "status": "SENT", "ack": 1}
    r.rpush(SK.chat(ALICE).history, *record_codec.encode_pair(record, ALICE))


def _status_of(r: redis.Redis, wamid: str) -> dict:
    [found] = [m for m in read_history(r, "default", ALICE) if m["id"] == wamid]
    return found


@pytest.mark.parametrize("order", [("delivered", "failed"), ("failed", "delivered")])
def test_delivered_and_failed_for_one_message_end_delivered_in_either_order(
    client: Any, r: redis.Redis, order: tuple[str, str]
) -> None:
    _our_message(r, "wamid.X")
    errors = [{"code": 131026, "title": "Message undeliverable"}]
    for status in order:
        body = ph.cloud_status("wamid.X", ALICE, status, errors if status == "failed" else None)
        assert ph.cloud_post(client, body).status_code == 200
    found = _status_of(r, "wamid.X")
    assert (found["status"], found["ack"]) == ("DEVICE", 2)
    assert found["error"] == "131026 Message undeliverable"  # the failure's reason is kept either way


@pytest.mark.parametrize("order", [("sent", "failed"), ("failed", "sent")])
def test_failed_wins_over_sent_in_either_order(client: Any, r: redis.Redis, order: tuple[str, str]) -> None:
    _our_message(r, "wamid.Y")
    for status in order:
        assert ph.cloud_post(client, ph.cloud_status("wamid.Y", ALICE, status)).status_code == 200
    assert _status_of(r, "wamid.Y")["status"] == "ERROR"


def test_read_after_delivered_moves_forward_and_an_old_delivered_does_not_go_back(client: Any, r: redis.Redis) -> None:
    _our_message(r, "wamid.Z")
    for status in ("read", "delivered", "sent"):
        ph.cloud_post(client, ph.cloud_status("wamid.Z", ALICE, status))
    assert _status_of(r, "wamid.Z")["status"] == "READ"


def test_waha_acks_keep_their_own_rule_error_always_applies(r: redis.Redis, client: Any) -> None:
    _our_message(r, f"true_{ALICE}_Y")
    for ack in (2, -1):
        res = client.post(
            "/",
            content=wp.encode(wp.ack_event(f"true_{ALICE}_Y", ack, ALICE)),
            headers={"Content-Type": "application/json"},
        )
        assert res.status_code == 200
    assert _status_of(r, f"true_{ALICE}_Y")["status"] == "ERROR"


# --- malformed ------------------------------------------------------------------------------------


def _one_text(**fields: str) -> dict:
    message = {"from": "5511", "id": "w", "timestamp": "1", "type": "text", "text": {"body": "a"}, **fields}
    value = {"metadata": {"phone_number_id": PHONE_NUMBER_ID}, "messages": [message]}
    return {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        {"object": "page", "entry": []},
        {"object": "whatsapp_business_account", "entry": {}},
        {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": {}}]}]},
        _one_text(**{"from": "55x"}),
        _one_text(timestamp="x"),
        _one_text(type="interactive"),
    ],
)  # fmt: skip
def test_malformed_cloud_bodies_are_400_and_change_nothing(client: Any, r: redis.Redis, body: Any) -> None:
    before = snapshot(r)
    res = ph.cloud_post(client, body if isinstance(body, bytes) else ph.encode(body))
    assert res.status_code == 400
    assert res.json()["error"]
    assert snapshot(r) == before


def test_one_malformed_message_refuses_the_whole_batch(client: Any, r: redis.Redis) -> None:
    _, body = ph.cloud_text(ALICE, "fine")
    body["entry"][0]["changes"][0]["value"]["messages"].append({"id": "w2", "type": "text"})
    before = snapshot(r)
    assert ph.cloud_post(client, body).status_code == 400
    assert snapshot(r) == before


def test_redis_down_answers_503_so_meta_retries(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    res = ph.cloud_post(client, ph.cloud_text(ALICE, "oi")[1])
    assert res.status_code == 503
    assert res.headers["Retry-After"]


def test_cloud_only_answers_get_and_post(client: Any) -> None:
    res = client.put("/cloud", content=b"{}", headers={"Content-Type": "application/json"})
    assert res.status_code == 405


# --- Evolution ------------------------------------------------------------------------------------


def test_evolution_upsert_is_stored_and_queued(client: Any, r: redis.Redis) -> None:
    body = ph.evolution_text(ALICE, "Olá")
    res = ph.evolution_post(client, body)
    assert res.status_code == 200
    assert res.json()["events"][0]["status"] == "accepted"
    [stored] = history(r, ALICE_EVO)
    assert stored["text"] == "Olá" and stored["push_name"] == "Pessoa"
    assert ph.evolution_post(client, body).json()["events"][0]["status"] == "duplicate"


def test_evolution_extended_text_is_read(client: Any, r: redis.Redis) -> None:
    body = ph.evolution_text(ALICE, "")
    body["data"]["message"] = {"extendedTextMessage": {"text": "com link https://x"}}
    assert ph.evolution_post(client, body).status_code == 200
    assert history(r, ALICE_EVO)[0]["text"] == "com link https://x"


@pytest.mark.parametrize("apikey", ["", "wrong-key"])
def test_evolution_without_the_instance_key_is_401(client: Any, r: redis.Redis, apikey: str) -> None:
    before = snapshot(r)
    res = ph.evolution_post(client, ph.evolution_text(ALICE, "oi", apikey=apikey))
    assert res.status_code == 401
    assert snapshot(r) == before


def test_evolution_status_update_and_connection_update(client: Any, r: redis.Redis) -> None:
    record = {"id": "3EB0OURS", "direction": "out", "text": "olá", "status": "SENT", "ack": 1}
    r.rpush(SK.chat(ALICE_EVO).history, *record_codec.encode_pair(record, ALICE_EVO))
    update = {"keyId": "3EB0OURS", "remoteJid": ALICE_EVO, "fromMe": True, "status": "READ"}
    assert (
        ph.evolution_post(client, ph.evolution_body("messages.update", update)).json()["events"][0]["status"]
        == "updated"
    )
    [ours] = [m for m in read_history(r, "default", ALICE_EVO) if m["id"] == "3EB0OURS"]
    assert ours["status"] == "READ"
    closed = ph.evolution_body("connection.update", {"instance": "default", "state": "close"})
    assert ph.evolution_post(client, closed).status_code == 200
    assert r.hget(SK.status, "status") == "STOPPED"


def test_evolution_message_typed_on_the_phone_hands_the_chat_to_a_human(client: Any, r: redis.Redis) -> None:
    ph.evolution_post(client, ph.evolution_text(ALICE, "oi"))
    res = ph.evolution_post(client, ph.evolution_text(ALICE, "deixa comigo", from_me=True, source="android"))
    assert res.json()["events"][0] == {"status": "accepted", "id": res.json()["events"][0]["id"], "direction": "out"}
    assert r.hget(SK.chat(ALICE_EVO).state, "status") == "handoff"


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        {"event": "messages.upsert", "data": {}, "apikey": ph.EVO_KEY},
        ph.evolution_body("messages.upsert", {"key": {"remoteJid": ALICE_EVO, "id": "x"}}),
        ph.evolution_body("messages.upsert", {"key": {"remoteJid": ALICE_EVO, "fromMe": False, "id": "x"}}),
        ph.evolution_body("messages.update", {"remoteJid": ALICE_EVO, "status": "READ"}),
        ph.evolution_body("connection.update", {}),
    ],
)
def test_malformed_evolution_bodies_are_400_and_change_nothing(client: Any, r: redis.Redis, body: Any) -> None:
    before = snapshot(r)
    res = ph.evolution_post(client, body)
    assert res.status_code == 400
    assert snapshot(r) == before


# --- routing --------------------------------------------------------------------------------------


def test_waha_stays_on_the_plain_path_and_on_waha(client: Any, r: redis.Redis) -> None:
    for path in ("/", "/waha"):
        body = wp.message_event(ALICE, f"via {path}")
        res = client.post(path, content=wp.encode(body), headers=wp.headers(wp.encode(body), body))
        assert res.status_code == 200 and res.json()["status"] == "accepted"
    assert [m["text"] for m in history(r)] == ["via /", "via /waha"]


def test_wsm_provider_cloud_makes_the_plain_path_the_cloud_api(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSM_PROVIDER", "cloud")
    get_settings.cache_clear()
    query = {"hub.mode": "subscribe", "hub.verify_token": ph.VERIFY_TOKEN, "hub.challenge": "42"}
    assert client.get("/", params=query).content == b"42"
    assert ph.cloud_post(client, ph.cloud_text(ALICE, "oi")[1], path="/").status_code == 200


@pytest.mark.parametrize("path", ["/cloud", "/evolution"])
def test_a_waha_deployment_does_not_serve_the_other_providers_paths(
    client: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Without the provider chosen or its secret set, its path is 404: no way round WAHA's HMAC through it."""
    monkeypatch.setenv("WEBHOOK_HMAC_KEY", "waha-key")
    for name in ("META_APP_SECRET", "EVOLUTION_API_KEY"):
        monkeypatch.setenv(name, "")
    get_settings.cache_clear()
    before = snapshot(r)
    body = ph.cloud_text(ALICE, "oi")[1] if path == "/cloud" else ph.evolution_text(ALICE, "oi", apikey="")
    res = ph.cloud_post(client, body, secret="") if path == "/cloud" else ph.evolution_post(client, body)
    assert res.status_code == 404
    assert "WSM_PROVIDER" in res.json()["error"]
    assert snapshot(r) == before


def test_a_cloud_deployment_without_wahas_key_does_not_serve_the_waha_path(
    client: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSM_PROVIDER", "cloud")
    get_settings.cache_clear()
    before = snapshot(r)
    body = wp.message_event(ALICE, "oi")
    res = client.post("/waha", content=wp.encode(body), headers=wp.headers(wp.encode(body), body))
    assert res.status_code == 404
    assert snapshot(r) == before


def test_a_session_of_the_sessions_file_makes_its_provider_served(
    client: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "sessions.yaml").write_text("sessions:\n  norte: {provider: evolution}\n")
    monkeypatch.setenv("WSM_SESSIONS_FILE", str(tmp_path / "sessions.yaml"))
    monkeypatch.setenv("EVOLUTION_API_KEY", "")
    get_settings.cache_clear()
    res = ph.evolution_post(client, ph.evolution_text(ALICE, "oi", instance="norte", apikey=""))
    assert res.status_code == 200 and res.json()["events"][0]["status"] == "accepted"
    assert [m["text"] for m in history(r, ALICE_EVO, "norte")] == ["oi"]


# --- the document -----------------------------------------------------------------------------------


def test_every_documented_provider_answer_is_what_the_app_says(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/openapi-providers.yaml: one request per documented answer, validated against the document."""
    schema = schemathesis.openapi.from_path(str(REPO / "docs" / "openapi-providers.yaml"))
    good = {"hub.mode": "subscribe", "hub.verify_token": ph.VERIFY_TOKEN, "hub.challenge": "7"}
    answers = [
        ("/cloud", "GET", client.get("/cloud", params=good), 200),
        ("/cloud", "GET", client.get("/cloud", params={"hub.mode": "subscribe"}), 403),
        ("/cloud", "POST", ph.cloud_post(client, ph.cloud_text(ALICE, "oi")[1]), 200),
        ("/cloud", "POST", ph.cloud_post(client, b"{"), 400),
        ("/cloud", "POST", ph.cloud_post(client, ph.cloud_text(ALICE, "oi")[1], secret="x"), 401),
        ("/cloud", "POST", client.delete("/cloud"), 405),
        ("/evolution", "POST", ph.evolution_post(client, ph.evolution_text(ALICE, "oi")), 200),
        ("/evolution", "POST", ph.evolution_post(client, b"[]"), 400),
        ("/evolution", "POST", ph.evolution_post(client, ph.evolution_text(ALICE, "oi", apikey="x")), 401),
        ("/evolution", "POST", client.get("/evolution"), 405),
    ]
    for name in ("META_APP_SECRET", "EVOLUTION_API_KEY"):
        monkeypatch.setenv(name, "")
    get_settings.cache_clear()
    answers.append(("/cloud", "GET", client.get("/cloud", params=good), 404))
    answers.append(("/cloud", "POST", ph.cloud_post(client, ph.cloud_text(ALICE, "oi")[1]), 404))
    answers.append(("/evolution", "POST", ph.evolution_post(client, ph.evolution_text(ALICE, "oi")), 404))
    monkeypatch.setenv("META_APP_SECRET", ph.APP_SECRET)
    monkeypatch.setenv("EVOLUTION_API_KEY", ph.EVO_KEY)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    answers.append(("/cloud", "POST", ph.cloud_post(client, ph.cloud_text(ALICE, "oi")[1]), 503))
    answers.append(("/evolution", "POST", ph.evolution_post(client, ph.evolution_text(ALICE, "oi")), 503))
    for path, method, res, expected in answers:
        assert res.status_code == expected, (path, method, res.content[:200])
        schema[path][method].validate_response(res)
