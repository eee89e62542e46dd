"""The webhook function in-process (its ASGI app behind Starlette's TestClient) against the private Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from infra.waha_sim import payloads as wp
from tests.conftest import snapshot
from tests.webhook_app import webhook_client
from wsm.conversation.history import read_history
from wsm.core.settings import get_settings
from wsm.store import keys, record_codec

ALICE = "5511988887777@c.us"
HMAC_KEY = "s3cret-key"


@pytest.fixture
def client(redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> TestClient:
    monkeypatch.delenv("WEBHOOK_HMAC_KEY", raising=False)
    get_settings.cache_clear()
    return webhook_client(request)


@pytest.fixture
def signed_client(redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> TestClient:
    monkeypatch.setenv("WEBHOOK_HMAC_KEY", HMAC_KEY)
    get_settings.cache_clear()
    return webhook_client(request)


def post(client: Any, body: dict | bytes, key: str = "", **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else wp.encode(body)
    h = wp.headers(raw, body if isinstance(body, dict) else {}, key)
    h.update(headers)
    return client.post("/", content=raw, headers=h)


def history(session: str = "default", chat: str = ALICE) -> list[dict]:
    return read_history(redis.Redis.from_url(get_settings().redis_url, decode_responses=True), session, chat)


# --- messages -------------------------------------------------------------------------------------


def test_message_is_stored_in_history_inbox_and_state(client: Any, r: redis.Redis) -> None:
    body = wp.message_event(ALICE, "Oi, quero marcar uma consulta")
    res = post(client, body)
    assert res.status_code == 200
    assert res.json()["status"] == "accepted"
    ck = keys.SessionKeys("default").chat(ALICE)
    [stored] = history()
    assert stored["id"] == body["payload"]["id"]
    assert stored["direction"] == "in" and stored["text"] == "Oi, quero marcar uma consulta"
    assert [record_codec.decode(x, ALICE) for x in r.lrange(ck.inbox, 0, -1)] == [stored]
    assert int(r.hget(ck.state, "last_seen_ms")) >= int(time.time() * 1000) - 5000


def test_duplicate_message_answers_duplicate_and_changes_nothing(client: Any, r: redis.Redis) -> None:
    body = wp.message_event(ALICE, "oi")
    assert post(client, body).json()["status"] == "accepted"
    before = snapshot(r)
    retry = dict(body, id="evt_other_envelope")  # WAHA retry or a second subscription: same payload.id
    res = post(client, retry)
    assert res.status_code == 200 and res.json() == {"status": "duplicate", "id": body["payload"]["id"]}
    assert snapshot(r) == before


def test_message_and_message_any_for_one_incoming_message_store_once(client: Any) -> None:
    payload = wp.message_payload(ALICE, "bom dia")
    assert post(client, wp.envelope("message.any", payload)).json()["status"] == "accepted"
    assert post(client, wp.envelope("message", payload)).json()["status"] == "duplicate"
    assert [m["text"] for m in history()] == ["bom dia"]


def test_own_message_from_phone_app_is_history_only_with_its_source(client: Any, r: redis.Redis) -> None:
    out = wp.envelope("message.any", wp.message_payload(ALICE, "Oi, aqui é a Ana", from_me=True, source="app"))
    res = post(client, out)
    assert res.json()["status"] == "accepted"
    stored, took_over = history()  # the message, then who owns the chat now (the phone)
    assert (stored["direction"], stored["source"], stored["text"]) == ("out", "app", "Oi, aqui é a Ana")
    assert (took_over["kind"], took_over["to"], took_over["operator"]) == ("transition", "with_operator", "phone")
    sk = keys.SessionKeys("default")
    ck = sk.chat(ALICE)
    assert r.llen(ck.inbox) == 0 and r.zcard(sk.queue) == 0 and r.zcard(sk.active) == 0
    assert r.hget(ck.state, "human_reply_ms") is not None


def test_media_fields_are_kept(client: Any) -> None:
    media = {"url": "http://waha:3000/api/files/a.jpg", "mimetype": "image/jpeg", "filename": "a.jpg", "error": None}
    post(client, wp.message_event(ALICE, "minha receita", media=media))
    [stored] = history()
    assert stored["media"] == {
        "mimetype": "image/jpeg",
        "url": "http://waha:3000/api/files/a.jpg",
        "filename": "a.jpg",
        "caption": "minha receita",
        "error": None,
    }


def test_media_not_downloaded_is_still_stored(client: Any) -> None:
    body = wp.message_event(ALICE, "")
    body["payload"]["hasMedia"] = True
    assert post(client, body).json()["status"] == "accepted"
    assert history()[0]["media"]["mimetype"] is None


@pytest.mark.parametrize(
    ("chat_id", "reason"),
    [
        ("120363040000000000@g.us", "group"),
        ("status@broadcast", "status"),
        ("120363000000000000@newsletter", "newsletter"),
    ],
)
def test_groups_status_and_newsletters_are_ignored(client: Any, r: redis.Redis, chat_id: str, reason: str) -> None:
    before = snapshot(r)
    res = post(client, wp.message_event(chat_id, "promo"))
    assert res.status_code == 200 and res.json()["status"] == "ignored" and reason in res.json()["reason"]
    assert snapshot(r) == before


def test_own_message_on_message_event_and_unused_events_are_ignored(client: Any, r: redis.Redis) -> None:
    before = snapshot(r)
    own = wp.envelope("message", wp.message_payload(ALICE, "eco", from_me=True))
    reaction = wp.envelope("message.reaction", {"id": "x", "reaction": {"text": "👍"}})
    for body in (own, reaction):
        res = post(client, body)
        assert res.status_code == 200 and res.json()["status"] == "ignored", res.json()
    assert snapshot(r) == before


def test_lid_chats_are_served(client: Any) -> None:
    res = post(client, wp.message_event("123456789012345@lid", "oi"))
    assert res.json()["status"] == "accepted"


# --- acks and session status ------------------------------------------------------------------------


def test_ack_updates_delivery_status_and_never_goes_back(client: Any) -> None:
    out = wp.envelope("message.any", wp.message_payload(ALICE, "Olá!", from_me=True, source="api"))
    post(client, out)
    message_id = out["payload"]["id"]
    assert post(client, wp.ack_event(message_id, 3, ALICE)).json()["status"] == "updated"
    assert post(client, wp.ack_event(message_id, 2, ALICE)).json()["status"] == "ignored"  # late DEVICE after READ
    [stored] = history()
    assert (stored["status"], stored["ack"]) == ("READ", 3)


def test_ack_before_its_message_is_applied_when_the_message_arrives(client: Any) -> None:
    out = wp.envelope("message.any", wp.message_payload(ALICE, "Olá!", from_me=True, source="api"))
    post(client, wp.ack_event(out["payload"]["id"], 2, ALICE))
    post(client, out)
    assert history()[0]["status"] == "DEVICE"


def test_session_status_is_stored_with_change_time(client: Any, r: redis.Redis) -> None:
    post(client, wp.session_status_event("SCAN_QR_CODE"))
    post(client, wp.session_status_event("WORKING"))
    stored = r.hgetall(keys.SessionKeys("default").status)
    assert stored["status"] == "WORKING"
    assert int(stored["changed_ms"]) <= int(stored["updated_ms"])


# --- refusals: each answers clearly and leaves Redis unchanged --------------------------------------


def refusal_cases() -> list[tuple[str, Callable[[Any], Any], int, str]]:
    good = wp.message_event(ALICE, "oi")

    def without(field: str) -> dict:
        return {k: v for k, v in good.items() if k != field}

    return [
        ("malformed json", lambda c: post(c, b'{"event": "message", '), 400, "malformed JSON"),
        ("not an object", lambda c: post(c, b"[1, 2]"), 400, "JSON object"),
        ("invalid utf-8", lambda c: post(c, b'{"a": "\xff\xfe"}'), 400, "UTF-8"),
        ("missing session", lambda c: post(c, without("session")), 400, "session"),
        ("missing payload", lambda c: post(c, without("payload")), 400, "payload"),
        ("wrong type", lambda c: post(c, dict(good, timestamp="yesterday")), 400, "timestamp"),
        ("payload id type", lambda c: post(c, dict(good, payload=dict(good["payload"], id=5))), 400, "payload.id"),
        ("fromMe type", lambda c: post(c, dict(good, payload=dict(good["payload"], fromMe="no"))), 400, "fromMe"),
        ("too large", lambda c: post(c, b"{" + b" " * (1024 * 1024) + b"}"), 413, "larger"),
        (
            "not json",
            lambda c: c.post("/", content=b"a=b", headers={"Content-Type": "text/plain"}),
            415,
            "application/json",
        ),
        ("GET", lambda c: c.get("/"), 405, "POST"),
        ("PUT", lambda c: c.put("/", json=good), 405, "POST"),
    ]


@pytest.mark.parametrize(("name", "send", "status", "says"), refusal_cases(), ids=[c[0] for c in refusal_cases()])
def test_refusals_are_clear_and_change_nothing(client: Any, r: redis.Redis, name: str, send, status, says) -> None:
    before = snapshot(r)
    res = send(client)
    assert res.status_code == status
    assert says in res.json()["error"]
    assert snapshot(r) == before


def test_hmac_good_is_accepted(signed_client: Any) -> None:
    res = post(signed_client, wp.message_event(ALICE, "oi"), key=HMAC_KEY)
    assert res.status_code == 200 and res.json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("key", "override", "says"),
    [("wrong-key", {}, "invalid"), ("", {}, "missing"), (HMAC_KEY, {"X-Webhook-Hmac": "00" * 64}, "invalid")],
    ids=["bad", "missing", "forged"],
)
def test_hmac_bad_or_missing_is_401_and_unchanged(signed_client: Any, r: redis.Redis, key, override, says) -> None:
    before = snapshot(r)
    res = post(signed_client, wp.message_event(ALICE, "oi"), key=key, **override)
    assert res.status_code == 401 and says in res.json()["error"]
    assert snapshot(r) == before


def test_hmac_is_checked_before_parsing(signed_client: Any) -> None:
    res = post(signed_client, b"{not json", key="wrong")
    assert res.status_code == 401


def test_replay_window_refuses_old_timestamps(redis_url: str, r: redis.Redis, monkeypatch, request) -> None:
    monkeypatch.setenv("WEBHOOK_HMAC_KEY", HMAC_KEY)
    monkeypatch.setenv("WEBHOOK_MAX_SKEW_S", "300")
    get_settings.cache_clear()
    c = webhook_client(request)
    fresh = wp.message_event(ALICE, "oi")
    assert post(c, fresh, key=HMAC_KEY).status_code == 200
    old = wp.message_event(ALICE, "oi de novo")
    old["timestamp"] -= 3_600_000
    before = snapshot(r)
    res = post(c, old, key=HMAC_KEY)
    assert res.status_code == 401 and "window" in res.json()["error"]
    lying = wp.message_event(ALICE, "header says now, body says old")
    lying["timestamp"] -= 3_600_000
    raw = wp.encode(lying)
    h = wp.headers(raw, lying, HMAC_KEY) | {"X-Webhook-Timestamp": str(int(time.time() * 1000))}
    assert c.post("/", content=raw, headers=h).status_code == 401
    assert snapshot(r) == before


def test_healthz_reports_redis(client: Any) -> None:
    res = client.get("/healthz")
    assert res.status_code == 200 and res.json()["redis"] == "ok"


def test_healthz_and_ingest_answer_503_when_redis_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from infra.platform.redis_server import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    c = webhook_client(request)
    assert c.get("/healthz").status_code == 503
    res = post(c, wp.message_event(ALICE, "oi"))
    assert res.status_code == 503 and "retry" in res.json()["error"]
    assert "Traceback" not in res.text
    get_settings.cache_clear()
