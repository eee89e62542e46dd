"""Fuzzing the webhook (schemathesis from docs/openapi.yaml, hypothesis), and the spec checked against the code.

For every generated request: never a 5xx; the answer is documented in docs/openapi.yaml (status,
body schema, headers); and a refusal (any non-2xx) leaves Redis exactly as it was (snapshot of
every key before and after). With HMAC on nearly everything stops at 401, so a test hook
(:class:`SignEverything`) signs each fuzzed body and the parser and validator behind the
signature get fuzzed too. Runs in-process on the Functions Framework's own ASGI app.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.testclient import TestClient

from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from tests.conftest import snapshot
from tests.webhook_app import webhook_app, webhook_client
from wsm.conversation.history import read_history
from wsm.core.settings import get_settings

REPO = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO / "docs" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(str(SPEC_PATH))
KEY = "fuzz-key"
ALICE = "5511988887777@c.us"
FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class SignEverything:
    """Test hook around the ASGI app: sign whatever body arrives, as WAHA would, so it passes the HMAC check.

    Reads the whole body from ``receive``, puts its signature in the scope's headers (in place of any sent), then
    hands the app the same body again."""

    def __init__(self, app: AsgiApp, key: str) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees what had come
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"x-webhook-hmac"]
        signed_scope = {**scope, "headers": [*headers, (b"x-webhook-hmac", wp.sign(raw, self.key).encode())]}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(signed_scope, replay, send)


def configured_app(monkeypatch: pytest.MonkeyPatch, hmac_key: str = "", **env: str) -> Any:
    """The webhook's ASGI app built with HMAC on (``hmac_key``) or off and ``env`` set."""
    for name in ("WEBHOOK_HMAC_KEY", "WEBHOOK_MAX_SKEW_S"):
        monkeypatch.delenv(name, raising=False)
    if hmac_key:
        monkeypatch.setenv("WEBHOOK_HMAC_KEY", hmac_key)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return webhook_app()


# --- schemathesis: generated from the OpenAPI document -----------------------------------------------


@pytest.mark.parametrize("mode", ["open", "signed", "unsigned"])
def test_schemathesis_never_5xx_answers_as_documented_and_refusals_change_nothing(
    mode: str, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open: no HMAC configured; signed: HMAC on and every body signed; unsigned: HMAC on, nothing signed."""
    app = configured_app(monkeypatch, hmac_key="" if mode == "open" else KEY)
    asgi = SignEverything(app, KEY) if mode == "signed" else app
    operations = [SCHEMA["/"]["POST"], SCHEMA["/healthz"]["GET"]]  # GET / documents a 405 only: not fuzzed
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    cases = st.one_of(*(op.as_strategy(generation_mode=mode) for op in operations for mode in modes))
    statuses: Counter[int] = Counter()

    @given(case=cases)
    @FUZZ
    def fuzz(case: Any) -> None:
        before = snapshot(r)
        response = case.call(app=asgi)
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.content[:300]
        case.validate_response(response)  # documented status, schema, headers; valid data accepted, invalid refused
        if not 200 <= response.status_code < 300:
            assert snapshot(r) == before

    fuzz()
    if mode == "unsigned":  # the HMAC is checked before parsing: an unsigned body is never even found malformed
        assert statuses[401] > 0 and statuses[400] == 0 and statuses[200] < statuses[401], statuses
    else:
        assert statuses[200] > 0 and statuses[400] > 0 and statuses[401] == 0, statuses


# --- hypothesis: realistic WAHA events, mutated ------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
chats = st.sampled_from(
    [ALICE, "5511977776666@c.us", "123456789012345@lid", "120363040000000000@g.us", "status@broadcast"]
)


@st.composite
def waha_events(draw: st.DrawFn) -> dict:
    """A valid WAHA event of any kind we handle, or another one."""
    chat = draw(chats)
    kind = draw(st.sampled_from(["message", "message.any", "own", "ack", "status", "other"]))
    key_id = draw(st.text("ABCDEF0123456789", min_size=4, max_size=20))
    if kind in ("message", "message.any"):
        return wp.envelope(kind, wp.message_payload(chat, draw(st.text(max_size=200)), key_id=key_id))
    if kind == "own":
        return wp.envelope("message.any", wp.message_payload(chat, "eco", key_id=key_id, from_me=True, source="app"))
    if kind == "ack":
        return wp.ack_event(
            f"{draw(st.sampled_from(['true', 'false']))}_{chat}_{key_id}", draw(st.integers(-1, 4)), chat
        )
    if kind == "status":
        return wp.session_status_event(draw(st.sampled_from(["WORKING", "STOPPED", "SCAN_QR_CODE", "FAILED"])))
    return wp.envelope(draw(st.sampled_from(["message.reaction", "presence.update", "call.received"])), {"id": key_id})


def key_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found: list[tuple] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += [(*prefix, k), *key_paths(v, (*prefix, k))]
    return found


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A WAHA event with a few fields deleted or replaced by any JSON value (NaN and Infinity included)."""
    body = json.loads(json.dumps(draw(waha_events())))  # a deep copy: envelopes share wp.ME and wp.ENVIRONMENT
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(key_paths(body)))
        node = body
        for k in path[:-1]:
            node = node[k] if isinstance(node, dict) else {}
        if isinstance(node, dict) and path[-1] in node:
            if draw(st.booleans()):
                del node[path[-1]]
            else:
                node[path[-1]] = draw(json_values)
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode()


