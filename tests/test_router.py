"""The event router against a real Redis and real HTTP servers standing in for the functions."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from cloudevents.http import CloudEvent, from_http

from infra.platform.redis_server import RedisServer
from infra.platform.router import Router
from infra.platform.triggers import NOTIFIER, WORKER, DeliveryRejected, binary_mode, url_triggers
from wsm.core.clock import now_ms
from wsm.core.settings import Settings
from wsm.delivery import deadletter
from wsm.store import events, keys
from wsm.store.events import WakeUp

CHAT = "5511988887777@c.us"
RECEIVED = "wsm." + events.MESSAGE_RECEIVED
TICK = "wsm." + events.TICK


@dataclasses.dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


Plan = Callable[[Request], tuple[int, float]]  # request -> (status, seconds to wait before answering)


class FunctionServer:
    """A real HTTP server in place of a function: records each request, answers as ``plan`` says."""

    def __init__(self) -> None:
        self.plan: Plan = lambda request: (200, 0.0)
        self.requests: list[Request] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def of_type(self, ce_type: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.headers.get("ce-type") == ce_type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the router's sessions expect
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Request({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with fake._lock:
                    fake.requests.append(request)
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                try:
                    status, delay_s = fake.plan(request)
                    time.sleep(delay_s)
                finally:
                    with fake._lock:
                        fake.active -= 1
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):  # the router gave up waiting
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(0.01)


def fail_first(n: int, status: int = 500) -> Plan:
    """Answer ``status`` to the first ``n`` message.received deliveries, 200 afterwards."""
    seen = []

    def plan(request: Request) -> tuple[int, float]:
        if request.headers.get("ce-type") != RECEIVED:
            return 200, 0.0
        seen.append(request)
        return (status if len(seen) <= n else 200), 0.0

    return plan


def slow(delay_s: float, status: int = 200) -> Plan:
    """Answer message.received deliveries after ``delay_s``, anything else at once."""
    return lambda request: (status, delay_s) if request.headers.get("ce-type") == RECEIVED else (200, 0.0)


def publish(client: redis.Redis, event: WakeUp) -> None:
    client.publish(keys.EVENTS_CHANNEL, event.to_json())


@pytest.fixture
def worker() -> Iterator[FunctionServer]:
    server = FunctionServer()
    yield server
    server.close()


@pytest.fixture
def notifier() -> Iterator[FunctionServer]:
    server = FunctionServer()
    yield server
    server.close()


@pytest.fixture
def make_router(redis_url: str, worker: FunctionServer, notifier: FunctionServer) -> Iterator[Callable[..., Router]]:
    """Start a subscribed router on the test's servers; settings overrides as keyword arguments."""
    routers: list[Router] = []

    def make(**changes: object) -> Router:
        defaults: dict[str, object] = {
            "redis_url": redis_url,
            "tick_s": 60.0,  # only the tick sent on subscribing, unless a test asks for more
            "router_max_attempts": 3,
            "router_timeout_s": 2.0,
            "router_concurrency": 8,
        }
        settings = dataclasses.replace(Settings.from_env(), **{**defaults, **changes})  # type: ignore[arg-type]
        triggers = url_triggers({WORKER: worker.url, NOTIFIER: notifier.url}, settings.router_timeout_s)
        router = Router(settings, triggers, backoff_base_s=0.01, backoff_cap_s=0.05).start()
        routers.append(router)
        assert router.wait_subscribed(5)
        return router

    yield make
    for router in routers:
        router.stop()


