"""``/metrics``: refused without the token, figures from every process and from Redis, safe labels."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from functions_framework import create_app
from starlette.testclient import TestClient

from infra.platform.processes import ManagedProcess, function_process
from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from tests.conftest import snapshot
from tests.metrics_helpers import AUTH, TOKEN, parse, total, value
from tests.webhook_app import webhook_client
from wsm.core.settings import get_settings
from wsm.delivery.deadletter import SEND, write_dead_letter
from wsm.store import keys

A, B, C = "5511911110001@c.us", "5511911110002@c.us", "5511911110003@c.us"
SK = keys.SessionKeys("default")


@pytest.fixture
def webhook(redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    monkeypatch.delenv("WEBHOOK_HMAC_KEY", raising=False)
    monkeypatch.setenv("WSM_METRICS_TOKEN", TOKEN)
    monkeypatch.setenv("WSM_MAX_ACTIVE", "1")
    get_settings.cache_clear()
    yield webhook_client(request)
    get_settings.cache_clear()


def say(client: Any, chat: str, text: str) -> Any:
    body = wp.message_event(chat, text)
    raw = wp.encode(body)
    return client.post("/", content=raw, headers=wp.headers(raw, body))


def scrape(client: Any) -> dict:
    res = client.get("/metrics", headers=AUTH)
    assert res.status_code == 200, res.content
    assert res.headers["Content-Type"].startswith("text/plain")
    return parse(res.text)


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
def test_metrics_are_refused_without_the_token_and_change_nothing(webhook: Any, r: redis.Redis, headers: dict) -> None:
    say(webhook, A, "oi")
    before = snapshot(r)
    res = webhook.get("/metrics", headers=headers)
    assert res.status_code == 401
    assert res.headers["WWW-Authenticate"] == "Bearer"
    assert "WSM_METRICS_TOKEN" in res.json()["error"] and "wsm_" not in res.text
    assert snapshot(r) == before


def test_metrics_are_off_without_a_configured_token(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.delenv("WSM_METRICS_TOKEN", raising=False)
    get_settings.cache_clear()
    client = webhook_client(request)
    for headers in ({}, {"Authorization": "Bearer "}, AUTH):
        res = client.get("/metrics", headers=headers)
        assert res.status_code == 403 and "set WSM_METRICS_TOKEN" in res.json()["error"]


def test_metrics_answer_only_get(webhook: Any) -> None:
    res = webhook.post("/metrics", headers=AUTH, json={})
    assert res.status_code == 405 and res.headers["Allow"] == "GET"


# --- figures ------------------------------------------------------------------------------------


def test_gauges_follow_redis_and_counters_follow_the_webhook(webhook: Any, r: redis.Redis) -> None:
    start = scrape(webhook)
    assert value(start, "wsm_queue_length", queue="bot") == 0
    assert value(start, "wsm_queue_oldest_enqueued_timestamp_seconds", queue="bot") == 0
    assert value(start, "wsm_redis_up") == 1 and value(start, "wsm_sla_seconds") == 120

    for chat in (A, B, C):
        assert say(webhook, chat, "oi").status_code == 200
    assert say(webhook, A, "oi").json()["status"] == "accepted"
    body = wp.message_event(B, "de novo")
    raw = wp.encode(body)
    webhook.post("/", content=raw, headers=wp.headers(raw, body))
    assert webhook.post("/", content=raw, headers=wp.headers(raw, body)).json()["status"] == "duplicate"
    assert webhook.post("/", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    write_dead_letter(r, SEND, "HTTP 400 bad chat", 100, session="default", chat=A, reply_id="x")

    now = scrape(webhook)
    assert value(now, "wsm_queue_length", queue="bot") == 2  # A holds the one slot; B and C wait
    assert value(now, "wsm_slots_busy") == 1 and value(now, "wsm_slots_total") == 1
    b_queued = int(r.hget(SK.chat(B).state, "queued_ms")) / 1000
    assert value(now, "wsm_queue_oldest_enqueued_timestamp_seconds", queue="bot") == pytest.approx(b_queued)
    assert value(now, "wsm_dead_letters") == 1
    assert value(now, "wsm_waha_sessions", status="UNKNOWN") == 1
    assert value(now, "wsm_queue_length", queue="human") == 0 and value(now, "wsm_operators_online") == 0

    def delta(name: str, **labels: str) -> float:
        return value(now, name, **labels) - value(start, name, **labels)

    assert delta("wsm_webhook_events_total", event="message", outcome="accepted") == 5
    assert delta("wsm_webhook_events_total", event="message", outcome="duplicate") == 1
    assert delta("wsm_webhook_events_total", event="unknown", outcome="refused_400") == 1
    assert delta("wsm_messages_total", direction="in", sender="customer") == 5


def test_session_status_is_counted_by_state_without_naming_the_session(webhook: Any) -> None:
    body = wp.session_status_event("STOPPED", session="5511999990000")
    raw = wp.encode(body)
    assert webhook.post("/", content=raw, headers=wp.headers(raw, body)).status_code == 200
    now = scrape(webhook)
    assert value(now, "wsm_waha_sessions", status="STOPPED") == 1
    assert not any("5511999990000" in v for (_, labels) in now for _, v in labels)


def test_redis_down_at_scrape_time_still_serves_the_counters(webhook: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    get_settings.cache_clear()
    res = webhook.get("/metrics", headers=AUTH)
    assert res.status_code == 200
    samples = parse(res.text)
    assert value(samples, "wsm_redis_up") == 0 and ("wsm_queue_length", frozenset({("queue", "bot")})) not in samples


def test_human_queue_and_operators_are_read_when_their_keys_exist(
    webhook: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console adds these keys; until it does (or when they are empty) they read 0."""
    human, online = f"{SK.tag}:test:human", f"{SK.tag}:test:online"
    monkeypatch.setattr(keys.SessionKeys, "human_queue", human, raising=False)
    monkeypatch.setattr(keys.SessionKeys, "operators_online", online, raising=False)
    say(webhook, A, "oi")
    empty = scrape(webhook)
    assert value(empty, "wsm_queue_length", queue="human") == 0 and value(empty, "wsm_operators_online") == 0
    r.zadd(human, {B: 1_700_000_000_000, C: 1_700_000_060_000})
    r.zadd(online, {"ana": 1})
    now = scrape(webhook)
    assert value(now, "wsm_queue_length", queue="human") == 2
    assert value(now, "wsm_queue_oldest_enqueued_timestamp_seconds", queue="human") == 1_700_000_000
    assert value(now, "wsm_operators_online") == 1


