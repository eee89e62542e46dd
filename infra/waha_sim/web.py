"""The WAHA simulator's HTTP side: the server, request parsing, and the chat page with its ``/sim/*`` routes.

:mod:`infra.waha_sim.core` decides what WAHA answers; this module carries requests to it.
The page (``page.html``) plays the customers: what they type becomes a WAHA ``message``
webhook, and what the bot sends back through WAHA's REST API shows up in their chat panel. The page
routes are not part of WAHA: no API key, no failure controls, not recorded in ``calls``.

Directions are WAHA's point of view: ``in`` = a customer wrote to the bot's number,
``out`` = the bot sent something (text, typing, seen).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from infra.waha_sim.core import WahaSimulator

log = logging.getLogger(__name__)

PAGE_PATH = Path(__file__).with_name("page.html")
LONG_POLL_MAX_S = 25.0
KINDS = ("text", "typing", "paused", "seen")


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: JSON unless ``body`` is already bytes."""

    status: int
    body: Any
    content_type: str = "application/json; charset=utf-8"

    def encode(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


class Headers(dict[str, str]):
    """Request headers with lower-case keys; lookups ignore case, as HTTP does."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class InvalidJson:
    """A body declared as JSON that does not parse: answered 400, recorded with ``json=None``."""

    reason: str


class SimServer(ThreadingHTTPServer):
    """The HTTP server, tracking open connections so ``refuse_connections`` can cut them too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: WahaSimulator) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended badly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Parses requests and hands them to the page routes or the REST side."""

    protocol_version = "HTTP/1.1"  # keep-alive, like WAHA
    disable_nagle_algorithm = True  # else keep-alive answers stall ~40 ms (Nagle + delayed ACK)
    timeout = 300  # idle keep-alive connections are closed after this
    server: SimServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_json()
        sim = self.server.sim
        if url.path == "/health":
            reply = Reply(200, {"status": "ok"})
        elif url.path == "/" or url.path.startswith("/sim/"):
            page_body = None if isinstance(body, InvalidJson) else body
            reply = handle_page(sim, method, url.path, parse_qs(url.query), page_body)
        else:
            reply = sim.handle_rest(method, url.path, Headers(self.headers.items()), body)
        self._send(reply)

    def _read_json(self) -> Any:
        """The JSON body; None when absent or not declared JSON (as NestJS does); InvalidJson when malformed."""
        raw = self._read_body()
        if not raw or "json" not in self.headers.get("Content-Type", ""):
            return None
        try:
            return json.loads(raw)
        except ValueError as e:  # JSONDecodeError or UnicodeDecodeError
            return InvalidJson(f"Invalid JSON body: {e}")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, reply: Reply) -> None:
        data = reply.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class ChatLog:
    """What the page shows, numbered by ``seq`` so a poll asks only for what it has not seen yet."""

    def __init__(self, max_entries: int = 5000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._seq = 0
        self._closed = False
        self._cond = threading.Condition()

    def add(self, chat_id: str, direction: str, text: str = "", kind: str = "text") -> dict[str, Any]:
        if direction not in ("in", "out") or kind not in KINDS:
            raise ValueError(f"bad chat log entry: {direction=} {kind=}")
        with self._cond:
            self._seq += 1
            entry = {"seq": self._seq, "chat_id": chat_id, "direction": direction, "kind": kind}
            entry.update(text=text, t=time.time())
            self._entries.append(entry)
            self._cond.notify_all()
        return entry

    def since(self, seq: int, wait_s: float = 0.0) -> list[dict[str, Any]]:
        """Entries after ``seq``, waiting up to ``wait_s`` for one (a long poll).

        A ``seq`` ahead of ours means the simulator restarted: the caller gets everything again.
        """
        with self._cond:
            if seq > self._seq:
                seq = 0
            self._cond.wait_for(lambda: self._seq > seq or self._closed, timeout=min(wait_s, LONG_POLL_MAX_S))
            return [e for e in self._entries if e["seq"] > seq]

    def close(self) -> None:
        """Wake every waiting poll (on shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def handle_page(sim: WahaSimulator, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
    """Answer one page request; ``body`` is the parsed JSON body or None."""
    route = (method, path)
    if route == ("GET", "/"):
        return Reply(200, PAGE_PATH.read_bytes(), "text/html; charset=utf-8")
    if route == ("GET", "/sim/messages"):
        return _messages(sim, query)
    if route == ("GET", "/sim/state"):
        return Reply(200, sim.state())
    if route == ("POST", "/sim/send"):
        return _send(sim, body)
    if route == ("POST", "/sim/lids"):
        return _lids(sim, body)
    if route == ("POST", "/sim/session-status"):
        return _session_status(sim, body)
    if route == ("POST", "/sim/outage"):
        return _outage(sim, body)
    return Reply(404, {"statusCode": 404, "message": f"Cannot {method} {path}", "error": "Not Found"})


def _messages(sim: WahaSimulator, query: dict[str, list[str]]) -> Reply:
    try:
        since = int(query.get("since", ["0"])[0])
        wait_s = float(query.get("wait", ["0"])[0])
    except ValueError:
        return _bad("since must be an integer and wait a number of seconds")
    return Reply(200, sim.chat_log.since(since, wait_s))


def _send(sim: WahaSimulator, body: Any) -> Reply:
    """``{"phone", "text"}``; with ``"lid"`` (digits) the person writes as ``<lid>@lid``, and the phone, when
    also given, rides in the payload as NOWEB's ``remoteJidAlt``."""
    body = body if isinstance(body, dict) else {}
    phone = re.sub(r"\D", "", str(body.get("phone", "")))
    lid = re.sub(r"\D", "", str(body.get("lid", "")))
    text = body.get("text")
    if not (phone or lid) or not isinstance(text, str) or not text.strip():
        return _bad("phone (digits) and text are required")
    chat_id = f"{lid}@lid" if lid else f"{phone}@c.us"
    extra = {"phone_alt": f"{phone}@c.us"} if lid and phone else {}  # only WAHA's dialect speaks @lid
    message_id = sim.send_message(chat_id, text, **extra)
    return Reply(200, {"id": message_id, "chat_id": chat_id, "webhook": bool(sim.webhook_url)})


def _lids(sim: WahaSimulator, body: Any) -> Reply:
    """``{"lid": digits, "phone": digits | null}``: WAHA learns (or forgets) that lid's phone number."""
    body = body if isinstance(body, dict) else {}
    lid = re.sub(r"\D", "", str(body.get("lid", "")))
    phone = re.sub(r"\D", "", str(body.get("phone") or ""))
    if not lid:
        return _bad("lid (digits) is required")
    sim.set_lid(f"{lid}@lid", f"{phone}@c.us" if phone else None)
    return Reply(200, {"lid": f"{lid}@lid", "pn": f"{phone}@c.us" if phone else None})


def _session_status(sim: WahaSimulator, body: Any) -> Reply:
    status = body.get("status") if isinstance(body, dict) else None
    try:
        sim.set_session_status(str(status))
    except ValueError as e:
        return _bad(str(e))
    return Reply(200, sim.state())


def _outage(sim: WahaSimulator, body: Any) -> Reply:
    """``{"status": 503}`` starts an outage, ``{"status": null}`` ends it."""
    status = body.get("status") if isinstance(body, dict) else None
    if status is None:
        sim.clear_outage()
    elif isinstance(status, int) and 400 <= status <= 599:
        sim.set_outage(status)
    else:
        return _bad("status must be an HTTP error status (400-599) or null")
    return Reply(200, sim.state())


def _bad(message: str) -> Reply:
    return Reply(400, {"statusCode": 400, "message": [message], "error": "Bad Request"})
