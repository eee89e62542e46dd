"""WAHA's REST API as the bot uses it, with WAHA's answers mapped to our error tree.

Only connection failures before a request is sent are retried here (:mod:`wsm.core.http_client`, safe for POST);
timeouts and 5xx surface as :class:`WahaRetryable` so the outbox keeps the reply and retries later.
The API key goes in ``X-Api-Key`` and never into an error message or a log line.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote

from wsm.core.errors import WahaRejected, WahaRetryable, WahaSessionNotReady
from wsm.core.http_client import Answer, HttpClient, TransportError
from wsm.metrics import record as metrics
from wsm.waha.lid import parse_lid_answer

log = logging.getLogger(__name__)


class WahaClient:
    """Two calls per reply (sendSeen, sendText) over keep-alive connections to WAHA's host (libcurl: a fifth of
    urllib3's CPU per call, and urllib3's was a third of the worker's in ``python -m bench.profile``)."""

    provider = "waha"  # the provider seam (wsm.providers.base.Outbound)
    window_s = 0  # WhatsApp Web has no customer-service window

    def __init__(self, base_url: str, api_key: str = "", timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if api_key:
            headers["X-Api-Key"] = api_key
        self.http = HttpClient(self.base_url, headers, timeout_s)  # WAHA behind a proxy path: http://host/waha

    def send_text(self, session: str, chat_id: str, text: str) -> str:
        """Send a text; returns WAHA's message id ('' when this engine's answer has none)."""
        answer = self._post("/api/sendText", {"session": session, "chatId": chat_id, "text": text})
        return _message_id(answer)

    def send_template(self, session: str, chat_id: str, template: object, text: str) -> str:
        """No templates on WhatsApp Web: the text itself (never called while ``window_s`` is 0)."""
        return self.send_text(session, chat_id, text)

    def send_seen(self, session: str, chat_id: str, message_ids: list[str] | None = None) -> None:
        body: dict[str, Any] = {"session": session, "chatId": chat_id}
        if message_ids:
            body["messageIds"] = message_ids
        self._post("/api/sendSeen", body)

    def start_typing(self, session: str, chat_id: str) -> None:
        self._post("/api/startTyping", {"session": session, "chatId": chat_id})

    def stop_typing(self, session: str, chat_id: str) -> None:
        self._post("/api/stopTyping", {"session": session, "chatId": chat_id})

    def session_status(self, session: str) -> str:
        return str(self._call("GET", f"/api/sessions/{quote(session, safe='')}", endpoint="sessions").get("status", ""))

    def lid_phone(self, session: str, lid: str, timeout_s: float) -> str | None:
        """The phone chat WAHA knows for a ``…@lid`` chat, None when it knows none; one try within ``timeout_s``."""
        path = f"/api/{quote(session, safe='')}/lids/{quote(lid, safe='@')}"
        answer = self._call("GET", path, endpoint="lids", timeout_s=timeout_s)
        return parse_lid_answer(answer, lid)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, endpoint: str = "", timeout_s: float = 0
    ) -> Any:
        """``endpoint`` names the call in metrics (default: the path's last part; never a session name);
        ``timeout_s`` > 0: that timeout and no retry, for a call that must not hold its caller up."""
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        endpoint = endpoint or path.rsplit("/", 1)[-1]
        started = time.perf_counter()
        try:
            res = self.http.request(method, path, payload, timeout_s=timeout_s, retry=not timeout_s)
        except TransportError as e:
            metrics.waha_request(endpoint, "error", time.perf_counter() - started)
            raise WahaRetryable(f"{path}: {e}") from None
        metrics.waha_request(endpoint, str(res.status), time.perf_counter() - started)
        if res.status >= 500 or res.status == 429:
            raise WahaRetryable(f"{path}: HTTP {res.status}")
        if res.status == 422:
            raise WahaSessionNotReady(f"{path}: session not WORKING ({self._error_text(res)})")
        if res.status >= 400:
            raise WahaRejected(f"{path}: HTTP {res.status} {self._error_text(res)}")
        try:
            return json.loads(res.body) if res.body else {}
        except ValueError:
            return {}  # every caller reads fields with defaults; lid_phone refuses the empty answer

    def _error_text(self, res: Answer) -> str:
        """WAHA's own error text, short, with our API key blanked should WAHA (or a proxy) echo it back."""
        raw = res.body.decode("utf-8", "replace")
        try:
            data = json.loads(raw)
            text = str(data.get("error") or data.get("message") or data) if isinstance(data, dict) else str(data)
        except ValueError:
            text = raw
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return text[:200]


def _message_id(answer: Any) -> str:
    """WAHA's sendText answer varies by engine: id may be a string, {_serialized}, or missing."""
    if not isinstance(answer, dict):
        return ""
    found = answer.get("id")
    if isinstance(found, dict):
        found = found.get("_serialized") or found.get("id")
    if not found and isinstance(answer.get("key"), dict):
        found = answer["key"].get("id")
    return found if isinstance(found, str) else ""
