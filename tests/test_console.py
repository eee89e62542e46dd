"""The console over HTTP (Flask's test client, a real Redis): login, the session cookie, CSRF, the rate limit,
nothing reachable without a login, the pages, the operators' actions and the live feed's replay."""

from __future__ import annotations

import json

import pytest
import redis

from infra.waha_sim import payloads as wp
from tests.conftest import snapshot
from tests.console_helpers import SECRET, console_app, logged_in, login, operator
from wsm.attendance.operators import Operators
from wsm.console.auth import COOKIE
from wsm.core.settings import Settings
from wsm.delivery.deadletter import SEND, read_dead_letters, write_dead_letter
from wsm.ingest.ingestor import Ingestor
from wsm.store import event_stream, keys, record_codec
from wsm.waha.event import parse_event

A, B = "5511977770001@c.us", "5511977770002@c.us"
SK = keys.SessionKeys("default")
PAGES = ["/queues", "/conversations", "/chat?session=default&chat=" + A, "/appointments", "/deadletters", "/operators"]


@pytest.fixture
def app(r: redis.Redis, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    r.sadd(keys.SESSIONS, "default")
    return console_app(monkeypatch)


def ingest(r: redis.Redis, chat: str, text: str) -> None:
    Ingestor(r, Settings.from_env()).ingest(parse_event(wp.message_event(chat, text)))


@pytest.mark.parametrize("path", [*PAGES, "/events", "/"])
def test_nothing_is_reachable_without_login(app, path: str) -> None:  # type: ignore[no-untyped-def]
    res = app.test_client().get(path)
    assert res.status_code in (302, 401)
    if res.status_code == 302:
        assert res.headers["Location"].endswith("/login")


@pytest.mark.parametrize("path", ["/take-next", "/reply", "/online", "/logout", "/deadletters/discard"])
def test_no_post_without_login(app, r: redis.Redis, path: str) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(r)
    assert app.test_client().post(path, data={"session": "default"}).status_code == 401
    assert snapshot(r) == before


def test_login_sets_a_signed_httponly_cookie_and_every_page_renders(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    res = login(client, "ana", operator(r))
    assert res.status_code == 302 and res.headers["Location"].endswith("/queues")
    cookie = next(h for h in res.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, path
        assert "ana" in page.get_data(as_text=True) and page.headers["X-Frame-Options"] == "DENY"


def test_wrong_password_unknown_name_and_forged_cookie_are_refused(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    operator(r)
    client = app.test_client()
    assert login(client, "ana", "wrong").status_code == 401
    assert login(client, "nobody", "wrong").status_code == 401
    client.set_cookie(COOKIE, "eyJzaWQiOiJ4IiwiY3NyZiI6InkifQ.forged.signature")
    assert client.get("/queues").status_code == 302


def test_a_cookie_signed_with_another_secret_is_refused(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    r.sadd(keys.SESSIONS, "default")
    ours = console_app(monkeypatch)
    client, _ = logged_in(ours, r)
    stolen = client.get_cookie(COOKIE)
    assert stolen is not None
    theirs = console_app(monkeypatch, WSM_CONSOLE_SECRET=SECRET + "-other").test_client()
    theirs.set_cookie(COOKIE, stolen.value)
    assert theirs.get("/queues").status_code == 302


def test_login_form_needs_its_csrf_token(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    password = operator(r)
    client = app.test_client()
    client.get("/login")
    assert client.post("/login", data={"name": "ana", "password": password}).status_code == 403
    assert client.post("/login", data={"name": "ana", "password": password, "csrf": "x"}).status_code == 403


def test_every_post_needs_the_sessions_csrf_token(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, csrf = logged_in(app, r)
    before = snapshot(r)
    assert client.post("/online", data={"capacity": "2"}).status_code == 403
    assert client.post("/online", data={"capacity": "2", "csrf": csrf + "x"}).status_code == 403
    assert snapshot(r) == before
    assert client.post("/online", data={"capacity": "2", "csrf": csrf}).status_code == 303
    assert Operators(r).online("default") == {"ana": (2, 0)}


def test_logout_ends_the_session_even_for_a_copied_cookie(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, csrf = logged_in(app, r)
    copied = client.get_cookie(COOKIE)
    assert copied is not None
    assert client.post("/logout", data={"csrf": csrf}).status_code == 302
    other = app.test_client()
    other.set_cookie(COOKIE, copied.value)
    assert other.get("/queues").status_code == 302


def test_removing_an_operator_ends_their_session(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = logged_in(app, r)
    Operators(r).remove("ana")
    assert client.get("/queues").status_code == 302


def test_logins_are_rate_limited(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    app = console_app(monkeypatch, WSM_CONSOLE_LOGIN_MAX="3")
    password = operator(r)
    client = app.test_client()
    for _ in range(3):
        assert login(client, "ana", "wrong").status_code == 401
    assert login(client, "ana", password).status_code == 429  # even the right password, for the window
    assert r.ttl(keys.console_login_failures("ana")) > 0


def test_without_a_secret_the_console_is_off_and_says_why(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    client = console_app(monkeypatch, WSM_CONSOLE_SECRET="").test_client()
    for res in (client.get("/login"), client.get("/queues"), client.post("/login", data={"name": "a"})):
        assert res.status_code == 503 and "WSM_CONSOLE_SECRET" in res.get_data(as_text=True)


def test_operator_takes_replies_and_returns_to_bot_over_http(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, csrf = logged_in(app, r)
    client.post("/online", data={"capacity": "1", "csrf": csrf})
    ingest(r, A, "oi")
    app.extensions["wsm_console"].ownership.hand_off("default", A, "flow")
    queue = client.get("/queues").get_data(as_text=True)
    assert A in queue and 'class="sla-ok"' in queue
    res = client.post("/take-next", data={"session": "default", "csrf": csrf})
    assert res.status_code == 303 and "/chat?" in res.headers["Location"]
    res = client.post("/reply", data={"session": "default", "chat": A, "text": "Olá!", "csrf": csrf})
    assert res.status_code == 303
    outbox = [json.loads(e) for e in r.lrange(SK.chat(A).outbox, 0, -1)]
    assert [(e["text"], e["kind"]) for e in outbox] == [("Olá!", "operator")]
    page = client.get(f"/chat?session=default&chat={A}").get_data(as_text=True)
    assert "Olá!" in page and "human_queue → with_operator (ana)" in page
    res = client.post("/return", data={"session": "default", "chat": A, "step": "nowhere", "csrf": csrf})
    assert "msg=" in res.headers["Location"] and r.hget(SK.chat(A).state, "owner") == "with_operator"
    client.post("/return", data={"session": "default", "chat": A, "step": "menu", "csrf": csrf})
    assert r.hget(SK.chat(A).state, "owner") == "bot"
    assert "Como posso ajudar?" in json.loads(r.lrange(SK.chat(A).outbox, -1, -1)[0])["text"]


def test_bad_input_is_a_clear_error_and_changes_nothing(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, csrf = logged_in(app, r)
    before = snapshot(r)
    assert client.post("/online", data={"capacity": "many", "csrf": csrf}).status_code == 400
    assert client.post("/reply", data={"session": "{x}", "chat": A, "text": "a", "csrf": csrf}).status_code == 400
    assert client.post("/deadletters/discard", data={"entry": "not json", "csrf": csrf}).status_code == 400
    assert client.get("/chat?session=default").status_code == 400
    res = client.post("/reply", data={"session": "default", "chat": A, "text": "a", "csrf": csrf})
    assert "msg=" in res.headers["Location"]  # not theirs: refused with a message
    assert snapshot(r) == before


def test_dead_letters_discard_and_retry(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, csrf = logged_in(app, r)
    ingest(r, A, "oi")
    record = {"id": "wsm_1", "direction": "out", "text": "Sua consulta está confirmada", "status": "FAILED"}
    r.rpush(SK.chat(A).history, *record_codec.encode_pair(record, A))
    write_dead_letter(r, SEND, "400 bad", 100, session="default", chat=A, reply_id="wsm_1")
    write_dead_letter(r, SEND, "400 other", 100, session="default", chat=B, reply_id="gone")
    first, second = read_dead_letters(r)
    assert "400 bad" in client.get("/deadletters").get_data(as_text=True)
    client.post("/deadletters/discard", data={"entry": first, "csrf": csrf})
    assert read_dead_letters(r) == [second]
    write_dead_letter(r, SEND, "400 bad", 100, session="default", chat=A, reply_id="wsm_1")
    entry = read_dead_letters(r)[0]
    client.post("/deadletters/retry", data={"entry": entry, "csrf": csrf})
    assert [json.loads(e)["text"] for e in r.lrange(SK.chat(A).outbox, 0, -1)] == ["Sua consulta está confirmada"]
    assert entry not in read_dead_letters(r)


def test_events_replay_what_a_reconnect_missed(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = logged_in(app, r)
    event_stream.append(r, "default", event_stream.QUEUE, chat=A)
    seen = event_stream.read_since(r, {"default": "0-0"})
    last = event_stream.encode_position({"default": seen[-1].id})
    event_stream.append(r, "default", event_stream.QUEUE, chat=B)  # while the browser was away
    body = client.get("/events", headers={"Last-Event-ID": last}).get_data(as_text=True)
    assert body.startswith("retry: ")
    data = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [d["chat"] for d in data] == [B]
    ids = [line[4:] for line in body.splitlines() if line.startswith("id: ")]
    assert event_stream.decode_position(ids[-1])["default"] > seen[-1].id


def test_events_with_a_malformed_last_event_id_start_from_now(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = logged_in(app, r)
    event_stream.append(r, "default", event_stream.QUEUE, chat=A)
    body = client.get("/events", headers={"Last-Event-ID": "garbage {x}=1"}).get_data(as_text=True)
    assert "data: " not in body


def test_fragment_requests_render_only_the_live_part(app, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    client, _ = logged_in(app, r)
    fragment = client.get("/queues", headers={"X-Fragment": "1"}).get_data(as_text=True)
    assert "<html" not in fragment and "human-queue" in fragment
    assert "<html" in client.get("/queues").get_data(as_text=True)


def test_metrics_on_the_console_need_their_token(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    app = console_app(monkeypatch, WSM_METRICS_TOKEN="tok")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    res = client.get("/metrics", headers={"Authorization": "Bearer tok"})
    assert res.status_code == 200 and "wsm_operators_online" in res.get_data(as_text=True)


def test_healthz_answers_while_redis_does(app) -> None:  # type: ignore[no-untyped-def]
    assert app.test_client().get("/healthz").status_code == 200


def test_redis_down_is_a_clear_503(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.platform.redis_server import free_port

    app = console_app(monkeypatch)
    client, _ = logged_in(app, r)
    dead = redis.Redis(port=free_port(), decode_responses=True, socket_connect_timeout=0.5)
    app.extensions["wsm_console"].redis = dead
    app.extensions["wsm_console"].auth.redis = dead
    res = client.get("/queues")
    assert res.status_code == 503 and "Redis" in res.get_data(as_text=True)
    assert client.get("/healthz").status_code == 503
