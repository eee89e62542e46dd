"""The worker and notifier functions as the Functions Framework serves them (their ASGI app, real Redis).

A malformed event is bad input: answered 200 (acknowledged, so neither the router nor Pub/Sub with
retries sends it again) and it changes nothing. Redis trouble is not the event's fault: 500, retried.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
import redis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from functions_framework import create_app
from starlette.testclient import TestClient

from infra.platform.redis_server import free_port
from tests.conftest import snapshot
from wsm.core.settings import get_settings
from wsm.store import keys
from wsm.store.events import PUBSUB_PUBLISHED, WakeUp

FUNCTIONS = ("worker", "notifier")


def app(name: str) -> Any:
    get_settings.cache_clear()
    return TestClient(create_app(name, f"functions/{name}/main.py"))


def post(client: Any, ce_type: str, data: object) -> Any:
    headers, body = to_binary(CloudEvent({"type": ce_type, "source": "//pubsub.googleapis.com/test"}, data))
    return client.post("/", headers=headers, content=body)


def pubsub(raw: bytes) -> dict[str, object]:
    return {"message": {"data": base64.b64encode(raw).decode(), "messageId": "1"}, "subscription": "s"}


MALFORMED = {
    "unknown type": ("wsm.no.such", {"session": "default"}),
    "session not a string": ("wsm.message.received", {"session": 5, "chat": None}),
    "pubsub without data": (PUBSUB_PUBLISHED, {"message": {}}),
    "pubsub not base64": (PUBSUB_PUBLISHED, {"message": {"data": "%%%"}}),
    "pubsub not json": (PUBSUB_PUBLISHED, pubsub(b"not json")),
    "pubsub not utf-8": (PUBSUB_PUBLISHED, pubsub(b"\xff\xfe{")),
    "pubsub other json": (PUBSUB_PUBLISHED, pubsub(b'{"type":"other"}')),
}


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_event_is_acknowledged_logged_and_changes_nothing(
    name: str, case: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r.sadd(keys.SESSIONS, "default")
    before = snapshot(r)
    with caplog.at_level(logging.WARNING, logger="wsm.attendance.handler"):
        res = post(app(name), *MALFORMED[case])
    assert res.status_code == 200
    assert snapshot(r) == before
    assert any("malformed event" in m for m in caplog.messages)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_good_event_is_handled(name: str, r: redis.Redis) -> None:
    doorbell = WakeUp("tick", "default")
    assert post(app(name), PUBSUB_PUBLISHED, pubsub(doorbell.to_json().encode())).status_code == 200
    assert post(app(name), doorbell.cloudevent_type, {"session": "default", "chat": None}).status_code == 200


@pytest.mark.parametrize("name", FUNCTIONS)
def test_redis_unreachable_is_a_500_so_the_event_is_retried(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    res = post(app(name), "wsm.tick", {"session": "default", "chat": None})
    get_settings.cache_clear()
    assert res.status_code == 500


# What a Pub/Sub push subscription POSTs (captured from the emulator): JSON, no CloudEvent headers. The Functions
# Framework turns it into a messagePublished CloudEvent; Eventarc sends the same data as a binary CloudEvent.
def push_envelope(raw: bytes) -> dict[str, object]:
    data = base64.b64encode(raw).decode()
    message = {"publishTime": "2026-12-02T07:59:59.555Z", "data": data, "messageId": "1", "attributes": {"type": "x"}}
    return {"subscription": "projects/wsm-local/subscriptions/wsm-events-worker", "message": message}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_pubsub_push_envelope_is_handled_as_the_doorbell_it_carries(name: str, r: redis.Redis) -> None:
    r.sadd(keys.SESSIONS, "default")
    chat = "5511955550001@c.us"
    ck = keys.SessionKeys("default").chat(chat)
    doorbell = WakeUp("message.received", "default", chat)
    res = app(name).post("/", json=push_envelope(doorbell.to_json().encode()))
    assert res.status_code == 200
    if name == "worker":  # it looked at the chat the doorbell named: nothing pending there, nothing written for it
        assert not r.exists(ck.inbox) and not r.exists(ck.outbox)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("raw", [b"not json", b'{"type":"other"}'], ids=["not-json", "other-json"])
def test_a_malformed_push_envelope_is_acknowledged_and_changes_nothing(name: str, raw: bytes, r: redis.Redis) -> None:
    r.sadd(keys.SESSIONS, "default")
    before = snapshot(r)
    assert app(name).post("/", json=push_envelope(raw)).status_code == 200  # Pub/Sub must not retry it
    assert snapshot(r) == before


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_push_envelope_with_redis_unreachable_is_a_500_so_pubsub_retries(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    res = app(name).post("/", json=push_envelope(WakeUp("tick", "default").to_json().encode()))
    get_settings.cache_clear()
    assert res.status_code == 500


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_body_that_is_neither_cloudevent_nor_push_is_a_400(name: str, r: redis.Redis) -> None:
    before = snapshot(r)
    assert app(name).post("/", json={"hello": "world"}).status_code == 400
    assert snapshot(r) == before
