"""The client every hot-path call goes through, on libcurl and on its urllib3 fallback, against a real HTTP/1.1
server on a free port."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from infra.platform.redis_server import free_port
from wsm.core.http_client import Answer, CurlClient, HttpClient, Transfers, TransportError, Urllib3Client


class Recording(BaseHTTPRequestHandler):
    """Answers 201 with what it was sent; counts the connections it was sent them on."""

    protocol_version = "HTTP/1.1"  # keep-alive, as WAHA and the functions answer
    connections: ClassVar[set[int]] = set()
    delay_s = 0.0
    lock = threading.Lock()

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _answer(self, body: bytes) -> None:
        with self.lock:
            self.connections.add(id(self.connection))
        time.sleep(self.delay_s)
        seen = {"method": self.command, "path": self.path, "body": body.decode(), "key": self.headers.get("X-Key")}
        seen["expect"] = self.headers.get("Expect")
        out = json.dumps(seen).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    """A listen backlog like a real server's: the default 5 drops a burst's sixth connect, and the kernel's retry
    of it a second later would look like calls made one after another."""

    request_queue_size = 64


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    Recording.connections = set()
    Recording.delay_s = 0.0
    httpd = Server(("127.0.0.1", 0), Recording)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(params=[CurlClient, Urllib3Client], ids=["curl", "urllib3"])
def client(request: pytest.FixtureRequest) -> type[HttpClient]:
    return request.param


def test_pycurl_is_what_runs_here() -> None:
    assert HttpClient is CurlClient  # make setup installs it; only a platform without its wheel falls back


def seen(answer: Answer) -> dict:
    return json.loads(answer.body)


def test_calls_go_to_the_base_path_with_its_query_and_the_client_headers(
    server: ThreadingHTTPServer, client: type[HttpClient]
) -> None:
    http = client(f"http://127.0.0.1:{server.server_port}/waha/?k=1", {"X-Key": "s3"}, timeout_s=5)
    posted = http.request("POST", "/api/sendText", json.dumps({"text": "olá"}, ensure_ascii=False).encode())
    got = http.request("GET", "/api/sessions/default")
    assert posted.status == 201 and seen(posted)["path"] == "/waha/api/sendText?k=1"
    assert seen(posted)["body"] == '{"text": "olá"}' and seen(posted)["key"] == "s3"
    assert seen(posted)["expect"] is None  # never waits for a 100-continue
    assert seen(got)["method"] == "GET" and seen(got)["body"] == ""


def test_sequential_calls_reuse_one_connection(server: ThreadingHTTPServer, client: type[HttpClient]) -> None:
    http = client(f"http://127.0.0.1:{server.server_port}", {}, timeout_s=5)
    for i in range(20):
        assert seen(http.request("POST", "/x", str(i).encode()))["body"] == str(i)
    assert len(Recording.connections) == 1


def test_concurrent_calls_each_get_their_own_answer(server: ThreadingHTTPServer, client: type[HttpClient]) -> None:
    Recording.delay_s = 0.02
    http = client(f"http://127.0.0.1:{server.server_port}", {}, timeout_s=5)
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda i: seen(http.request("POST", f"/{i}", str(i).encode())), range(40)))
    assert [(b["path"], b["body"]) for b in bodies] == [(f"/{i}", str(i)) for i in range(40)]
    assert 1 < len(Recording.connections) <= 8  # as many connections as calls at once, then reused


def test_a_server_that_is_not_there_is_a_transport_error_after_the_connect_retries(client: type[HttpClient]) -> None:
    http = client(f"http://127.0.0.1:{free_port()}", {}, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(TransportError, match="refused") as caught:
        http.request("POST", "/api/sendText", b"{}")
    assert not caught.value.timed_out
    assert time.monotonic() - started >= 0.4  # two further tries, the second after a pause
    with pytest.raises(TransportError):
        client(f"http://127.0.0.1:{free_port()}", {}, timeout_s=2).request("GET", "/", retry=False)


def test_a_slow_answer_is_a_timeout_and_the_client_still_works_after(
    server: ThreadingHTTPServer, client: type[HttpClient]
) -> None:
    http = client(f"http://127.0.0.1:{server.server_port}", {}, timeout_s=5)
    Recording.delay_s = 1.0
    with pytest.raises(TransportError, match="timed out") as caught:
        http.request("POST", "/slow", b"{}", timeout_s=0.2)
    assert caught.value.timed_out
    Recording.delay_s = 0.0
    assert http.request("POST", "/fast", b"1").status == 201


def test_errors_never_name_the_url(client: type[HttpClient]) -> None:
    secret_url = f"http://user:pw@127.0.0.1:{free_port()}/path?token=hunter2"
    with pytest.raises(TransportError) as caught:
        client(secret_url, {}, timeout_s=1).request("GET", "/", retry=False)
    assert "hunter2" not in str(caught.value) and "pw" not in str(caught.value)


@pytest.mark.parametrize("url", ["ftp://example.org/", "file:///etc/passwd", "127.0.0.1:8080", ""])
def test_only_http_urls_are_accepted(url: str, client: type[HttpClient]) -> None:
    with pytest.raises(ValueError, match="not an http"):
        client(url, {}, timeout_s=1)


def test_only_get_and_post(server: ThreadingHTTPServer, client: type[HttpClient]) -> None:
    with pytest.raises(ValueError, match="unsupported method"):
        client(f"http://127.0.0.1:{server.server_port}", {}, timeout_s=1).request("DELETE", "/")


def test_a_root_url_posts_to_slash(server: ThreadingHTTPServer, client: type[HttpClient]) -> None:
    http = client(f"http://127.0.0.1:{server.server_port}/", {}, timeout_s=5)  # the router's targets look so
    assert seen(http.request("POST", "", b"{}"))["path"] == "/"


class Redirecting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(302)
        self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_is_an_error_never_a_send_nor_followed(client: type[HttpClient]) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(TransportError, match="redirected"):
            client(f"http://127.0.0.1:{httpd.server_port}", {}, timeout_s=5).request("POST", "/api/sendText", b"{}")
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("value", ["chave-ç", "a\r\nX-Evil: 1"])
def test_a_header_that_is_not_one_line_of_ascii_is_refused_at_once(value: str, client: type[HttpClient]) -> None:
    with pytest.raises(ValueError, match="one line of ASCII"):
        client("http://127.0.0.1:9", {"X-Api-Key": value}, timeout_s=1)


# --- Transfers: many calls at once from one thread (the router's deliveries) ----------------------------------


def run_until_done(transfers: Transfers, results: list, expected: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while len(results) < expected and time.monotonic() < deadline:
        transfers.wait([], 0.05)


def test_transfers_run_calls_at_once_from_one_thread_each_with_its_own_answer(server: ThreadingHTTPServer) -> None:
    Recording.delay_s = 0.3
    client, transfers, results = CurlClient(f"http://127.0.0.1:{server.server_port}/api", {}, 5), Transfers(), []
    started = time.monotonic()
    for i in range(8):
        transfers.start(client, "POST", f"/n{i}", f"body {i}".encode(), [], results.append)
    assert len(transfers) == 8
    run_until_done(transfers, results, 8)
    assert time.monotonic() - started < 8 * 0.3 / 2  # at once, not one after another
    assert sorted(json.loads(r.body)["body"] for r in results) == [f"body {i}" for i in range(8)]
    assert all(isinstance(r, Answer) and r.status == 201 for r in results) and len(transfers) == 0
    again: list = []  # the handles went back to the client: a plain call reuses one
    transfers.start(client, "GET", "/again", None, [], again.append)
    run_until_done(transfers, again, 1)
    assert json.loads(again[0].body)["path"] == "/api/again"
    transfers.close()


def test_a_transfer_that_cannot_connect_or_times_out_is_a_transport_error(server: ThreadingHTTPServer) -> None:
    transfers, results = Transfers(), []
    transfers.start(CurlClient(f"http://127.0.0.1:{free_port()}/", {}, 2), "POST", "", b"x", [], results.append)
    run_until_done(transfers, results, 1)
    assert isinstance(results[0], TransportError) and "refused" in str(results[0])
    Recording.delay_s = 1.0
    slow = CurlClient(f"http://127.0.0.1:{server.server_port}/", {}, 0.2)
    transfers.start(slow, "POST", "", b"x", [], results.append)
    run_until_done(transfers, results, 2)
    assert isinstance(results[1], TransportError) and results[1].timed_out
    transfers.close()


def test_a_transfer_answered_with_a_redirect_is_an_error() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    transfers, results = Transfers(), []
    try:
        redirecting = CurlClient(f"http://127.0.0.1:{httpd.server_port}/", {}, 2)
        transfers.start(redirecting, "POST", "", b"x", [], results.append)
        run_until_done(transfers, results, 1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert isinstance(results[0], TransportError) and "redirected" in str(results[0])
    transfers.close()


def test_waiting_reports_which_of_the_callers_descriptors_can_be_read() -> None:
    read_end, write_end = os.pipe()
    transfers = Transfers()
    try:
        assert transfers.wait([read_end], 0.05) == set()
        os.write(write_end, b"x")
        assert transfers.wait([read_end], 1) == {read_end}
    finally:
        os.close(read_end)
        os.close(write_end)
        transfers.close()
