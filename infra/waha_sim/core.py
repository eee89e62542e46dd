"""A WAHA stand-in: the REST calls a bot makes, the webhooks it receives, and a chat page for people.

Tests use it as a real HTTP server that records every REST call and can be told to fail at runtime
(``fail_next``, ``set_outage``, ``refuse_connections``, ``set_session_status``, ``response_delay_s``).
People may be ``…@lid`` chats: ``set_lid`` tells it a lid's phone chat (``GET /api/{session}/lids/{lid}``
answers it, ``lid_lookups`` counts those calls, ``set_lid_answer`` forces any answer), and
``send_message(lid, text, phone_alt=…)`` puts the phone chat in the payload as NOWEB does.
``make local`` runs it as ``wsm-waha-sim``; open its URL in a browser to chat with the bot.

Answers follow WAHA 2026.x (its docs at waha.devlike.pro and its OpenAPI spec). Where WAHA varies we chose:

- an unknown session name answers 404 ``{"statusCode":404,"message":"We didn't find a session…",
  "error":"Not Found"}`` as WAHA Plus does (WAHA Core answers 422 for any name but ``default``);
- a body is JSON only with a JSON ``Content-Type`` (as in NestJS), otherwise it is empty → 400;
- every path except ``/``, ``/sim/*`` (the page, see :mod:`infra.waha_sim.web`) and ``/health`` is a
  REST call: recorded, checked for the API key and subject to the failure controls.
"""

from __future__ import annotations

import http
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import click
import requests

from infra.waha_sim import payloads as waha_payloads
from infra.waha_sim.dialects import DIALECTS
from infra.waha_sim.web import ChatLog, Headers, InvalidJson, Reply, SimServer
from wsm.core.privacy import mask_chat

log = logging.getLogger(__name__)

SESSION_STATUSES = ("STOPPED", "STARTING", "SCAN_QR_CODE", "WORKING", "FAILED")
SESSION_PATH = re.compile(r"^/api/sessions/([^/]+)$")
LID_PATH = re.compile(r"^/api/([^/]+)/lids/(?!count$|pn$)([^/]+)$")
OWN_ACK_PAUSES_S = ((2, 0.1), (3, 0.4))  # (ack, pause before it): DEVICE, then READ shortly after


@dataclass(frozen=True)
class RecordedCall:
    """One REST call as received, with the status it was answered (failed calls included)."""

    method: str
    path: str
    headers: Headers
    json: Any
    t: float  # time.monotonic() on arrival
    status: int


@dataclass
class Delivery:
    """One webhook event on its way, retries included; ``wait()`` until it succeeded or gave up."""

    body: dict[str, Any]
    raw: bytes  # posted as is on every attempt, so the HMAC and X-Webhook-Request-Id stay the same
    headers: dict[str, str]
    attempts: int = 0
    status: int | None = None  # last HTTP status, None after a connection error or timeout
    ok: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s)


def error_body(status: int, session: str = "default", session_status: str = "STOPPED") -> dict[str, Any]:
    """What WAHA answers with a given error status."""
    if status == 401:
        return {"message": "Unauthorized", "statusCode": 401}
    if status == 422:
        message = "Session status is not as expected. Try again later or restart the session"
        return {"error": message, "session": session, "status": session_status, "expected": ["WORKING"]}
    if status == 500:
        return {"statusCode": 500, "exception": {"message": "simulated engine failure"}}
    return {"statusCode": status, "message": http.HTTPStatus(status).phrase}


def bad_request(*messages: str) -> Reply:
    return Reply(400, {"statusCode": 400, "message": list(messages), "error": "Bad Request"})


TYPE_NAMES = {str: "a string", bool: "a boolean value", list: "an array"}


def validate(body: Any, required: tuple[str, ...], optional: dict[str, type] | None = None) -> list[str]:
    """class-validator style messages for missing or mistyped fields (all required ones are strings)."""
    body = body if isinstance(body, dict) else {}
    errors = [f"{name} must be a string" for name in required if not isinstance(body.get(name), str)]
    for name, kind in (optional or {}).items():
        if body.get(name) is not None and not isinstance(body[name], kind):
            errors.append(f"{name} must be {TYPE_NAMES[kind]}")
    return errors


