"""Hostile input, case by case: each gets a clear 4xx (never a 5xx) and changes nothing in Redis.

In-process (the webhook's ASGI app behind Starlette's TestClient, HMAC on and every body signed, so the parser and
validator behind the signature are what is attacked) and against a real Functions Framework
process over raw sockets for what only a real server shows: duplicated and non-UTF-8 headers,
chunked bodies, replays after the window, and slow clients.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from starlette.testclient import TestClient

from infra.platform.processes import ManagedProcess, function_process
from infra.platform.redis_server import RedisServer, free_port
from infra.waha_sim import payloads as wp
from tests.conftest import snapshot
from tests.webhook_app import webhook_client
from wsm.conversation.history import read_history
from wsm.core.settings import get_settings

KEY = "hostile-test-key"
ALICE = "5511988887777@c.us"
LIMIT = 1024 * 1024  # WEBHOOK_MAX_BODY_BYTES default


@pytest.fixture
def client(redis_url: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> TestClient:
    monkeypatch.setenv("WEBHOOK_HMAC_KEY", KEY)
    monkeypatch.delenv("WEBHOOK_MAX_SKEW_S", raising=False)
    monkeypatch.delenv("WEBHOOK_MAX_BODY_BYTES", raising=False)
    get_settings.cache_clear()
    return webhook_client(request)


def signed(client: Any, raw: bytes, **headers: str) -> Any:
    """POST ``raw`` with a valid signature over exactly these bytes."""
    h = {"Content-Type": "application/json", "X-Webhook-Hmac": wp.sign(raw, KEY), **headers}
    return client.post("/", content=raw, headers=h)


def refused(client: Any, r: redis.Redis, raw: bytes, status: int = 400) -> str:
    """Assert ``raw`` is refused with ``status`` and a JSON error, and that Redis did not change."""
    before = snapshot(r)
    res = signed(client, raw)
    assert res.status_code == status, (res.status_code, res.content[:300])
    assert res.headers["Content-Type"].partition(";")[0] == "application/json"
    assert isinstance(res.json()["error"], str) and "Traceback" not in res.json()["error"]
    assert snapshot(r) == before
    return res.json()["error"]


# --- deep nesting -----------------------------------------------------------------------------------

DEPTH = 100_000


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * DEPTH + b"]" * DEPTH,
        b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        b"[" * DEPTH,  # never closed
        wp.encode(wp.message_event(ALICE, "oi")).replace(b'"_data":{}', b'"_data":' + b"[" * DEPTH + b"]" * DEPTH),
    ],
    ids=["arrays", "objects", "unclosed", "inside-payload"],
)
def test_deep_nesting_is_400_not_a_recursion_crash(client: Any, r: redis.Redis, raw: bytes) -> None:
    assert "malformed JSON" in refused(client, r, raw)


def test_legal_nesting_is_accepted_and_kept_flat_so_later_decoders_never_choke(client: Any) -> None:
    """A deep media.error is legal JSON; history keeps it flat, so the worker and Lua's cjson read it later."""
    body = wp.message_event(ALICE, "foto", media={"url": None, "mimetype": "image/jpeg", "filename": None})
    deep: object = "too big"
    for _ in range(900):
        deep = {"cause": deep}
    body["payload"]["media"]["error"] = {"message": "download failed", "cause": deep}
    assert signed(client, wp.encode(body)).json()["status"] == "accepted"
    ack = signed(client, wp.encode(wp.ack_event(body["payload"]["id"], 3, ALICE)))
    assert ack.status_code == 200 and ack.json()["status"] == "updated"  # Lua decoded and re-encoded the record
    [stored] = read_history(redis.Redis.from_url(get_settings().redis_url, decode_responses=True), "default", ALICE)
    assert stored["media"]["error"] == {"message": "download failed"} and stored["status"] == "READ"


# --- huge strings -----------------------------------------------------------------------------------


def body_of_size(size: int) -> bytes:
    """A valid message envelope of exactly ``size`` bytes (the text fills it up)."""
    body = wp.message_event(ALICE, "")
    padding = size - len(wp.encode(body))
    body["payload"]["body"] = "x" * padding
    raw = wp.encode(body)
    assert len(raw) == size
    return raw


