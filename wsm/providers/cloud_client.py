"""The WhatsApp Cloud API's send side: ``POST {META_GRAPH_URL}/{phone_number_id}/messages`` with a Bearer token.

Read receipts are ``{"status": "read", "message_id": ...}`` on the same endpoint, with the typing indicator
riding on it (Meta shows "typing…" until the reply or 25 s), so ``start_typing`` and ``stop_typing`` have
nothing to call. Errors: 429, 5xx and Meta's throttling codes are retryable (the outbox backs off); a refused
token (401, codes 190/10/200) holds the session's sends until ``GET /{phone_number_id}`` answers again (the
tick's probe); other errors are rejected with Meta's code and message (the outbox dead-letters them).
"""

from __future__ import annotations

from typing import Any

from wsm.core.errors import WahaRejected, WahaRetryable, WahaSessionNotReady
from wsm.core.settings import Settings
from wsm.providers.base import CLOUD, Template, as_dict, phone_of
from wsm.providers.http_base import JsonHttp

# Meta's throttling error codes: retry later (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes)
RETRYABLE_CODES = frozenset({4, 17, 32, 613, 80007, 130429, 131000, 131016, 131048, 131056})
TOKEN_CODES = (190, 10, 200)  # expired or invalid token, missing permission: fixed by a new token, not by retrying
MAX_BUTTONS = 3  # reply buttons per message; more options go as a list (up to 10 rows)
MAX_ROWS = 10


class CloudClient:
    provider = CLOUD

    def __init__(self, settings: Settings) -> None:
        self.window_s = settings.meta_window_s
        self.phone_number_id = settings.meta_phone_number_id
        token = settings.meta_access_token
        self.api = JsonHttp(
            settings.meta_graph_url, {"Authorization": f"Bearer {token}"}, settings.waha_timeout_s, token
        )

    def send_text(self, session: str, chat_id: str, text: str) -> str:
        return self._send(chat_id, {"type": "text", "text": {"body": text, "preview_url": False}})

    def send_template(self, session: str, chat_id: str, template: Template, text: str) -> str:
        spec: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
        if template.parameters:
            spec["components"] = [{"type": "body", "parameters": template.body_parameters(text)}]
        return self._send(chat_id, {"type": "template", "template": spec})

    def send_options(self, session: str, chat_id: str, text: str, options: list[tuple[str, str]]) -> str:
        """Interactive reply buttons (up to 3) or a list (up to 10); a tap comes back as the option's key."""
        if len(options) <= MAX_BUTTONS:
            buttons = [{"type": "reply", "reply": {"id": k, "title": t[:20]}} for k, t in options]
            action: dict[str, Any] = {"buttons": buttons}
            kind = "button"
        else:
            rows = [{"id": k, "title": t[:24]} for k, t in options[:MAX_ROWS]]
            action = {"button": "Opções", "sections": [{"title": "Opções", "rows": rows}]}
            kind = "list"
        interactive = {"type": kind, "body": {"text": text}, "action": action}
        return self._send(chat_id, {"type": "interactive", "interactive": interactive})

    def send_seen(self, session: str, chat_id: str, message_ids: list[str] | None = None) -> None:
        """Marks the newest message read (Meta marks the earlier ones with it) and shows the typing indicator."""
        if message_ids:
            body = {"messaging_product": "whatsapp", "status": "read", "message_id": message_ids[-1]}
            self._post({**body, "typing_indicator": {"type": "text"}}, "read")

    def start_typing(self, session: str, chat_id: str) -> None:
        """Shown by :meth:`send_seen` (the API ties it to a received message)."""

    def stop_typing(self, session: str, chat_id: str) -> None:
        """Meta hides it when the reply arrives."""

    def session_status(self, session: str) -> str:
        """WORKING while the token may read the number (``GET /{phone_number_id}``); what lifts a token hold."""
        status, _data, text = self.api.call("GET", f"/{self.phone_number_id}", None, "cloud_number")
        if status == 200:
            return "WORKING"
        if status in (401, 403):
            return "UNAUTHORIZED"
        raise WahaRetryable(f"cloud number check: HTTP {status} {text}")

    def _send(self, chat_id: str, message: dict[str, Any]) -> str:
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": phone_of(chat_id), **message}
        answer = self._post(body, "messages")
        found = answer.get("messages") if isinstance(answer, dict) else None
        first = as_dict(found[0]) if isinstance(found, list) and found else {}
        return first.get("id") if isinstance(first.get("id"), str) else ""

    def _post(self, body: dict[str, Any], endpoint: str) -> Any:
        if not self.phone_number_id:
            raise WahaRejected("the session has no Cloud API phone_number_id (META_PHONE_NUMBER_ID)")
        status, data, text = self.api.call("POST", f"/{self.phone_number_id}/messages", body, f"cloud_{endpoint}")
        if status < 400:
            return data
        error = as_dict(as_dict(data).get("error"))
        code = error.get("code")
        reason = f"Meta error {code}: {error.get('message') or text}"
        details = as_dict(error.get("error_data")).get("details")
        if details:
            reason += f" ({details})"
        if status == 429 or status >= 500 or (isinstance(code, int) and code in RETRYABLE_CODES):
            raise WahaRetryable(f"cloud {endpoint}: HTTP {status} {reason}"[:300])
        if status == 401 or code in TOKEN_CODES:  # every send would fail the same way: hold them, lose none
            raise WahaSessionNotReady(f"cloud {endpoint}: the access token is refused, sends held ({reason})"[:300])
        raise WahaRejected(f"cloud {endpoint}: HTTP {status} {reason}"[:300])
