"""A recording WAHA stand-in for the benchmarks: answers like WAHA and remembers when each sendText came.

It runs as its own process (``python -m bench.recorder --port P``), so the load generator's GIL
never delays an arrival; times are ``time.time()`` on this machine, the clock the senders use too.
``disable_nagle_algorithm`` avoids http.server's ~40 ms stall on keep-alive answers.

    POST /api/sendText        201 {"id": "true_<chat>_<hex>"}; recorded as [chat, text, arrived, answered]
    POST /api/<anything else> 201 {}
    GET  /api/sessions/<name> 200 {"name": ..., "status": "WORKING"}
    POST /bench/reset         {"delay_ms": D}: forget everything; from now on answer every call after D ms
    GET  /bench/texts         every recorded sendText, in arrival order
    GET  /bench/calls         how many calls each path got, and how many message ids sendSeen marked
    GET  /bench/wait?chat=C&count=K&timeout_s=T   block until chat C has K answered sendTexts; {"count": n}
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import requests

from infra.platform.processes import ManagedProcess
from infra.platform.redis_server import free_port


class Recording:
    """What the stand-in saw; one lock, one condition per chat so a waiter wakes only for its own chat."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delay_s = 0.0
        self.texts: list[list[Any]] = []
        self.calls: Counter[str] = Counter()
        self._answered: Counter[str] = Counter()
        self._conds: dict[str, threading.Condition] = {}

    def reset(self, delay_ms: float) -> None:
        with self.lock:
            self.delay_s = delay_ms / 1000
            self.texts.clear()
            self.calls.clear()
            self._answered.clear()

    def text(self, chat: str, text: str, arrived: float, answered: float) -> None:
        with self.lock:
            self.texts.append([chat, text, arrived, answered])
            self._answered[chat] += 1
            cond = self._conds.get(chat)
            if cond is not None:
                cond.notify_all()

    def wait(self, chat: str, count: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            cond = self._conds.setdefault(chat, threading.Condition(self.lock))
            while self._answered[chat] < count and (left := deadline - time.monotonic()) > 0:
                cond.wait(left)
            return self._answered[chat]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        arrived = time.time()
        rec = self.server.recording
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        path = urlsplit(self.path).path
        if path == "/bench/reset":
            rec.reset(float(body.get("delay_ms", 0)))
            return self._answer(200, {"ok": True})
        if rec.delay_s:
            time.sleep(rec.delay_s)
        with rec.lock:
            rec.calls[path] += 1
            if path == "/api/sendSeen":
                rec.calls["sendSeen messageIds"] += len(body.get("messageIds") or [])
        if path != "/api/sendText":
            return self._answer(201, {})
        chat = str(body.get("chatId", ""))
        rec.text(chat, str(body.get("text", "")), arrived, time.time())
        self._answer(201, {"id": f"true_{chat}_{uuid.uuid4().hex[:20].upper()}"})

    def do_GET(self) -> None:
        rec = self.server.recording
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/bench/texts":
            with rec.lock:
                return self._answer(200, list(rec.texts))
        if url.path == "/bench/calls":
            with rec.lock:
                return self._answer(200, dict(rec.calls))
        if url.path == "/bench/wait":
            n = rec.wait(query["chat"], int(query["count"]), float(query.get("timeout_s", 10)))
            return self._answer(200, {"count": n})
        if url.path.startswith("/api/sessions/"):
            return self._answer(200, {"name": url.path.rsplit("/", 1)[1], "status": "WORKING"})
        self._answer(404, {"statusCode": 404, "message": "Not Found"})

    def _answer(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int) -> None:
        self.recording = Recording()
        super().__init__(("127.0.0.1", port), _Handler)


@dataclass(frozen=True)
class Text:
    chat: str
    text: str
    arrived: float  # time.time() when the sendText reached the stand-in
    answered: float  # time.time() when the stand-in answered it (after the configured delay)


class RecorderClient:
    """Talks to a running recorder; ``url`` is what the system under test uses as WAHA_URL."""

    def __init__(self, url: str, pid: int = 0) -> None:
        self.url = url
        self.pid = pid  # the recorder process (leads its own process group)
        self.http = requests.Session()

    def reset(self, delay_ms: float = 0) -> None:
        self.http.post(f"{self.url}/bench/reset", json={"delay_ms": delay_ms}, timeout=10).raise_for_status()

    def texts(self) -> list[Text]:
        res = self.http.get(f"{self.url}/bench/texts", timeout=60)
        res.raise_for_status()
        return [Text(*row) for row in res.json()]

    def calls(self) -> dict[str, int]:
        return self.http.get(f"{self.url}/bench/calls", timeout=10).json()

    def close(self) -> None:
        self.http.close()


@contextmanager
def recorder(log_path: Any = None) -> Iterator[RecorderClient]:
    """Start the recorder as a child process on a free port; stop it on exit."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.recorder", "--port", str(port)]
    proc = ManagedProcess("recorder", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, port, log_path)
    proc.start()
    client = RecorderClient(f"http://127.0.0.1:{port}", proc.proc.pid if proc.proc else 0)
    try:
        yield client
    finally:
        client.close()
        proc.stop()


@click.command()
@click.option("--port", type=int, required=True)
def main(port: int) -> None:
    """Serve the recording WAHA stand-in until killed."""
    server = _Server(port)
    click.echo(f"bench recorder on 127.0.0.1:{port}")
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