def test_body_of_exactly_the_limit_is_stored_whole(client: Any) -> None:
    raw = body_of_size(LIMIT)
    res = signed(client, raw)
    assert res.status_code == 200 and res.json()["status"] == "accepted"
    [stored] = read_history(redis.Redis.from_url(get_settings().redis_url, decode_responses=True), "default", ALICE)
    assert stored["text"] == json.loads(raw)["payload"]["body"]


def test_body_one_byte_over_the_limit_is_413(client: Any, r: redis.Redis) -> None:
    assert "larger than" in refused(client, r, body_of_size(LIMIT + 1), status=413)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("id", "x" * 500_000, "payload.id"),
        ("from", "5" * 500_000 + "@c.us", "payload.from"),
        ("to", "5" * 300 + "@c.us", "payload.to"),
        ("session", "s" * 500_000, "session"),
    ],
)
def test_huge_ids_and_names_are_400(client: Any, r: redis.Redis, field: str, value: str, says: str) -> None:
    body = wp.message_event(ALICE, "oi")
    if field == "session":
        body["session"] = value
    else:
        body["payload"][field] = value
    assert says in refused(client, r, wp.encode(body))


def test_huge_header_values_are_401(client: Any, r: redis.Redis) -> None:
    raw = wp.encode(wp.message_event(ALICE, "oi"))
    before = snapshot(r)
    for value in ("f" * 8000, wp.sign(raw, KEY) + "0" * 8000, "é" * 4000):  # sent as UTF-8 octets
        headers = {"Content-Type": "application/json", "X-Webhook-Hmac": value.encode()}
        res = client.post("/", content=raw, headers=headers)
        assert res.status_code == 401 and res.json()["error"] == "invalid X-Webhook-Hmac signature"
    assert snapshot(r) == before


# --- wrong types everywhere -------------------------------------------------------------------------

WRONG = [None, True, False, 0, -1, 1.5, 2**64, -(2**64), "", "x", "9" * 300, [], [1, "a"], {}, {"a": {"b": []}}]


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path in a JSON object (containers included)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))


def replaced(body: dict, path: tuple, value: Any) -> dict:
    copy = json.loads(json.dumps(body))
    node = copy
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return copy


def samples() -> list[dict]:
    media = {"url": "http://waha/f.jpg", "mimetype": "image/jpeg", "filename": "f.jpg", "error": None}
    return [
        wp.message_event(ALICE, "oi", media=media),
        wp.envelope("message.any", wp.message_payload(ALICE, "eco", from_me=True, source="app")),
        wp.ack_event(f"true_{ALICE}_ABC", 3, ALICE),
        wp.session_status_event("WORKING"),
    ]


@pytest.mark.parametrize("sample", samples(), ids=["message", "message.any", "message.ack", "session.status"])
def test_wrong_types_everywhere_are_400_or_ignored_never_5xx(client: Any, r: redis.Redis, sample: dict) -> None:
    """Every field of envelope and payload, set to every kind of JSON value: 200 or 400, and 400 changes nothing."""
    answers: dict[int, int] = {}
    for n, path in enumerate(paths(sample)):
        for value in WRONG:
            base = sample
            if sample["event"] in ("message", "message.any"):  # a fresh message id, so nothing is a duplicate
                base = replaced(sample, ("payload", "id"), f"{sample['payload']['id']}_{n}_{len(answers)}")
            body = replaced(base, path, value)
            before = snapshot(r)
            res = signed(client, wp.encode(body))
            answers[res.status_code] = answers.get(res.status_code, 0) + 1
            assert res.status_code in (200, 400), (path, value, res.status_code, res.content[:200])
            if res.status_code == 400:
                assert snapshot(r) == before, (path, value)
            else:
                r.flushdb()  # keep the next snapshot small
    assert answers.get(400, 0) > 20 and answers.get(200, 0) > 5, answers  # both kinds of answer were exercised


# --- encodings and numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\xff"}',
        b'{"a": "\xc0\xaf"}',  # overlong "/"
        b'{"a": "\xe2\x82"}',  # truncated sequence
        b'{"a": "\xed\xa0\x80"}',  # a UTF-16 surrogate encoded as UTF-8 (CESU)
        b'{"\xfe": 1}',
        wp.encode(wp.message_event(ALICE, "PLACEHOLDER")).replace(b"PLACEHOLDER", b"ol\xe1 mundo"),  # Latin-1
    ],
    ids=["ff", "overlong", "truncated", "cesu", "in-key", "latin1-text"],
)
def test_invalid_utf8_is_400(client: Any, r: redis.Redis, raw: bytes) -> None:
    assert "UTF-8" in refused(client, r, raw)