@pytest.fixture
def signed_client(redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> TestClient:
    return webhook_client(request, configured_app(monkeypatch, hmac_key=KEY))


def post_signed(client: Any, raw: bytes) -> Any:
    return client.post(
        "/", content=raw, headers={"Content-Type": "application/json", "X-Webhook-Hmac": wp.sign(raw, KEY)}
    )


def test_mutated_waha_events_are_stored_or_refused_never_5xx(signed_client: Any, r: redis.Redis) -> None:
    operation = SCHEMA["/"]["POST"]
    statuses: Counter[str] = Counter()

    @given(raw=mutated_events())
    @settings(FUZZ, max_examples=150)
    def fuzz(raw: bytes) -> None:
        before = snapshot(r)
        res = post_signed(signed_client, raw)
        assert res.status_code in (200, 400), (res.status_code, res.content[:300])
        operation.validate_response(res)
        statuses[res.json().get("status", "refused")] += 1
        if res.status_code == 400:
            assert snapshot(r) == before
        elif res.json()["status"] == "accepted":
            body = json.loads(raw)
            chat = body["payload"]["to"] if body["payload"]["fromMe"] else body["payload"]["from"]
            stored = read_history(r, body["session"], chat)
            assert body["payload"]["id"] in {m["id"] for m in stored}

    fuzz()
    assert statuses["accepted"] > 0 and statuses["refused"] > 0 and statuses["ignored"] > 0, statuses


def test_arbitrary_bytes_are_refused_never_5xx(signed_client: Any, r: redis.Redis) -> None:
    @given(raw=st.binary(max_size=3000) | st.text(max_size=300).map(str.encode))
    @FUZZ
    def fuzz(raw: bytes) -> None:
        before = snapshot(r)
        res = post_signed(signed_client, raw)
        assert res.status_code == 400 and "error" in res.json(), (res.status_code, res.content[:200])
        assert snapshot(r) == before

    fuzz()


header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300)


