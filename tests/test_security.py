"""Security: secrets never in logs or errors, phone numbers masked in logs, Redis with a password and over TLS."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from cloudevents.http import CloudEvent
from starlette.testclient import TestClient

from infra.platform.local import LocalSystem
from infra.platform.redis_server import RedisServer, TlsFiles, free_port, supports_tls
from infra.platform.router import Router
from infra.platform.triggers import NOTIFIER, SUBSCRIPTIONS, WORKER, DeliveryFailed, Triggers
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.conftest import local_config
from tests.webhook_app import webhook_app, webhook_client
from wsm.attendance import notifier, worker
from wsm.conversation.history import read_history
from wsm.core.errors import WahaError
from wsm.core.settings import Settings, get_settings
from wsm.store import keys
from wsm.store.connection import get_redis
from wsm.waha.client import WahaClient

HMAC_KEY = "hmac-7f3c9e1a-never-log-me"
API_KEY = "waha-key-5b2d8c4e-never-log-me"
REDIS_PASSWORD = "redis-pw-91ac3e77-never-log-me"
SECRETS = (HMAC_KEY, API_KEY, REDIS_PASSWORD)
A, B, C = "5511944440001@c.us", "5511944440002@c.us", "5511944440003@c.us"
NUMBERS = [chat.partition("@")[0] for chat in (A, B, C)]


def leaks(text: str, *, phones: bool = True) -> list[str]:
    """The secrets, and (unless told otherwise) the full phone numbers, that ``text`` contains."""
    return [s for s in (*SECRETS, *(NUMBERS if phones else ())) if s in text]


def record_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "".join(traceback.format_exception(*record.exc_info))
    return text


def signed_post(client: Any, body: dict) -> Any:
    raw = wp.encode(body)
    return client.post("/", content=raw, headers=wp.headers(raw, body, HMAC_KEY))


# --- the whole platform in-process, every log record at DEBUG -----------------------------------------


class InProcessTarget:
    """A router target that calls a function's handler directly (what the Functions Framework would run)."""

    endpoint = "in-process"

    def __init__(self, name: str, handler: Callable[[str, object], None]) -> None:
        self.name, self.handler = name, handler

    def deliver(self, event: CloudEvent) -> None:
        try:
            self.handler(event["type"], event.data)
        except Exception as e:
            raise DeliveryFailed(type(e).__name__) from e

    def close(self) -> None:
        pass


@pytest.fixture
def sim_options() -> dict[str, Any]:
    """The shared ``sim`` fixture's simulator asks for the API key here."""
    return {"api_key": API_KEY}


def platform_env(monkeypatch: pytest.MonkeyPatch, waha_url: str) -> None:
    env = {
        "WEBHOOK_HMAC_KEY": HMAC_KEY,
        "WAHA_API_KEY": API_KEY,
        "WAHA_URL": waha_url,
        "WSM_MAX_ACTIVE": "1",
        "WSM_TYPING_MS_PER_CHAR": "0",
        "WSM_NOTIFY_MIN_INTERVAL_S": "0",
        "WSM_TICK_S": "0.3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WSM_MASK_PHONES", raising=False)  # the default: masked
    get_settings.cache_clear()