def test_events_reach_exactly_their_subscribers_as_binary_cloudevents(worker, notifier, make_router, r):
    router = make_router()
    r.publish(keys.EVENTS_CHANNEL, "not json")
    r.publish(keys.EVENTS_CHANNEL, '{"type": "no.such.event"}')
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))
    publish(r, WakeUp(events.CHAT_ADMITTED, "default", CHAT))
    publish(r, WakeUp(events.QUEUE_CHANGED, "default"))

    wait_until(lambda: router.counters.delivered >= 5 and router.in_flight == 0)  # 3 events + 2 ticks
    assert sorted(r.headers["ce-type"] for r in worker.requests) == [
        "wsm.chat.admitted",
        "wsm.message.received",
        TICK,
    ]
    assert sorted(r.headers["ce-type"] for r in notifier.requests) == ["wsm.queue.changed", TICK]
    assert router.counters.invalid == 2

    [received] = worker.of_type(RECEIVED)
    assert received.headers["ce-specversion"] == "1.0"
    assert received.headers["ce-source"] == "/wsm/sessions/default"
    assert received.headers["ce-subject"] == CHAT
    assert received.headers["ce-id"]
    assert received.headers["content-type"] == "application/json"
    event = from_http(received.headers, received.body)
    assert event["type"] == RECEIVED
    assert event.data == {"session": "default", "chat": CHAT}
    assert WakeUp.from_cloudevent(event["type"], event.data) == WakeUp(events.MESSAGE_RECEIVED, "default", CHAT)
    [queue_changed] = notifier.of_type("wsm.queue.changed")
    assert "ce-subject" not in queue_changed.headers


def test_failed_deliveries_are_retried_until_accepted(worker, make_router, r):
    worker.plan = fail_first(2)
    router = make_router(router_max_attempts=3)
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))

    wait_until(lambda: len(worker.of_type(RECEIVED)) == 3 and router.in_flight == 0)
    attempts = worker.of_type(RECEIVED)
    assert len({a.headers["ce-id"] for a in attempts}) == 1  # a retry is the same event
    assert router.counters.retried == 2
    assert router.counters.deadlettered == 0
    assert r.llen(keys.DEADLETTER) == 0


def test_a_target_that_keeps_failing_gets_dead_lettered(worker, make_router, r):
    worker.plan = slow(0, status=503)
    before_ms = now_ms()
    router = make_router(router_max_attempts=3, deadletter_max=2)
    chats = [f"55119000000{i}@c.us" for i in range(3)]
    for chat in chats:
        publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", chat))

    wait_until(lambda: router.counters.deadlettered == 3)
    after_ms = now_ms()
    assert len(worker.of_type(RECEIVED)) == 9
    entries = [json.loads(raw) for raw in r.lrange(keys.DEADLETTER, 0, -1)]
    assert len(entries) == 2  # trimmed to deadletter_max
    for entry in entries:
        assert entry["kind"] == deadletter.EVENT
        assert entry["type"] == events.MESSAGE_RECEIVED
        assert entry["session"] == "default"
        assert entry["chat"] in chats
        assert entry["target"] == WORKER
        assert entry["attempts"] == 3
        assert entry["error"] == "HTTP 503"
        assert before_ms <= entry["at_ms"] <= after_ms  # the outbox's schema: one clock, milliseconds


def test_an_event_the_target_refuses_as_bad_input_is_dead_lettered_without_retry(worker, make_router, r):
    worker.plan = slow(0, status=400)
    router = make_router(router_max_attempts=5)
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))

    wait_until(lambda: router.counters.deadlettered == 1)
    assert len(worker.of_type(RECEIVED)) == 1 and router.counters.retried == 0
    [entry] = [json.loads(raw) for raw in r.lrange(keys.DEADLETTER, 0, -1)]
    assert (entry["error"], entry["attempts"]) == ("HTTP 400", 1)


def test_too_many_requests_is_retried(worker, make_router, r):
    worker.plan = fail_first(1, status=429)
    router = make_router(router_max_attempts=3)
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))

    wait_until(lambda: len(worker.of_type(RECEIVED)) == 2 and router.in_flight == 0)
    assert router.counters.deadlettered == 0


def test_a_target_slower_than_the_timeout_fails(worker, make_router, r):
    worker.plan = slow(1.0)
    router = make_router(router_max_attempts=2, router_timeout_s=0.2)
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))

    wait_until(lambda: router.counters.deadlettered == 1)
    assert len(worker.of_type(RECEIVED)) == 2
    [entry] = [json.loads(raw) for raw in r.lrange(keys.DEADLETTER, 0, -1)]
    assert entry["error"].startswith("timeout")