def test_lone_surrogate_escapes_are_stored_as_replacement_characters(client: Any) -> None:
    """Half an emoji (a lone \\ud83d) is legal JSON that Redis cannot take as UTF-8: kept as U+FFFD."""
    body = wp.message_event(ALICE, "PLACEHOLDER")
    raw = wp.encode(body).replace(b"PLACEHOLDER", b"ok \\ud83d\\ude00 cut \\ud83d")
    raw = raw.replace(b'"id":"false_', b'"id":"\\udc00false_')
    res = signed(client, raw)
    assert res.status_code == 200 and res.json()["status"] == "accepted"
    [stored] = read_history(redis.Redis.from_url(get_settings().redis_url, decode_responses=True), "default", ALICE)
    assert stored["text"] == "ok 😀 cut \ufffd" and stored["id"].startswith("\ufffdfalse_")


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (b'"timestamp":', b'"timestamp":NaN,"t":', "NaN is not a JSON value"),
        (b'"timestamp":', b'"timestamp":Infinity,"t":', "Infinity is not a JSON value"),
        (b'"timestamp":', b'"timestamp":-Infinity,"t":', "-Infinity is not a JSON value"),
        (b'"timestamp":', b'"timestamp":1e400,"t":', "'timestamp' must be a finite number"),
        (b'"timestamp":', b'"timestamp":' + b"9" * 400 + b',"t":', "'timestamp' must be a finite number"),
        (b'"ack":1,', b'"ack":9007199254740992,', "'payload.ack' must be a finite number"),
        (b'"ack":1,', b'"ack":-1e309,', "'payload.ack' must be int"),
    ],
    ids=["nan", "inf", "-inf", "1e400", "400-digits", "2^53", "-1e309"],
)
def test_non_finite_and_out_of_range_numbers_are_400(
    client: Any, r: redis.Redis, old: bytes, new: bytes, says: str
) -> None:
    raw = wp.encode(wp.message_event(ALICE, "oi"))
    assert old in raw
    assert says in refused(client, r, raw.replace(old, new, 1))


# --- a real Functions Framework process, raw sockets ------------------------------------------------