def wait(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ingest_worker_notifier_and_router_log_no_secret_and_no_full_number(
    redis_url: str,
    r: redis.Redis,
    sim: WahaSimulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    platform_env(monkeypatch, sim.url)
    caplog.set_level(logging.DEBUG)
    triggers = Triggers(
        SUBSCRIPTIONS, [InProcessTarget(WORKER, worker.handle_event), InProcessTarget(NOTIFIER, notifier.handle_event)]
    )
    client = webhook_client(request)
    texts = lambda chat: [c.json["text"] for c in sim.sent_texts(chat)]  # noqa: E731
    with Router(Settings.from_env(), triggers, backoff_base_s=0.05, backoff_cap_s=0.2) as router:
        assert router.wait_subscribed(5)
        for chat in (A, B, C):
            assert signed_post(client, wp.message_event(chat, "oi")).status_code == 200
        wait(lambda: len(texts(A)) == 1 and len(texts(C)) == 1)
        sim.fail_next(500)  # a retry, logged with the chat
        assert signed_post(client, wp.message_event(A, "1")).status_code == 200
        wait(lambda: len(texts(A)) == 2)
        sim.fail_next(400, count=2)  # refused for good: dead-lettered and logged as an error
        assert signed_post(client, wp.message_event(A, "Maria")).status_code == 200
        wait(lambda: any(json.loads(e)["chat"] == A for e in r.lrange(keys.DEADLETTER, 0, -1)))
        r.publish(keys.EVENTS_CHANNEL, json.dumps({"type": "bogus", "chat": A}))  # the router must not echo it
        raw = wp.encode(wp.message_event(B, "forged"))
        forged = client.post(
            "/", content=raw, headers={"Content-Type": "application/json", "X-Webhook-Hmac": "0" * 128}
        )
        assert forged.status_code == 401
        assert signed_post(client, wp.message_event(A, "sair")).status_code == 200
        wait(lambda: any(t.startswith("É a sua vez!") for t in texts(B)))
        wait(lambda: any(t.startswith("Atualização") for t in texts(C)))

    records = [(rec.name, record_text(rec)) for rec in caplog.records]
    ours = [text for name, text in records if not name.startswith("infra.waha_sim")]  # the stand-in is not shipped
    assert any("*********0001@c.us" in t for t in ours) and any("*********0002@c.us" in t for t in ours)
    assert any("refused a reply" in t for t in ours) and any("refused 401" in t for t in ours)
    assert [t for t in ours if leaks(t)] == []
    assert [t for _, t in records if leaks(t, phones=False)] == []


# --- WAHA errors ---------------------------------------------------------------------------------------


def all_text(error: BaseException) -> str:
    return str(error) + repr(error) + "".join(traceback.format_exception(error))


def test_waha_errors_never_contain_the_api_key(sim: WahaSimulator) -> None:
    waha = WahaClient(sim.url, API_KEY, timeout_s=0.5)
    errors: list[WahaError] = []
    for status in (400, 401, 404, 422, 429, 500, 503):
        sim.fail_next(status)
        with pytest.raises(WahaError) as caught:
            waha.send_text("default", A, "oi")
        errors.append(caught.value)
    sim.response_delay_s = 1.0
    with pytest.raises(WahaError) as caught:
        waha.send_seen("default", A)
    errors.append(caught.value)
    sim.response_delay_s = 0.0
    with pytest.raises(WahaError) as caught:
        WahaClient(f"http://127.0.0.1:{free_port()}", API_KEY, timeout_s=0.5).start_typing("default", A)
    errors.append(caught.value)
    assert len({type(e) for e in errors}) >= 3
    assert [all_text(e) for e in errors if API_KEY in all_text(e)] == []


class EchoingWaha(BaseHTTPRequestHandler):
    """A WAHA (or a proxy before it) whose error text repeats the request headers."""

    def do_POST(self) -> None:
        body = json.dumps({"statusCode": 400, "message": f"bad {self.headers['X-Api-Key']}"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_waha_errors_never_repeat_the_api_key_even_when_waha_echoes_it() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingWaha)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(WahaError) as caught:
            WahaClient(f"http://127.0.0.1:{server.server_port}", API_KEY).send_text("default", A, "oi")
        assert API_KEY not in all_text(caught.value)
    finally:
        server.shutdown()
        server.server_close()


# --- real processes: everything they print ---------------------------------------------------------------


def test_real_processes_print_no_secret_and_no_full_number(tmp_path: Path, sim: WahaSimulator) -> None:
    """Webhook, worker, notifier and router as `make local` runs them, at DEBUG, on a Redis with a password."""
    debug = tmp_path / "debug"  # every process logs at DEBUG: a sitecustomize on PYTHONPATH configures logging
    debug.mkdir()
    (debug / "sitecustomize.py").write_text("import logging\nlogging.basicConfig(level=logging.DEBUG)\n")
    with RedisServer(password=REDIS_PASSWORD, appendonly=False) as server:
        env = {
            **os.environ,
            "PYTHONPATH": str(debug),
            "WEBHOOK_HMAC_KEY": HMAC_KEY,
            "WAHA_API_KEY": API_KEY,
            "WSM_MAX_ACTIVE": "1",
            "WSM_TICK_S": "0.5",
            "WSM_TYPING_MS_PER_CHAR": "0",
            "WSM_NOTIFY_MIN_INTERVAL_S": "0",
            "GUNICORN_LOG_LEVEL": "debug",
        }
        local = LocalSystem(local_config(tmp_path, env, redis_url=server.url, waha_url=sim.url)).start()
        try:
            url = local.webhook_url
            texts = lambda chat: [c.json["text"] for c in sim.sent_texts(chat)]  # noqa: E731
            for chat in (A, B):
                body = wp.message_event(chat, "oi")
                raw = wp.encode(body)
                assert requests.post(url, data=raw, headers=wp.headers(raw, body, HMAC_KEY), timeout=10).ok
            assert sim.wait_for(lambda: len(texts(A)) == 1 and len(texts(B)) == 1, 20)
            sim.fail_next(400, count=2)
            body = wp.message_event(A, "1")
            raw = wp.encode(body)
            assert requests.post(url, data=raw, headers=wp.headers(raw, body, HMAC_KEY), timeout=10).ok
            forged = requests.post(url, data=raw, headers=wp.headers(raw, body, "wrong-key"), timeout=10)
            assert forged.status_code == 401
            stored = get_redis(server.url)
            wait(lambda: stored.llen(keys.DEADLETTER) > 0)  # the refused reply was dead-lettered
            time.sleep(0.6)  # a tick more
        finally:
            local.stop()
    logs = {path.name: path.read_text(errors="replace") for path in local.logs.glob("*.log")}
    assert {"webhook.log", "worker.log", "notifier.log", "router.log"} <= logs.keys()
    assert "DEBUG" in logs["webhook.log"] and "refused 401" in logs["webhook.log"]
    assert "*********0001@c.us" in logs["router.log"] and "refused a reply" in logs["worker.log"]
    assert {name: leaks(text) for name, text in logs.items() if leaks(text)} == {}


# --- Redis with a password, and over TLS ---------------------------------------------------------------


def webhook_accepts_through(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("WEBHOOK_HMAC_KEY", HMAC_KEY)
    get_settings.cache_clear()
    with TestClient(webhook_app()) as client:  # closed before the server stops
        assert client.get("/healthz").json() == {"status": "ok", "redis": "ok"}
        body = wp.message_event(A, "oi pela conexão protegida")
        res = signed_post(client, body)
    assert res.status_code == 200 and res.json()["status"] == "accepted", res.json()
    assert [m["text"] for m in read_history(get_redis(url), "default", A)] == ["oi pela conexão protegida"]


def test_redis_with_a_password(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer(password=REDIS_PASSWORD, appendonly=False) as server:
        assert server.url.startswith(f"redis://:{REDIS_PASSWORD}@")
        assert get_redis(server.url).ping()
        webhook_accepts_through(server.url, monkeypatch)
        assert REDIS_PASSWORD not in str(Settings.from_env().redacted())

        caplog.set_level(logging.DEBUG)
        wrong = server.url.replace(REDIS_PASSWORD, "not-" + REDIS_PASSWORD)
        monkeypatch.setenv("REDIS_URL", wrong)
        get_settings.cache_clear()
        with TestClient(webhook_app()) as client:
            res = signed_post(client, wp.message_event(A, "senha errada"))
        assert res.status_code == 503 and res.json() == {"error": "storage unavailable, retry later"}
        assert [record_text(rec) for rec in caplog.records if leaks(record_text(rec), phones=False)] == []
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url.replace(f":{REDIS_PASSWORD}@", "")).ping()


def self_signed(directory: Path) -> TlsFiles:
    """A certificate for 127.0.0.1, signed by itself (so it is its own CA), made with the openssl CLI."""
    cert, key = directory / "redis.crt", directory / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return TlsFiles(cert=cert, key=key, ca=cert)


@pytest.mark.skipif(not shutil.which("openssl"), reason="the openssl CLI makes the test certificate")
@pytest.mark.skipif(not supports_tls(), reason="this redis-server was built without TLS")
def test_redis_over_tls_with_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisServer(password=REDIS_PASSWORD, tls=self_signed(tmp_path), appendonly=False) as server:
        assert server.url.startswith("rediss://")
        webhook_accepts_through(server.url, monkeypatch)  # verifies the server against its CA
        unverified = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0?ssl_cert_reqs=none"
        assert get_redis(unverified).ping()
        with pytest.raises(redis.ConnectionError):  # a plain connection is not served on the TLS port
            redis.Redis.from_url(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0", socket_timeout=2).ping()
