"""The WAHA simulator over real HTTP: REST answers, failure controls, webhooks with retries, the chat page."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from infra.waha_sim import payloads as waha_payloads
from infra.waha_sim.core import WahaSimulator

CHAT = "5511988887777@c.us"
HMAC_KEY = "test-hmac-key"


class Receiver:
    """A webhook endpoint that records raw bodies and headers and answers a scripted list of statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.cond:
                    receiver.received.append((dict(self.headers.items()), raw))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(raw) for _, raw in self.received]

    def wait_count(self, n: int, timeout_s: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.received) >= n, timeout_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def send_text(http: requests.Session, sim: WahaSimulator, **overrides: Any) -> requests.Response:
    body = {"session": "default", "chatId": CHAT, "text": "Olá! Sua consulta está confirmada ✅", **overrides}
    return http.post(f"{sim.url}/api/sendText", json=body, timeout=5)


def test_api_key_is_required_when_set(http: requests.Session) -> None:
    with WahaSimulator(api_key="secret") as sim:
        denied = http.get(f"{sim.url}/api/sessions/default", timeout=5)
        allowed = http.get(f"{sim.url}/api/sessions/default", headers={"X-Api-Key": "secret"}, timeout=5)
    assert denied.status_code == 401
    assert denied.json() == {"message": "Unauthorized", "statusCode": 401}
    assert allowed.status_code == 200
    assert [c.status for c in sim.calls] == [401, 200]
    assert sim.calls[1].headers["x-api-key"] == sim.calls[1].headers["X-Api-Key"] == "secret"


def test_send_text_answers_a_message_and_is_recorded(sim: WahaSimulator, http: requests.Session) -> None:
    response = send_text(http, sim)
    assert response.status_code == 201
    message = response.json()
    assert re.fullmatch(rf"true_{re.escape(CHAT)}_[0-9A-F]+", message["id"])
    assert message["fromMe"] is True and message["to"] == CHAT and message["from"] == waha_payloads.ME["id"]
    assert message["body"] == "Olá! Sua consulta está confirmada ✅"
    assert isinstance(message["timestamp"], int)
    [call] = sim.sent_texts(CHAT)
    assert (call.method, call.path, call.status) == ("POST", "/api/sendText", 201)
    assert call.json["text"] == message["body"]
    assert sim.sent_texts("5500000000000@c.us") == []


def test_validation_errors_answer_400_and_are_recorded(sim: WahaSimulator, http: requests.Session) -> None:
    missing = http.post(f"{sim.url}/api/sendText", json={"session": "default", "chatId": CHAT}, timeout=5)
    wrong_type = send_text(http, sim, text=42, linkPreview="yes")
    not_json = http.post(f"{sim.url}/api/startTyping", data="chatId=1", timeout=5)
    assert missing.status_code == wrong_type.status_code == not_json.status_code == 400
    assert missing.json() == {"statusCode": 400, "message": ["text must be a string"], "error": "Bad Request"}
    assert wrong_type.json()["message"] == ["text must be a string", "linkPreview must be a boolean value"]
    assert "chatId must be a string" in not_json.json()["message"]
    assert [c.status for c in sim.calls] == [400, 400, 400]
    assert sim.sent_texts() == []


def test_sessions_unknown_names_and_paths(sim: WahaSimulator, http: requests.Session) -> None:
    info = http.get(f"{sim.url}/api/sessions/default", timeout=5).json()
    assert info["name"] == "default" and info["status"] == "WORKING"
    assert info["me"] == waha_payloads.ME and info["engine"] == {"engine": "NOWEB"}
    assert http.get(f"{sim.url}/api/sessions/other", timeout=5).status_code == 404
    assert send_text(http, sim, session="other").status_code == 404
    assert http.get(f"{sim.url}/api/nothing-here", timeout=5).json()["statusCode"] == 404
    assert http.get(f"{sim.url}/health", timeout=5).status_code == 200
    for path in ("/api/sendSeen", "/api/startTyping", "/api/stopTyping"):
        response = http.post(f"{sim.url}{path}", json={"session": "default", "chatId": CHAT}, timeout=5)
        assert (response.status_code, response.json()) == (201, {})


def test_fail_next_then_recovers(sim: WahaSimulator, http: requests.Session) -> None:
    sim.fail_next(500, 2)
    statuses = [send_text(http, sim).status_code for _ in range(3)]
    assert statuses == [500, 500, 201]
    assert send_text(http, sim).status_code == 201
    sim.fail_next(500, 1)
    assert send_text(http, sim).json() == {"statusCode": 500, "exception": {"message": "simulated engine failure"}}
    assert [c.status for c in sim.calls] == [500, 500, 201, 201, 500]
    assert len(sim.sent_texts()) == 2