def http_raw(port: int, request: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes, return (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(request)
        return read_answer(s, timeout_s)


def read_answer(s: socket.socket, timeout_s: float) -> tuple[int, bytes]:
    s.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


def post_request(raw: bytes, headers: list[tuple[bytes, bytes]], content_length: int | None = None) -> bytes:
    lines = [b"POST / HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if content_length is not None:
        lines.append(b"Content-Length: " + str(content_length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + raw


def waha_headers(raw: bytes, body: dict) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in wp.headers(raw, body, KEY).items()]


def start(redis_url: str, **env: str) -> ManagedProcess:
    full = dict(os.environ, REDIS_URL=redis_url, WORKERS="1", GUNICORN_LOG_LEVEL="critical", **env)
    return function_process("webhook", free_port(), full).start()


SKEW_S = 2


@pytest.fixture(scope="module")
def webhook_process(redis_server: RedisServer) -> Iterator[int]:
    proc = start(
        redis_server.url,
        THREADS="4",
        WEBHOOK_HMAC_KEY=KEY,
        WEBHOOK_MAX_SKEW_S=str(SKEW_S),
        WEBHOOK_MAX_BODY_BYTES="65536",
        WEBHOOK_READ_TIMEOUT_S="2",
    )
    yield proc.port  # type: ignore[misc]
    proc.stop()


def test_two_hmac_headers_are_refused_even_when_both_are_valid(webhook_process: int, r: redis.Redis) -> None:
    body = wp.message_event(ALICE, "oi")
    raw = wp.encode(body)
    good = waha_headers(raw, body)
    signature = wp.sign(raw, KEY).encode()
    before = snapshot(r)
    for extra in (signature, b"0" * 128):
        status, answer = http_raw(webhook_process, post_request(raw, [*good, (b"X-Webhook-Hmac", extra)], len(raw)))
        assert status == 401 and json.loads(answer)["error"] == "invalid X-Webhook-Hmac signature"
    status, _ = http_raw(webhook_process, post_request(raw, [*good, (b"X-Webhook-Timestamp", b"1")], len(raw)))
    assert status == 401  # two timestamps: "<now>,1" is not a number
    assert snapshot(r) == before
    status, answer = http_raw(webhook_process, post_request(raw, good, len(raw)))
    assert status == 200 and json.loads(answer)["status"] == "accepted"  # the same request, once, is fine


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        (b"X-Webhook-Hmac", b"\xff\xfe\x80", 401),
        (b"X-Webhook-Hmac", "é".encode() * 64, 401),
        (b"X-Webhook-Timestamp", b"\xff", 401),
        (b"X-Webhook-Timestamp", b"9" * 4000, 401),
        (b"Content-Type", b"application/\xffjson", 415),
    ],
    ids=["hmac-bytes", "hmac-latin1", "timestamp-bytes", "timestamp-4000-digits", "content-type"],
)
def test_non_ascii_and_absurd_header_values_are_refused(
    webhook_process: int, r: redis.Redis, header: bytes, value: bytes, status: int
) -> None:
    body = wp.message_event(ALICE, "oi")
    raw = wp.encode(body)
    headers = [(k, v) for k, v in waha_headers(raw, body) if k.lower() != header.lower()] + [(header, value)]
    before = snapshot(r)
    got, answer = http_raw(webhook_process, post_request(raw, headers, len(raw)))
    assert got == status and "error" in json.loads(answer)
    assert snapshot(r) == before


def test_a_replayed_request_is_a_duplicate_inside_the_window_and_401_after(
    webhook_process: int, r: redis.Redis
) -> None:
    body = wp.message_event(ALICE, "pague 100")
    raw = wp.encode(body)
    captured = post_request(raw, waha_headers(raw, body), len(raw))
    status, answer = http_raw(webhook_process, captured)
    assert status == 200 and json.loads(answer)["status"] == "accepted"
    before = snapshot(r)
    status, answer = http_raw(webhook_process, captured)
    assert status == 200 and json.loads(answer)["status"] == "duplicate"  # dedupe covers the window itself
    time.sleep(SKEW_S + 0.5)
    status, answer = http_raw(webhook_process, captured)
    assert status == 401 and "window" in json.loads(answer)["error"]
    assert snapshot(r) == before


def test_chunked_bodies_are_limited_like_announced_ones(webhook_process: int, r: redis.Redis) -> None:
    def chunked(raw: bytes) -> bytes:
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(raw[i : i + 4096]), raw[i : i + 4096]) for i in range(0, len(raw), 4096)
        )
        return chunks + b"0\r\n\r\n"

    body = wp.message_event(ALICE, "y" * 70_000)
    raw = wp.encode(body)
    headers = [*waha_headers(raw, body), (b"Transfer-Encoding", b"chunked")]
    before = snapshot(r)
    status, answer = http_raw(webhook_process, post_request(chunked(raw), headers))
    assert status == 413 and "larger than 65536" in json.loads(answer)["error"]
    assert snapshot(r) == before
    small = wp.message_event(ALICE, "chunked e pequeno")
    raw = wp.encode(small)
    headers = [*waha_headers(raw, small), (b"Transfer-Encoding", b"chunked")]
    status, answer = http_raw(webhook_process, post_request(chunked(raw), headers))
    assert status == 200 and json.loads(answer)["status"] == "accepted"