def test_fuzzed_auth_and_type_headers_are_refused_never_5xx(
    redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    client = webhook_client(request, configured_app(monkeypatch, hmac_key=KEY, WEBHOOK_MAX_SKEW_S="300"))
    body = wp.message_event(ALICE, "oi")
    raw = wp.encode(body)

    @given(hmac=header_values | st.none(), stamp=header_values | st.none(), ctype=header_values)
    @FUZZ
    def fuzz(hmac: str | None, stamp: str | None, ctype: str) -> None:
        headers = {"Content-Type": ctype.encode()}  # as UTF-8 octets (raw Latin-1 ones: test_hostile_input)
        headers |= {"X-Webhook-Hmac": hmac.encode()} if hmac is not None else {}
        headers |= {"X-Webhook-Timestamp": stamp.encode()} if stamp is not None else {}
        before = snapshot(r)
        res = client.post("/", content=raw, headers=headers)
        assert res.status_code in (401, 415), (res.status_code, res.content[:200])
        assert snapshot(r) == before

    fuzz()


# --- the document against the code -------------------------------------------------------------------

SPEC = yaml.safe_load(SPEC_PATH.read_text())
WEBHOOK_CODE = [
    "wsm/ingest/http.py",
    "wsm/waha/signature.py",
    "wsm/waha/event.py",
    "wsm/ingest/ingestor.py",
    "wsm/core/errors.py",
]


def documented(path: str, method: str) -> set[int]:
    return {int(status) for status in SPEC["paths"][path][method]["responses"]}


def test_every_status_the_code_can_return_is_documented() -> None:
    """Read the statuses out of the code (BadRequest(status=...), the status argument of a Response or an
    _error(...), returned tuples, the error default)."""
    in_code: set[int] = set()
    for name in WEBHOOK_CODE:
        source = (REPO / name).read_text()
        in_code |= {int(s) for s in re.findall(r"status(?:: int)? ?= ?(\d{3})\b", source)}
        in_code |= {int(s) for s in re.findall(r"\}, (\d{3})\b", source)}
        in_code |= {int(s) for s in re.findall(r"\b(?:Response|_error)\(.*?, (\d{3})\b", source)}
    assert {200, 400, 401, 405, 408, 413, 415, 503} <= in_code, in_code  # the scan itself works
    everywhere = set().union(*(documented(path, method) for path in SPEC["paths"] for method in SPEC["paths"][path]))
    assert in_code <= everywhere, f"undocumented: {in_code - everywhere}"


def test_every_documented_answer_matches_what_the_app_says(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """One request per documented answer: right status, documented, body and required headers as the spec says."""
    good = wp.message_event(ALICE, "oi")
    raw = wp.encode(good)
    as_json = {"Content-Type": "application/json"}
    client = webhook_client(request, configured_app(monkeypatch))
    answers = [  # (path, method whose documentation applies, response, expected status)
        ("/", "POST", client.post("/", content=raw, headers=as_json), 200),
        ("/", "POST", client.post("/", content=raw, headers=as_json), 200),  # duplicate
        (
            "/",
            "POST",
            client.post("/", content=wp.encode(wp.ack_event(good["payload"]["id"], 3, ALICE)), headers=as_json),
            200,
        ),
        ("/", "POST", client.post("/", content=wp.encode(wp.session_status_event("WORKING")), headers=as_json), 200),
        ("/", "POST", client.post("/", content=wp.encode(wp.message_event("120363@g.us", "x")), headers=as_json), 200),
        ("/", "POST", client.post("/", content=b"{", headers=as_json), 400),
        ("/", "POST", client.post("/", content=b"{" + b" " * 2_000_000 + b"}", headers=as_json), 413),
        ("/", "POST", client.post("/", content=raw, headers={"Content-Type": "text/plain"}), 415),
        ("/", "GET", client.get("/"), 405),
        ("/", "GET", client.put("/", json=good), 405),
        ("/healthz", "GET", client.get("/healthz"), 200),
        ("/healthz", "POST", client.post("/healthz", json=good), 405),
        ("/metrics", "GET", client.get("/metrics"), 403),  # WSM_METRICS_TOKEN unset
        ("/metrics", "POST", client.post("/metrics", json=good), 405),
    ]
    metered = webhook_client(request, configured_app(monkeypatch, WSM_METRICS_TOKEN="t0ken"))
    answers.append(("/metrics", "GET", metered.get("/metrics", headers={"Authorization": "Bearer t0ken"}), 200))
    answers.append(("/metrics", "GET", metered.get("/metrics", headers={"Authorization": "Bearer x"}), 401))
    monkeypatch.delenv("WSM_METRICS_TOKEN")
    signed = webhook_client(request, configured_app(monkeypatch, hmac_key=KEY))
    answers.append(("/", "POST", signed.post("/", content=raw, headers={**as_json, "X-Webhook-Hmac": "0" * 128}), 401))
    broken = webhook_client(request, configured_app(monkeypatch, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    with ThreadPoolExecutor(2) as pool:  # redis-py retries a refused connection for ~3 s: wait for both at once
        down = pool.submit(broken.post, "/", content=raw, headers=as_json), pool.submit(broken.get, "/healthz")
        answers += [("/", "POST", down[0].result(), 503), ("/healthz", "GET", down[1].result(), 503)]

    seen: dict[tuple[str, str], set[int]] = {
        (path, method): set() for path in SPEC["paths"] for method in SPEC["paths"][path]
    }
    for path, method, res, expected in answers:
        assert res.status_code == expected, (path, method, expected, res.content[:200])
        assert res.status_code in documented(path, method.lower()), (path, method, res.status_code)
        SCHEMA[path][method].validate_response(res)  # body schema and required headers (Allow, Retry-After)
        seen[(path, method.lower())].add(res.status_code)
    assert seen[("/", "post")] == documented("/", "post") - {408}  # 408 needs a real slow socket: test_hostile_input
    assert all(seen[key] == documented(*key) for key in seen if key != ("/", "post"))


def test_request_examples_in_the_document_are_accepted(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    client = webhook_client(request, configured_app(monkeypatch))
    examples = SPEC["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for name, example in examples.items():
        res = client.post("/", content=json.dumps(example["value"]), headers={"Content-Type": "application/json"})
        assert res.status_code == 200 and res.json()["status"] in ("accepted", "ignored", "stored"), (name, res.json())
        SCHEMA["/"]["POST"].validate_response(res)
