"""The Lambda adapter in-process: the functions' own main.py answering real Lambda payloads, with a real Redis
and a WAHA stand-in; and the router's LambdaTarget through boto3 against a real HTTP server that speaks
Lambda's Invoke API and runs the same handlers (moto cannot execute a function without Docker)."""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from cloudevents.conversion import to_dict

from infra.deploy.bundle import CLOUDEVENT_ENTRY
from infra.platform.processes import REPO
from infra.platform.redis_server import free_port
from infra.platform.router import Router, to_cloudevent
from infra.platform.triggers import NOTIFIER, WORKER, DeliveryFailed, LambdaTarget, url_triggers
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.conftest import snapshot
from wsm.adapters.aws_lambda import BadLambdaEvent, cloudevent_handler, http_handler
from wsm.conversation.history import read_history
from wsm.core.errors import RedisUnavailable
from wsm.core.settings import Settings, get_settings
from wsm.ingest.ingestor import Ingestor
from wsm.store import keys
from wsm.store.events import MESSAGE_RECEIVED, TICK, WakeUp
from wsm.waha.event import parse_event

A, B = "5511955550001@c.us", "5511955550002@c.us"
HMAC_KEY = "lambda-secret"
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def load_function(name: str, attribute: str = "") -> Callable[..., Any]:
    """``functions/<name>/main.py``'s function (or ``attribute``), loaded as the Functions Framework does."""
    spec = importlib.util.spec_from_file_location(f"lambda_test_{name}_main", REPO / "functions" / name / "main.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attribute or name)


def handlers() -> dict[str, LambdaHandler]:
    """What each bundle's lambda_handler.py builds, by Lambda function name."""
    return {
        "wsm-webhook": http_handler(load_function("webhook")),
        "wsm-worker": cloudevent_handler(load_function("worker", CLOUDEVENT_ENTRY)),
        "wsm-notifier": cloudevent_handler(load_function("notifier", CLOUDEVENT_ENTRY)),
    }


@pytest.fixture
def env(redis_url: str, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The functions' settings, as Lambda would pass them in environment variables."""
    for name, value in {
        "WEBHOOK_HMAC_KEY": HMAC_KEY,
        "WAHA_URL": sim.url,
        "WSM_MAX_ACTIVE": "1",
        "WSM_TYPING_MS_PER_CHAR": "1",
        "WSM_TYPING_MAX_MS": "5",
        "WSM_NOTIFY_MIN_INTERVAL_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WEBHOOK_MAX_SKEW_S", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def function_url_event(
    raw: bytes, headers: dict[str, str], method: str = "POST", path: str = "/", b64: bool = False
) -> dict[str, Any]:
    """A Lambda Function URL event, payload format 2.0, as AWS sends it (lower-case header names)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {k.lower(): v for k, v in {**headers, "Host": "abc.lambda-url.us-east-1.on.aws"}.items()},
        "requestContext": {
            "accountId": "anonymous",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9"},
            "requestId": "req-1",
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": base64.b64encode(raw).decode() if b64 else raw.decode(),
        "isBase64Encoded": b64,
    }


def rest_api_event(raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """An API Gateway REST API proxy event, payload format 1.0."""
    return {
        "resource": "/{proxy+}",
        "path": "/waha",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {"identity": {"sourceIp": "203.0.113.9"}, "stage": "prod"},
        "body": raw.decode(),
        "isBase64Encoded": False,
    }


def signed_message(chat: str, text: str) -> tuple[dict[str, Any], bytes, dict[str, str]]:
    body = wp.message_event(chat, text)
    raw = wp.encode(body)
    return body, raw, wp.headers(raw, body, HMAC_KEY)


def tick_event() -> dict[str, Any]:
    """The structured CloudEvent a LambdaTarget sends for a tick (what a direct invoke carries)."""
    return to_dict(to_cloudevent(WakeUp(TICK)))


def stored_ids(r: redis.Redis, chat: str) -> list[str]:
    return [m["id"] for m in read_history(r, "default", chat)]


# --- webhook: HTTP events -------------------------------------------------------------------------------


def test_function_url_event_with_a_signed_message_is_stored_and_answered_200(env: Settings, r: redis.Redis) -> None:
    body, raw, headers = signed_message(A, "oi")
    answer = http_handler(load_function("webhook"))(function_url_event(raw, headers), None)
    assert answer["statusCode"] == 200, answer
    # header names as the ASGI app writes them (lower-case); HTTP names are case-insensitive
    assert answer["headers"]["content-type"] == "application/json" and answer["isBase64Encoded"] is False
    assert json.loads(answer["body"])["status"] == "accepted"
    assert stored_ids(r, A) == [body["payload"]["id"]]


def test_bad_signature_is_401_and_changes_nothing(env: Settings, r: redis.Redis) -> None:
    _, raw, headers = signed_message(A, "oi")
    headers["X-Webhook-Hmac"] = "0" * 128
    before = snapshot(r)
    answer = http_handler(load_function("webhook"))(function_url_event(raw, headers), None)
    assert answer["statusCode"] == 401
    assert "signature" in json.loads(answer["body"])["error"]
    assert snapshot(r) == before


def test_base64_body_is_decoded_before_the_signature_check(env: Settings, r: redis.Redis) -> None:
    _, raw, headers = signed_message(A, "ação ✓")  # non-ASCII: the bytes must survive exactly
    answer = http_handler(load_function("webhook"))(function_url_event(raw, headers, b64=True), None)
    assert answer["statusCode"] == 200, answer
    assert [m["text"] for m in read_history(r, "default", A)] == ["ação ✓"]


def test_rest_api_v1_event_is_answered_like_a_function_url(env: Settings, r: redis.Redis) -> None:
    body, raw, headers = signed_message(B, "olá")
    answer = http_handler(load_function("webhook"))(rest_api_event(raw, headers), None)
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["status"] == "accepted"
    assert stored_ids(r, B) == [body["payload"]["id"]]


def test_get_healthz_and_wrong_method_go_through_the_same_checks(env: Settings) -> None:
    handler = http_handler(load_function("webhook"))
    health = handler(function_url_event(b"", {}, method="GET", path="/healthz"), None)
    assert health["statusCode"] == 200 and json.loads(health["body"])["redis"] == "ok"
    put = handler(function_url_event(b"{}", {"Content-Type": "application/json"}, method="PUT"), None)
    assert put["statusCode"] == 405 and put["headers"]["allow"] == "POST"


def test_an_event_that_is_not_http_is_refused_clearly(env: Settings) -> None:
    with pytest.raises(BadLambdaEvent, match="not an HTTP event"):
        http_handler(load_function("webhook"))(tick_event(), None)


# --- worker and notifier: direct invokes with a CloudEvent ---------------------------------------------


def test_direct_invoke_of_a_message_event_runs_the_worker(env: Settings, r: redis.Redis, sim: WahaSimulator) -> None:
    Ingestor(r, env).ingest(parse_event(wp.message_event(A, "oi")))
    wake = to_dict(to_cloudevent(WakeUp(MESSAGE_RECEIVED, "default", A)))  # what the router sends for it
    answer = cloudevent_handler(load_function("worker", CLOUDEVENT_ENTRY))(wake, None)
    assert answer["status"] == "ok"
    assert sim.wait_for(lambda: sim.sent_texts(A), 5), "the worker did not answer the pending message"
    assert r.llen(keys.SessionKeys("default").chat(A).inbox) == 0


def test_direct_invoke_of_a_tick_runs_the_notifier(env: Settings, r: redis.Redis, sim: WahaSimulator) -> None:
    ingestor = Ingestor(r, env)
    ingestor.ingest(parse_event(wp.message_event(A, "oi")))  # takes the only slot
    ingestor.ingest(parse_event(wp.message_event(B, "oi")))  # waits
    cloudevent_handler(load_function("notifier", CLOUDEVENT_ENTRY))(tick_event(), None)
    assert sim.sent_texts(B)[0].json["text"].startswith("Você é o 1º da fila")


def test_a_structured_event_with_data_base64_is_accepted(env: Settings) -> None:
    event = tick_event()
    event["data_base64"] = base64.b64encode(json.dumps(event.pop("data")).encode()).decode()
    assert cloudevent_handler(load_function("worker", CLOUDEVENT_ENTRY))(event, None)["status"] == "ok"


@pytest.mark.parametrize("missing", ["specversion", "type", "source", "id"])
def test_a_payload_that_is_not_a_cloudevent_is_refused(env: Settings, missing: str) -> None:
    event = tick_event()
    del event[missing]
    with pytest.raises(BadLambdaEvent, match=missing):
        cloudevent_handler(load_function("worker", CLOUDEVENT_ENTRY))(event, None)


def test_redis_trouble_propagates_so_lambda_reports_a_function_error(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    with pytest.raises(RedisUnavailable):
        cloudevent_handler(load_function("worker", CLOUDEVENT_ENTRY))(tick_event(), None)


# --- the router's LambdaTarget against Lambda's Invoke API --------------------------------------------


class InvokeApi:
    """A real HTTP server answering ``POST /2015-03-31/functions/<name>/invocations`` as Lambda does.

    It runs the named handler in-process; a handler that raises is reported with
    ``X-Amz-Function-Error: Unhandled``, an unknown name with 404 ResourceNotFoundException.
    """

    PREFIX, SUFFIX = "/2015-03-31/functions/", "/invocations"

    def __init__(self, functions: dict[str, LambdaHandler]) -> None:
        self.functions = functions
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                path = self.path.split("?", 1)[0]
                name = path.removeprefix(api.PREFIX).removesuffix(api.SUFFIX)
                fn = api.functions.get(name) if path.startswith(api.PREFIX) else None
                if fn is None:
                    self._reply(404, {"Type": "User", "message": f"Function not found: {name}"}, error_type=True)
                    return
                api.invocations.append((name, payload))
                try:
                    self._reply(200, fn(payload, None))
                except Exception as e:
                    error = {"errorMessage": str(e), "errorType": type(e).__name__, "stackTrace": []}
                    traceback.print_exc()
                    self._reply(200, error, function_error="Unhandled")

            def _reply(self, status: int, body: Any, error_type: bool = False, function_error: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if error_type:
                    self.send_header("x-amzn-ErrorType", "ResourceNotFoundException")
                if function_error:
                    self.send_header("X-Amz-Function-Error", function_error)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> InvokeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fails(event: Any) -> None:
    raise RuntimeError("boom")


def aws_endpoint(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Where boto3 sends every AWS call (as for LocalStack), with LocalStack's placeholder credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


@pytest.fixture
def invoke_api(env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[InvokeApi]:
    with InvokeApi({**handlers(), "wsm-broken": cloudevent_handler(_fails)}) as api:
        aws_endpoint(monkeypatch, api.host)
        yield api


def test_router_delivers_wakeups_through_lambda_targets_to_the_functions(
    invoke_api: InvokeApi, env: Settings, r: redis.Redis, sim: WahaSimulator
) -> None:
    triggers = url_triggers({WORKER: "lambda:wsm-worker", NOTIFIER: "lambda:wsm-notifier"}, timeout_s=10)
    assert [type(t) for t in triggers.targets] == [LambdaTarget, LambdaTarget]
    assert [t.endpoint for t in triggers.targets] == ["lambda:wsm-worker", "lambda:wsm-notifier"]
    with Router(env, triggers, backoff_base_s=0.05, backoff_cap_s=0.2) as router:
        assert router.wait_subscribed(5)
        Ingestor(r, env).ingest(parse_event(wp.message_event(A, "oi")))  # publishes the doorbell
        Ingestor(r, env).ingest(parse_event(wp.message_event(B, "oi")))
        assert sim.wait_for(lambda: sim.sent_texts(A) and sim.sent_texts(B), 10), sim.calls
    assert sim.sent_texts(B)[0].json["text"].startswith("Você é o 1º da fila")
    invoked = {name for name, _ in invoke_api.invocations}
    assert invoked == {"wsm-worker", "wsm-notifier"}
    assert all(payload["specversion"] == "1.0" for _, payload in invoke_api.invocations)
    assert router.counters.deadlettered == 0


def test_lambda_target_reports_a_function_error_as_delivery_failed(invoke_api: InvokeApi) -> None:
    target = LambdaTarget(WORKER, "wsm-broken", timeout_s=5)
    try:
        with pytest.raises(DeliveryFailed, match="FunctionError Unhandled: RuntimeError"):
            target.deliver(to_cloudevent(WakeUp(TICK)))
    finally:
        target.close()


def test_lambda_target_reports_an_unknown_function_as_delivery_failed(invoke_api: InvokeApi) -> None:
    target = LambdaTarget(WORKER, "wsm-nope", timeout_s=5)
    try:
        with pytest.raises(DeliveryFailed, match="ResourceNotFoundException"):
            target.deliver(to_cloudevent(WakeUp(TICK)))
    finally:
        target.close()


def test_lambda_target_without_an_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    aws_endpoint(monkeypatch, f"127.0.0.1:{free_port()}")
    target = LambdaTarget(WORKER, "wsm-worker", timeout_s=2)
    try:
        with pytest.raises(DeliveryFailed, match="EndpointConnectionError"):
            target.deliver(to_cloudevent(WakeUp(TICK)))
    finally:
        target.close()


def test_a_lambda_url_without_a_function_name_is_refused() -> None:
    with pytest.raises(ValueError, match="function name"):
        url_triggers({WORKER: "lambda:", NOTIFIER: "http://127.0.0.1:1/"}, timeout_s=1)


def test_bundle_lambda_handler_wraps_the_function_of_its_bundle(tmp_path: Path) -> None:
    from infra.deploy.bundle import build_bundle

    bundles = (("webhook", "http_handler", "webhook"), ("worker", "cloudevent_handler", CLOUDEVENT_ENTRY))
    for name, adapter, entry in bundles:
        text = (build_bundle(name, tmp_path) / "lambda_handler.py").read_text()
        assert f"from main import {entry}\n" in text and f"handler = {adapter}({entry})" in text