def test_a_body_cut_short_is_refused_and_changes_nothing(webhook_process: int, r: redis.Redis) -> None:
    """Half the announced body, then the client closes its side. uvicorn takes that EOF for a disconnect and
    closes the connection, so the app's 400 may never reach the client (gunicorn's WSGI workers sent it on the
    half-closed socket); the 400 itself is checked in-process (test_a_body_shorter_than_its_content_length_is_400).
    Either way nothing is stored, and the server goes on serving."""
    body = wp.message_event(ALICE, "oi")
    raw = wp.encode(body)
    before = snapshot(r)
    with socket.create_connection(("127.0.0.1", webhook_process), timeout=10) as s:
        s.sendall(post_request(raw[: len(raw) // 2], waha_headers(raw, body), len(raw)))
        s.shutdown(socket.SHUT_WR)  # the client stops sending but waits for the answer
        try:
            status, answer = read_answer(s, 10)
        except ConnectionError:  # closed without an answer (not after the read deadline: that would be a 408)
            status, answer = 0, b""
    if status:
        assert status == 400 and "shorter than its Content-Length" in json.loads(answer)["error"]
    assert snapshot(r) == before
    status, answer = http_raw(webhook_process, post_request(raw, waha_headers(raw, body), len(raw)))
    assert status == 200 and json.loads(answer)["status"] == "accepted"  # the same message, whole, is stored


def test_a_body_shorter_than_its_content_length_is_400(client: Any, r: redis.Redis) -> None:
    """The app's own check, in-process: the body ended (the client went away) before its Content-Length."""
    raw = wp.encode(wp.message_event(ALICE, "oi"))
    before = snapshot(r)
    res = signed(client, raw[: len(raw) // 2], **{"Content-Length": str(len(raw))})
    assert res.status_code == 400 and "shorter than its Content-Length" in res.json()["error"]
    assert snapshot(r) == before


# --- slow clients -----------------------------------------------------------------------------------

READ_TIMEOUT_S = 2.0


@pytest.fixture
def two_thread_webhook(redis_url: str) -> Iterator[int]:
    """One worker with two threads: two slow clients are enough to hold every thread."""
    proc = start(redis_url, THREADS="2", WEBHOOK_READ_TIMEOUT_S=str(READ_TIMEOUT_S))
    yield proc.port  # type: ignore[misc]
    proc.stop()


class SlowClient(threading.Thread):
    """Announces a body, then sends one byte every ``interval_s`` (never, if None) until the server answers."""

    def __init__(self, port: int, interval_s: float | None) -> None:
        super().__init__(daemon=True)
        self.port, self.interval_s = port, interval_s
        self.cut_after_s: float | None = None
        self.answer = b""
        self.sent = 0

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            started = time.monotonic()
            s.sendall(post_request(b"", [(b"Content-Type", b"application/json")], content_length=100_000))
            while time.monotonic() - started < 30:
                readable, _, _ = select.select([s], [], [], self.interval_s or 30)
                if readable:  # an answer, or the server closed the connection
                    self.cut_after_s = time.monotonic() - started
                    s.settimeout(3)
                    try:
                        while chunk := s.recv(65536):
                            self.answer += chunk
                    except ConnectionResetError:  # closed with our dribbled bytes unread: the kernel resets
                        pass
                    return
                try:
                    s.sendall(b" ")
                    self.sent += 1
                except OSError:
                    self.cut_after_s = time.monotonic() - started
                    return


def timed_post(port: int) -> float:
    body = wp.message_event(ALICE, f"enquanto isso {time.monotonic_ns()}")
    raw = wp.encode(body)
    started = time.monotonic()
    res = requests.post(f"http://127.0.0.1:{port}/", data=raw, headers=wp.headers(raw, body), timeout=15)
    assert res.status_code == 200 and res.json()["status"] == "accepted"
    return time.monotonic() - started


def assert_cut_off(client: SlowClient) -> None:
    client.join(READ_TIMEOUT_S + 5)
    assert client.cut_after_s is not None, "the slow client was never cut off"
    assert READ_TIMEOUT_S - 0.2 <= client.cut_after_s <= READ_TIMEOUT_S + 1.5, client.cut_after_s
    if client.answer:
        assert client.answer.startswith(b"HTTP/1.1 408") and b"body not received within 2 s" in client.answer


def test_a_dribbling_client_is_cut_off_while_others_are_served(two_thread_webhook: int, r: redis.Redis) -> None:
    dribbler = SlowClient(two_thread_webhook, interval_s=1.0)  # 1 byte/s of a 100 kB body
    dribbler.start()
    time.sleep(0.3)
    latencies = [timed_post(two_thread_webhook) for _ in range(5)]  # served by the other thread meanwhile
    assert max(latencies) < 1.0, latencies
    assert_cut_off(dribbler)
    assert 1 <= dribbler.sent <= 4


def test_slow_clients_holding_every_thread_free_them_by_the_deadline(two_thread_webhook: int) -> None:
    """Without a read deadline these two would hold both threads forever and the third request never be served."""
    silent, dribbler = SlowClient(two_thread_webhook, None), SlowClient(two_thread_webhook, 1.0)
    silent.start()
    dribbler.start()
    time.sleep(0.3)
    waited = timed_post(two_thread_webhook)
    assert waited < READ_TIMEOUT_S + 1.5, waited
    for client in (silent, dribbler):
        assert_cut_off(client)
    assert silent.answer.startswith(b"HTTP/1.1 408")