def test_ticks_reach_worker_and_notifier_periodically(worker, notifier, make_router):
    make_router(tick_s=0.1)
    wait_until(lambda: len(worker.of_type(TICK)) >= 4 and len(notifier.of_type(TICK)) >= 4)
    tick = worker.of_type(TICK)[-1]
    assert tick.headers["ce-source"] == "/wsm/router"
    assert "ce-subject" not in tick.headers
    assert from_http(tick.headers, tick.body).data == {"session": None, "chat": None}


def test_identical_events_coalesce_while_one_is_in_flight(worker, make_router, r):
    worker.plan = slow(0.3)
    router = make_router()
    for _ in range(50):
        publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))
    last_published = time.monotonic()
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", "5511977776666@c.us"))  # another chat: its own run

    wait_until(lambda: router.counters.delivered >= 3 and router.in_flight == 0)
    deliveries = [d for d in worker.of_type(RECEIVED) if d.headers["ce-subject"] == CHAT]
    assert 1 <= len(deliveries) <= 4
    assert any(d.at > last_published for d in deliveries)  # the last doorbell was not swallowed
    assert router.counters.coalesced >= 45
    assert [d.headers["ce-subject"] for d in worker.of_type(RECEIVED)].count("5511977776666@c.us") == 1


def test_concurrent_deliveries_stay_within_the_pool(worker, make_router, r):
    worker.plan = slow(0.3)
    router = make_router(router_concurrency=3)
    for i in range(9):
        publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", f"55119000000{i}@c.us"))

    wait_until(lambda: len(worker.of_type(RECEIVED)) == 9 and router.in_flight == 0)
    assert worker.max_active == 3


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer(appendonly=False) as server:
        yield server


def test_reconnects_after_redis_restart_and_ticks(own_redis, worker, notifier, make_router, caplog):
    caplog.set_level(logging.WARNING, logger="infra.platform.router")
    make_router(redis_url=own_redis.url)
    wait_until(lambda: len(worker.of_type(TICK)) == 1 and len(notifier.of_type(TICK)) == 1)

    own_redis.kill()
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    try:
        wait_until(lambda: client.pubsub_numsub(keys.EVENTS_CHANNEL) == [(keys.EVENTS_CHANNEL, 1)])
        wait_until(lambda: len(worker.of_type(TICK)) == 2 and len(notifier.of_type(TICK)) == 2)
        publish(client, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))
        wait_until(lambda: len(worker.of_type(RECEIVED)) == 1)
    finally:
        client.close()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("redis unreachable" in m for m in messages) == 1
    assert sum("redis back after" in m for m in messages) == 1


def test_an_attribute_with_a_line_break_is_refused_not_sent_as_two_headers() -> None:
    headers, body = binary_mode(CloudEvent({"type": RECEIVED, "source": "/wsm", "subject": CHAT}, {"chat": CHAT}))
    assert f"ce-subject: {CHAT}" in headers and json.loads(body) == {"chat": CHAT}
    with pytest.raises(DeliveryRejected, match="line break"):
        binary_mode(CloudEvent({"type": RECEIVED, "source": "/wsm", "subject": "a\r\nX-Evil: 1"}, {}))


def test_a_delivery_under_way_finishes_while_redis_is_down(own_redis, worker, make_router):
    """The thread that listens also moves the deliveries on: while it waits out a Redis outage, they still end."""
    worker.plan = slow(0.5)
    router = make_router(redis_url=own_redis.url)
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    publish(client, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))
    client.close()
    wait_until(lambda: worker.active == 1 and len(worker.of_type(RECEIVED)) == 1)
    before = router.counters.delivered
    own_redis.kill()
    wait_until(lambda: router.counters.delivered == before + 1, timeout_s=5)
    assert [d.headers["ce-subject"] for d in worker.of_type(RECEIVED)] == [CHAT]
    assert not router.wait_subscribed(0)  # it was still reconnecting meanwhile


def test_stop_lets_a_delivery_under_way_finish(worker, make_router, r):
    worker.plan = slow(0.4)
    router = make_router()
    publish(r, WakeUp(events.MESSAGE_RECEIVED, "default", CHAT))
    wait_until(lambda: worker.active == 1 and len(worker.of_type(RECEIVED)) == 1)
    before = router.counters.delivered
    router.stop()
    assert router.counters.delivered == before + 1 and router.in_flight == 0