class WahaSimulator:
    """WAHA on a local port; see the module docstring. Thread-safe; use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "",
        webhook_url: str | None = None,
        hmac_key: str = "",
        session: str = "default",
        webhook_retries: int = 15,
        webhook_retry_delay_s: float = 2.0,
        emit_own_events: bool = False,
        webhook_timeout_s: float = 8.0,
        provider: str = "waha",
    ) -> None:
        self.host, self._port = host, port
        self.api_key, self.webhook_url, self.hmac_key, self.session = api_key, webhook_url, hmac_key, session
        self.webhook_retries, self.webhook_retry_delay_s = webhook_retries, webhook_retry_delay_s
        self.webhook_timeout_s, self.emit_own_events = webhook_timeout_s, emit_own_events
        self.response_delay_s = 0.0
        self.chat_log = ChatLog()
        self._cond = threading.Condition()  # guards everything below; notified on each call or delivery
        self._calls: list[RecordedCall] = []
        self._session_status = "WORKING"
        self._outage: int | None = None
        self._fail_status, self._fail_count = 500, 0
        self._webhooks: dict[str, Any] = {"delivered": 0, "failed": 0, "pending": 0, "last_error": ""}
        self._lids: dict[str, str] = {}  # lid chat -> phone chat WAHA knows
        self._lid_answer: Reply | None = None  # forced answer of the lids endpoint (tests: malformed ones)
        self._server_lock = threading.Lock()
        self._server: SimServer | None = None
        self._stopping = threading.Event()
        self._http = requests.Session()
        self.dialect = DIALECTS[provider](self)  # waha, or the Cloud API / Evolution (infra.waha_sim.dialects)
        self._message_chats: dict[str, str] = {}  # message id -> page chat, for read receipts by message id
        self._routes = {
            ("POST", "/api/sendText"): self._send_text,
            ("POST", "/api/sendSeen"): lambda body: self._chat_action(body, "seen"),
            ("POST", "/api/startTyping"): lambda body: self._chat_action(body, "typing"),
            ("POST", "/api/stopTyping"): lambda body: self._chat_action(body, "paused"),
            ("GET", "/api/sessions"): lambda body: Reply(200, [self._session_info()]),
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> WahaSimulator:
        with self._server_lock:
            self._open_server()
        return self

    def stop(self) -> None:
        """Stop serving, abandon pending webhook retries and wake the page's long polls."""
        self._stopping.set()
        with self._server_lock:
            self._close_server()
        self.chat_log.close()
        self._http.close()

    def __enter__(self) -> WahaSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}" if self.host in ("0.0.0.0", "") else f"http://{self.host}:{self._port}"

    def refuse_connections(self) -> None:
        """Close the listening socket and every open connection: clients get 'connection refused'."""
        with self._server_lock:
            self._close_server()

    def accept_connections(self) -> None:
        """Listen again, on the same port."""
        with self._server_lock:
            if self._server is None:
                self._open_server()

    def _open_server(self) -> None:
        server = SimServer((self.host, self._port), self)
        self._port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="waha-sim", daemon=True)
        thread.start()
        self._server = server

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None

    # -- recording ---------------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """A snapshot of every REST call so far, in arrival order."""
        with self._cond:
            return list(self._calls)

    def sent_texts(self, chat_id: str | None = None) -> list[RecordedCall]:
        """Successful ``sendText`` calls, optionally for one chat."""
        return [
            c
            for c in self.calls
            if c.path == "/api/sendText" and c.status == 201 and (chat_id is None or c.json.get("chatId") == chat_id)
        ]

    def texts_to(self, chat_id: str) -> list[str]:
        """Texts the bot sent to ``chat_id`` (a page chat, ``<digits>@c.us``) in any dialect, in order."""
        if self.dialect.name == "waha":
            return [c.json["text"] for c in self.sent_texts(chat_id)]
        found = (self.dialect.sent(c) for c in self.calls)
        return [text for chat, text in (f for f in found if f) if chat == chat_id]

    def chat_of_message(self, message_id: str) -> str:
        with self._cond:
            return self._message_chats.get(message_id, "")

    def clear(self) -> None:
        """Forget the recorded calls (the page's chat log stays)."""
        with self._cond:
            self._calls.clear()

    def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true; re-checked after every call and webhook delivery."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    # -- @lid people ---------------------------------------------------------------------------

    def set_lid(self, lid: str, phone: str | None) -> None:
        """WAHA learns (or, with None, forgets) the phone chat of ``lid``."""
        with self._cond:
            if phone is None:
                self._lids.pop(lid, None)
            else:
                self._lids[lid] = phone

    def set_lid_answer(self, body: Any = None, status: int = 200) -> None:
        """Answer every lids lookup with ``body`` (bytes are sent as is); None: answer normally again."""
        with self._cond:
            self._lid_answer = None if body is None else Reply(status, body)

    def lid_lookups(self, lid: str | None = None) -> int:
        """How many ``GET /api/{session}/lids/{lid}`` calls arrived (for ``lid``, or any)."""
        return sum(1 for c in self.calls if (m := LID_PATH.match(c.path)) and (lid is None or unquote(m[2]) == lid))

    def _lid(self, session: str, lid: str) -> Reply:
        if session != self.session:
            return self._unknown_session(session)
        with self._cond:
            return self._lid_answer or Reply(200, {"lid": lid, "pn": self._lids.get(lid)})

    # -- failure controls --------------------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        with self._cond:
            self._fail_status, self._fail_count = status, count

    def set_outage(self, status: int = 500) -> None:
        with self._cond:
            self._outage = status

    def clear_outage(self) -> None:
        with self._cond:
            self._outage = None

    def set_session_status(self, status: str) -> None:
        """Change the session status; anything but WORKING makes send and typing calls answer 422."""
        if status not in SESSION_STATUSES:
            raise ValueError(f"status must be one of {', '.join(SESSION_STATUSES)}")
        with self._cond:
            self._session_status = status
        if self.webhook_url and self.dialect.name != "waha":
            body = self.dialect.session_status_body(status)
            if body is not None:
                self.post_webhook(body)
        elif self.webhook_url:
            self.post_webhook(waha_payloads.session_status_event(status, session=self.session))

    @property
    def session_status(self) -> str:
        return self._session_status

    def state(self) -> dict[str, Any]:
        """What the page's control bar shows."""
        with self._cond:
            return {
                "session": self.session,
                "status": self._session_status,
                "outage": self._outage,
                "webhook_url": self.webhook_url,
                "emit_own_events": self.emit_own_events,
                "webhooks": dict(self._webhooks),
            }

    # -- webhooks ----------------------------------------------------------------------------

    def send_message(self, chat_id: str, text: str, also_message_any: bool = False, **kw: Any) -> str:
        """A customer writes to the bot: a ``message`` webhook (and ``message.any`` if asked).

        ``from_me=True`` in ``kw`` plays the operator answering from the phone: ``message.any`` only,
        as WAHA never sends ``message`` for your own messages. Returns the payload id.
        """
        if self.dialect.name != "waha":
            return self._dialect_message(chat_id, text, **kw)
        payload = waha_payloads.message_payload(chat_id, text, **kw)
        from_me = payload["fromMe"]
        self.chat_log.add(chat_id, "out" if from_me else "in", text)
        events = ["message.any"] if from_me else ["message", "message.any"] if also_message_any else ["message"]
        if self.webhook_url:
            for event in events:
                self.post_webhook(waha_payloads.envelope(event, payload, session=self.session))
        return payload["id"]

    def _dialect_message(self, chat_id: str, text: str, from_me: bool = False, **kw: Any) -> str:
        """A person's message (or, Evolution only, one typed on our phone) as the dialect posts it."""
        if from_me:
            message_id, body = self.dialect.message_body(chat_id, text, from_me=True)  # type: ignore[call-arg]
        else:
            message_id, body = self.dialect.message_body(chat_id, text, **kw)
        with self._cond:
            self._message_chats[message_id] = chat_id
        self.chat_log.add(chat_id, "out" if from_me else "in", text)
        if self.webhook_url:
            self.post_webhook(body)
        return message_id

    def after_send(self, message_id: str, chat_id: str) -> None:
        """A dialect's send was accepted: its statuses follow, as the provider sends them."""
        with self._cond:
            self._message_chats[message_id] = chat_id
        if self.emit_own_events and self.webhook_url:
            bodies = self.dialect.own_events(message_id, chat_id)  # type: ignore[attr-defined]
            threading.Thread(target=self._emit_bodies, args=(bodies,), daemon=True).start()

    def _emit_bodies(self, bodies: list[dict[str, Any]]) -> None:
        for i, body in enumerate(bodies):
            if i and self._stopping.wait(0.1):
                return
            self._deliver(self._prepare(body))

    def post_webhook(self, body: dict[str, Any]) -> Delivery:
        """Deliver ``body`` in the background, retrying like WAHA (non-2xx, errors and timeouts)."""
        if not self.webhook_url:
            raise RuntimeError("no webhook_url configured")
        delivery = self._prepare(body)
        threading.Thread(target=self._deliver, args=(delivery,), name="waha-sim-webhook", daemon=True).start()
        return delivery

    def _prepare(self, body: dict[str, Any]) -> Delivery:
        raw = waha_payloads.encode(body)
        if self.dialect.name != "waha":
            return Delivery(body, raw, self.dialect.headers(raw, body, self.hmac_key))  # type: ignore[attr-defined]
        return Delivery(body, raw, waha_payloads.headers(raw, body, self.hmac_key))

    def webhook_stats(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._webhooks)

    def _deliver(self, delivery: Delivery) -> None:
        """Post until a 2xx, the last retry, or ``stop()``."""
        url, event = self.webhook_url or "", delivery.body.get("event")
        self._update_webhook_stats(pending=1)
        delay_s = 0.0
        for attempt in range(self.webhook_retries + 1):
            if attempt and self._stopping.wait(delay_s):
                break
            delivery.attempts += 1
            delay_s, error = self._attempt(url, delivery)
            if self.dialect.name != "waha":
                delay_s = self.dialect.retry_delay_s(delivery.attempts, self.webhook_retry_delay_s)
            if delivery.ok:
                break
            log.info("webhook %s attempt %d failed: %s", event, delivery.attempts, error)
            self._update_webhook_stats(last_error=error)
        if not delivery.ok:
            log.warning("webhook %s dropped after %d attempts, as WAHA would", event, delivery.attempts)
        outcome = "delivered" if delivery.ok else "failed"
        self._update_webhook_stats(pending=-1, **{outcome: 1})
        delivery.done.set()

    def _attempt(self, url: str, delivery: Delivery) -> tuple[float, str]:
        """One POST; returns (delay before the next try, error text)."""
        try:
            response = self._http.post(url, data=delivery.raw, headers=delivery.headers, timeout=self.webhook_timeout_s)
        except requests.RequestException as e:
            delivery.status = None
            return self.webhook_retry_delay_s, type(e).__name__
        delivery.status = response.status_code
        delivery.ok = 200 <= response.status_code < 300
        retry_after = response.headers.get("Retry-After", "")
        delay_s = float(retry_after) if retry_after.isdigit() else self.webhook_retry_delay_s
        return min(delay_s, 60.0), f"HTTP {response.status_code}"

    def _update_webhook_stats(self, last_error: str = "", **increments: int) -> None:
        with self._cond:
            for key, n in increments.items():
                self._webhooks[key] += n
            if last_error:
                self._webhooks["last_error"] = last_error
            self._cond.notify_all()

    def _emit_own_events(self, message: dict[str, Any]) -> None:
        """What WAHA sends after an API send: ``message.any`` (source api), then acks DEVICE and READ."""
        chat_id = message["to"]
        self._deliver(self._prepare(waha_payloads.envelope("message.any", message, session=self.session)))
        for ack, pause_s in OWN_ACK_PAUSES_S:
            if self._stopping.wait(pause_s):
                return
            self._deliver(self._prepare(waha_payloads.ack_event(message["id"], ack, chat_id, session=self.session)))

    # -- REST --------------------------------------------------------------------------------

    def handle_rest(self, method: str, path: str, headers: Headers, body: Any) -> Reply:
        """Answer one REST call and record it before the answer leaves; ``body`` is parsed JSON or InvalidJson."""
        arrived = time.monotonic()
        if self.response_delay_s:
            time.sleep(self.response_delay_s)
        reply = self._reply(method, path, headers, body)
        recorded_json = None if isinstance(body, InvalidJson) else body
        with self._cond:
            self._calls.append(RecordedCall(method, path, headers, recorded_json, arrived, reply.status))
            self._cond.notify_all()
        chat_id = body.get("chatId") if isinstance(body, dict) else None
        chat = mask_chat(chat_id) if isinstance(chat_id, str) else "-"
        elapsed_ms = (time.monotonic() - arrived) * 1000
        log.info("%s %s chat=%s -> %d (%.1f ms)", method, path, chat, reply.status, elapsed_ms)
        return reply

    def _reply(self, method: str, path: str, headers: Headers, body: Any) -> Reply:
        forced = self._forced_status()
        if self.dialect.name != "waha":
            return self._dialect_reply(method, path, headers, body, forced)
        if forced:
            return Reply(forced, error_body(forced, self.session, self._session_status))
        if self.api_key and headers.get("x-api-key") != self.api_key:
            return Reply(401, error_body(401))
        if isinstance(body, InvalidJson):
            return Reply(400, {"statusCode": 400, "message": body.reason, "error": "Bad Request"})
        if route := self._routes.get((method, path)):
            return route(body)
        if method == "GET" and (match := SESSION_PATH.match(path)):
            name = unquote(match.group(1))
            return Reply(200, self._session_info()) if name == self.session else self._unknown_session(name)
        if method == "GET" and (match := LID_PATH.match(path)):
            return self._lid(unquote(match[1]), unquote(match[2]))
        return Reply(404, {"statusCode": 404, "message": f"Cannot {method} {path}", "error": "Not Found"})

    def _dialect_reply(self, method: str, path: str, headers: Headers, body: Any, forced: int | None) -> Reply:
        dialect: Any = self.dialect
        if forced:
            return dialect.error(forced)
        if not dialect.authorized(headers):
            return dialect.error(401)
        if isinstance(body, InvalidJson):
            return dialect.error(400, message=body.reason)
        found = dialect.route(method, path, body)
        return found if found is not None else dialect.error(404, message=f"Cannot {method} {path}")

    def _forced_status(self) -> int | None:
        """The status an outage or ``fail_next`` imposes on this call, if any."""
        with self._cond:
            if self._outage:
                return self._outage
            if self._fail_count > 0:
                self._fail_count -= 1
                return self._fail_status
        return None

    def _check_chat_call(self, body: Any, required: tuple[str, ...], optional: dict[str, type]) -> Reply | None:
        """400, 404 or 422 as WAHA would answer a send or typing call, or None when it may proceed."""
        if errors := validate(body, required, optional):
            return bad_request(*errors)
        if body["session"] != self.session:
            return self._unknown_session(body["session"])
        status = self._session_status
        if status != "WORKING":
            return Reply(422, error_body(422, self.session, status))
        return None

    def _send_text(self, body: Any) -> Reply:
        optional = {"reply_to": str, "linkPreview": bool, "linkPreviewHighQuality": bool, "id": str}
        if refused := self._check_chat_call(body, ("session", "chatId", "text"), optional):
            return refused
        chat_id, text = body["chatId"], body["text"]
        message = waha_payloads.message_payload(chat_id, text, key_id=body.get("id"), from_me=True, source="api")
        self.chat_log.add(chat_id, "out", text)
        if self.emit_own_events and self.webhook_url:
            threading.Thread(target=self._emit_own_events, args=(message,), daemon=True).start()
        return Reply(201, message)

    def _chat_action(self, body: Any, kind: str) -> Reply:
        optional = {"messageIds": list, "participant": str} if kind == "seen" else {}
        if refused := self._check_chat_call(body, ("session", "chatId"), optional):
            return refused
        self.chat_log.add(body["chatId"], "out", kind=kind)
        return Reply(201, {})

    def _session_info(self) -> dict[str, Any]:
        return {
            "name": self.session,
            "status": self._session_status,
            "me": dict(waha_payloads.ME),
            "engine": {"engine": "NOWEB"},
            "presence": None,
            "timestamps": {"activity": None},
        }

    def _unknown_session(self, name: str) -> Reply:
        message = (
            f"We didn't find a session with name '{name}'.\n"
            f"Please start it first by using POST /api/sessions/{name}/start request"
        )
        return Reply(404, {"statusCode": 404, "message": message, "error": "Not Found"})