def test_no_label_holds_a_phone_number(webhook: Any) -> None:
    for chat in (A, B):
        say(webhook, chat, "oi 11 98888-7777")
    text = webhook.get("/metrics", headers=AUTH).text
    labels = re.findall(r'="([^"]*)"', text)
    assert labels and not [v for v in labels if re.search(r"\d{6,}|@", v)]


# --- CloudEvent functions -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker", "notifier"])
def test_a_cloudevent_function_also_answers_get_metrics(
    name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WSM_METRICS_TOKEN", TOKEN)
    get_settings.cache_clear()
    client = TestClient(create_app(name, f"functions/{name}/main.py"))
    assert client.get("/metrics").status_code == 401
    res = client.get("/metrics", headers=AUTH)
    assert res.status_code == 200 and "wsm_slots_total" in res.text
    tick = client.post(
        "/", json={}, headers={"ce-specversion": "1.0", "ce-type": "wsm.tick", "ce-source": "t", "ce-id": "1"}
    )
    assert tick.status_code == 200  # its CloudEvent route is untouched


# --- several processes --------------------------------------------------------------------------


def start(name: str, redis_url: str, **env: str) -> ManagedProcess:
    base = dict(os.environ, REDIS_URL=redis_url, WORKERS="2", THREADS="4", WSM_METRICS_TOKEN=TOKEN, **env)
    base.pop("WEBHOOK_HMAC_KEY", None)
    base.pop("PROMETHEUS_MULTIPROC_DIR", None) if "PROMETHEUS_MULTIPROC_DIR" not in env else None
    return function_process(name, free_port(), base).start()


def test_two_gunicorn_workers_count_together(redis_url: str) -> None:
    """POSTs on new connections land on either worker; every scrape, whichever worker answers it, sums both.

    Which worker accepts a connection is the kernel's choice (the uvicorn workers share one socket), so POSTs go in
    rounds of 20 at once until both workers have written counters."""
    proc = start("webhook", redis_url)
    url = f"http://127.0.0.1:{proc.port}/"

    def post(i: int) -> int:
        body = wp.message_event(f"5511933{i:06d}@c.us", "oi")
        raw = wp.encode(body)
        return requests.post(url, data=raw, headers=wp.headers(raw, body), timeout=10).status_code

    try:
        dirs = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"wsm-metrics-{proc.pid}-*")]
        assert len(dirs) == 1, "the master makes one directory that both workers share"
        sent, writers = 0, set()
        with ThreadPoolExecutor(20) as pool:
            while len(writers) < 2 and sent < 400:
                assert set(pool.map(post, range(sent, sent + 20))) == {200}
                sent += 20
                writers = {f.stem.split("_")[-1] for f in dirs[0].glob("counter_*.db")}
        assert len(writers) == 2, f"both workers should have counted within {sent} POSTs: {writers}"
        counted = set()
        for _ in range(10):
            samples = parse(requests.get(url + "metrics", headers=AUTH, timeout=10).text)
            counted.add(value(samples, "wsm_webhook_events_total", event="message", outcome="accepted"))
        assert counted == {sent}
    finally:
        proc.stop()
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"wsm-metrics-{proc.pid}-*")), "removed on exit"


def test_functions_sharing_a_directory_are_all_seen_from_one_endpoint(redis_url: str, tmp_path: Path) -> None:
    """As make local runs them: the worker's WAHA calls appear on the webhook's /metrics."""
    shared = str(tmp_path / "metrics")
    webhook = start("webhook", redis_url, PROMETHEUS_MULTIPROC_DIR=shared)
    worker = start("worker", redis_url, PROMETHEUS_MULTIPROC_DIR=shared, WAHA_URL=f"http://127.0.0.1:{free_port()}")
    try:
        body = wp.message_event(A, "oi")
        raw = wp.encode(body)
        assert requests.post(f"http://127.0.0.1:{webhook.port}/", data=raw, headers=wp.headers(raw, body)).ok
        ce = {"ce-specversion": "1.0", "ce-type": "wsm.message.received", "ce-source": "t", "ce-id": "1"}
        data = {"type": "message.received", "session": "default", "chat": A}
        requests.post(f"http://127.0.0.1:{worker.port}/", json=data, headers=ce, timeout=30)
        for port in (webhook.port, worker.port):
            samples = parse(requests.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH, timeout=10).text)
            assert value(samples, "wsm_messages_total", direction="in", sender="customer") == 1
            assert total(samples, "wsm_waha_requests_total", code="error") >= 1  # nothing listens at WAHA_URL
    finally:
        webhook.stop()
        worker.stop()