def test_outage_until_cleared(sim: WahaSimulator, http: requests.Session) -> None:
    sim.set_outage(503)
    assert send_text(http, sim).status_code == 503
    assert http.get(f"{sim.url}/api/sessions/default", timeout=5).status_code == 503
    sim.clear_outage()
    assert send_text(http, sim).status_code == 201


def test_refuse_connections_then_accept_on_the_same_port(sim: WahaSimulator, http: requests.Session) -> None:
    port = sim.port
    assert send_text(http, sim).status_code == 201  # leaves a keep-alive connection in the pool
    sim.refuse_connections()
    with pytest.raises(requests.ConnectionError):
        send_text(http, sim)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/health", timeout=5)
    sim.accept_connections()
    assert sim.port == port
    assert send_text(http, sim).status_code == 201


def test_session_not_working_answers_422(sim: WahaSimulator, http: requests.Session) -> None:
    sim.set_session_status("STOPPED")
    refused = send_text(http, sim)
    typing = http.post(f"{sim.url}/api/startTyping", json={"session": "default", "chatId": CHAT}, timeout=5)
    assert refused.status_code == typing.status_code == 422
    assert refused.json() == {
        "error": "Session status is not as expected. Try again later or restart the session",
        "session": "default",
        "status": "STOPPED",
        "expected": ["WORKING"],
    }
    assert http.get(f"{sim.url}/api/sessions/default", timeout=5).json()["status"] == "STOPPED"
    sim.set_session_status("WORKING")
    assert send_text(http, sim).status_code == 201
    with pytest.raises(ValueError):
        sim.set_session_status("SLEEPING")


def test_webhook_is_signed_like_waha(receiver: Receiver) -> None:
    with WahaSimulator(webhook_url=receiver.url, hmac_key=HMAC_KEY) as sim:
        payload_id = sim.send_message(CHAT, "Oi, quero marcar uma consulta", also_message_any=True)
        assert receiver.wait_count(2)
    for headers, raw in receiver.received:
        body = json.loads(raw)
        assert headers["X-Webhook-Hmac"] == waha_payloads.sign(raw, HMAC_KEY)
        assert headers["X-Webhook-Hmac-Algorithm"] == "sha512"
        assert headers["X-Webhook-Request-Id"] == body["id"]
        assert headers["X-Webhook-Timestamp"] == str(body["timestamp"])
        assert body["payload"]["id"] == payload_id and body["payload"]["from"] == CHAT
    assert sorted(b["event"] for b in receiver.bodies()) == ["message", "message.any"]


def test_operator_reply_from_the_phone_is_message_any_only(receiver: Receiver) -> None:
    with WahaSimulator(webhook_url=receiver.url) as sim:
        sim.send_message(CHAT, "Já te respondo", from_me=True, source="app")
        assert receiver.wait_count(1)
        assert not receiver.wait_count(2, timeout_s=0.2)
    [event] = receiver.bodies()
    assert event["event"] == "message.any" and event["payload"]["fromMe"] is True
    assert [e["direction"] for e in sim.chat_log.since(0)] == ["out"]


def test_webhook_is_retried_until_2xx() -> None:
    receiver = Receiver(statuses=[500, 500])
    try:
        with WahaSimulator(webhook_url=receiver.url, webhook_retry_delay_s=0.05) as sim:
            delivery = sim.post_webhook(waha_payloads.message_event(CHAT, "oi"))
            assert delivery.wait(5)
            assert (delivery.ok, delivery.attempts, delivery.status) == (True, 3, 200)
            assert sim.webhook_stats()["delivered"] == 1
    finally:
        receiver.close()
    request_ids = {headers["X-Webhook-Request-Id"] for headers, _ in receiver.received}
    assert len(receiver.received) == 3 and len(request_ids) == 1


def test_webhook_gives_up_after_the_last_retry() -> None:
    with WahaSimulator(webhook_url="http://127.0.0.1:9/nowhere", webhook_retries=2, webhook_retry_delay_s=0.01) as sim:
        delivery = sim.post_webhook(waha_payloads.message_event(CHAT, "oi"))
        assert delivery.wait(5)
        assert (delivery.ok, delivery.attempts, delivery.status) == (False, 3, None)
        assert sim.webhook_stats()["failed"] == 1