@click.command()
@click.option("--host", default="127.0.0.1", envvar="WAHA_SIM_HOST", show_default=True, show_envvar=True)
@click.option("--port", default=3000, type=int, envvar="WAHA_SIM_PORT", show_default=True, show_envvar=True)
@click.option("--webhook-url", default=None, envvar="WAHA_SIM_WEBHOOK_URL", show_envvar=True)
@click.option("--hmac-key", default="", envvar="WEBHOOK_HMAC_KEY", show_envvar=True, help="Signs webhooks.")
@click.option("--api-key", default="", envvar="WAHA_API_KEY", show_envvar=True, help="Required X-Api-Key.")
@click.option("--session", default="default", envvar="WAHA_SESSION", show_default=True, show_envvar=True)
@click.option("--emit-own-events/--no-emit-own-events", default=True, show_default=True)
@click.option("--webhook-retries", default=15, type=int, show_default=True)
@click.option("--webhook-retry-delay-s", default=2.0, type=float, show_default=True)
@click.option(
    "--provider",
    default="waha",
    envvar="WSM_PROVIDER",
    show_default=True,
    show_envvar=True,
    type=click.Choice(sorted(DIALECTS)),
    help="Which API to speak (infra/waha_sim/dialects.py).",
)
def main(webhook_url: str | None, **options: Any) -> None:
    """Run a WAHA simulator with a chat page at its URL, until SIGINT or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with WahaSimulator(webhook_url=webhook_url or None, **options) as sim:
        click.echo(
            f"{sim.dialect.name} simulator on {sim.url} (open it in a browser to chat);"
            f" webhook -> {webhook_url or 'none'}"
        )
        while not stop.wait(1.0):
            pass
    click.echo("WAHA simulator stopped")


if __name__ == "__main__":
    main()