def test_own_events_and_session_status_reach_the_webhook(receiver: Receiver, http: requests.Session) -> None:
    with WahaSimulator(webhook_url=receiver.url, emit_own_events=True) as sim:
        message = send_text(http, sim).json()
        assert receiver.wait_count(3)
        sim.set_session_status("FAILED")
        assert receiver.wait_count(4)
    own, device, read, status = receiver.bodies()
    assert own["event"] == "message.any" and own["payload"]["id"] == message["id"]
    assert own["payload"]["fromMe"] is True and own["payload"]["source"] == "api"
    assert [(e["event"], e["payload"]["ack"]) for e in (device, read)] == [("message.ack", 2), ("message.ack", 3)]
    assert (status["event"], status["payload"]["status"]) == ("session.status", "FAILED")


def test_page_send_becomes_a_message_webhook(receiver: Receiver, http: requests.Session) -> None:
    with WahaSimulator(webhook_url=receiver.url) as sim:
        answer = http.post(f"{sim.url}/sim/send", json={"phone": "+55 11 98888-7777", "text": "Olá"}, timeout=5)
        assert answer.status_code == 200 and answer.json()["chat_id"] == CHAT
        assert receiver.wait_count(1)
        assert http.post(f"{sim.url}/sim/send", json={"phone": "", "text": "x"}, timeout=5).status_code == 400
    [event] = receiver.bodies()
    assert event["event"] == "message" and event["payload"]["from"] == CHAT and event["payload"]["body"] == "Olá"
    assert sim.calls == []  # page routes are not WAHA calls


def test_page_messages_show_both_directions(sim: WahaSimulator, http: requests.Session) -> None:
    sim.send_message(CHAT, "Oi")
    http.post(f"{sim.url}/api/startTyping", json={"session": "default", "chatId": CHAT}, timeout=5)
    send_text(http, sim, text="Olá! Você está na posição 1 da fila.")
    entries = http.get(f"{sim.url}/sim/messages", params={"since": 0}, timeout=5).json()
    shown = [(e["direction"], e["kind"], e["text"]) for e in entries]
    assert shown == [
        ("in", "text", "Oi"),
        ("out", "typing", ""),
        ("out", "text", "Olá! Você está na posição 1 da fila."),
    ]
    later = http.get(f"{sim.url}/sim/messages", params={"since": entries[-1]["seq"]}, timeout=5).json()
    assert later == []


def test_page_long_poll_wakes_on_a_reply(sim: WahaSimulator, http: requests.Session) -> None:
    threading.Timer(0.2, lambda: sim.chat_log.add(CHAT, "out", "resposta")).start()
    started = time.monotonic()
    entries = http.get(f"{sim.url}/sim/messages", params={"since": 0, "wait": 5}, timeout=10).json()
    assert [e["text"] for e in entries] == ["resposta"]
    assert time.monotonic() - started < 2


def test_page_and_controls(sim: WahaSimulator, http: requests.Session) -> None:
    page = http.get(f"{sim.url}/", timeout=5)
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'id="phone"' in page.text and 'id="open-chat"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: the machine may be offline
    state = http.post(f"{sim.url}/sim/session-status", json={"status": "STOPPED"}, timeout=5).json()
    assert state["status"] == "STOPPED" == sim.session_status
    state = http.post(f"{sim.url}/sim/outage", json={"status": 503}, timeout=5).json()
    assert state["outage"] == 503
    assert http.post(f"{sim.url}/sim/outage", json={"status": None}, timeout=5).json()["outage"] is None


def test_wait_for_and_keep_alive_speed(sim: WahaSimulator, http: requests.Session) -> None:
    threading.Timer(0.1, lambda: send_text(requests, sim)).start()  # type: ignore[arg-type]
    assert sim.wait_for(lambda: len(sim.sent_texts()) >= 1, timeout_s=5)
    assert not sim.wait_for(lambda: len(sim.sent_texts()) >= 2, timeout_s=0.1)
    started = time.monotonic()
    for _ in range(50):
        send_text(http, sim)
    assert time.monotonic() - started < 1.5  # ~40 ms per call if Nagle stalled keep-alive answers


def test_response_delay(sim: WahaSimulator, http: requests.Session) -> None:
    sim.response_delay_s = 0.2
    started = time.monotonic()
    assert send_text(http, sim).status_code == 201
    assert time.monotonic() - started >= 0.2
