"""Build webhook bodies and headers exactly as WAHA sends them (waha.devlike.pro/docs/how-to/events).

Used by the WAHA simulator, the tests and the benchmarks, so all three speak
the same wire format.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from wsm.core.clock import now_ms

ENVIRONMENT = {"version": "2026.7.1", "engine": "NOWEB", "tier": "CORE", "browser": None}
ME = {"id": "5511900000000@c.us", "pushName": "Clinica"}


def envelope(event: str, payload: dict[str, Any], session: str = "default", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "evt_" + uuid.uuid4().hex,
        "timestamp": now_ms(),
        "event": event,
        "session": session,
        "metadata": {},
        "me": ME,
        "payload": payload,
        "engine": "NOWEB",
        "environment": ENVIRONMENT,
    }
    body.update(extra)
    return body


def message_payload(
    chat_id: str,
    text: str,
    *,
    key_id: str | None = None,
    from_me: bool = False,
    source: str = "app",
    media: dict[str, Any] | None = None,
    timestamp: float | None = None,
    phone_alt: str | None = None,
) -> dict[str, Any]:
    """A WAHA message payload; the id follows ``{fromMe}_{chatId}_{keyId}``.

    ``phone_alt``: for an ``…@lid`` chat, the phone chat NOWEB puts in ``_data.key.remoteJidAlt``.
    """
    key_id = key_id or uuid.uuid4().hex[:20].upper()
    me, other = ME["id"], chat_id
    data: dict[str, Any] = {}
    if phone_alt:
        alt = phone_alt.replace("@c.us", "@s.whatsapp.net")
        data = {"key": {"remoteJid": chat_id, "remoteJidAlt": alt, "fromMe": from_me, "id": key_id}}
    return {
        "id": f"{'true' if from_me else 'false'}_{chat_id}_{key_id}",
        "timestamp": timestamp if timestamp is not None else int(time.time()),
        "from": me if from_me else other,
        "fromMe": from_me,
        "source": source,
        "to": other if from_me else me,
        "participant": None,
        "body": text,
        "hasMedia": media is not None,
        "media": media,
        "ack": 1,
        "ackName": "SERVER",
        "replyTo": None,
        "vCards": [],
        "_data": data,
    }


def message_event(chat_id: str, text: str, session: str = "default", event: str = "message", **kw: Any) -> dict:
    return envelope(event, message_payload(chat_id, text, **kw), session=session)


ACK_NAMES = {-1: "ERROR", 0: "PENDING", 1: "SERVER", 2: "DEVICE", 3: "READ", 4: "PLAYED"}


def ack_event(message_id: str, ack: int, chat_id: str, session: str = "default") -> dict[str, Any]:
    payload = {
        "id": message_id,
        "from": chat_id,
        "to": ME["id"],
        "participant": None,
        "fromMe": message_id.startswith("true_"),
        "ack": ack,
        "ackName": ACK_NAMES[ack],
    }
    return envelope("message.ack", payload, session=session)


def session_status_event(status: str, session: str = "default") -> dict[str, Any]:
    payload = {
        "name": session,
        "status": status,
        "statuses": [{"status": status, "timestamp": now_ms()}],
    }
    return envelope("session.status", payload, session=session)


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON, as WAHA posts it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign(raw: bytes, key: str) -> str:
    return hmac.new(key.encode(), raw, hashlib.sha512).hexdigest()


def headers(raw: bytes, body: dict[str, Any], hmac_key: str = "") -> dict[str, str]:
    """Headers WAHA sends with a webhook, with the HMAC pair when a key is configured."""
    h = {
        "Content-Type": "application/json",
        "X-Webhook-Request-Id": body.get("id", "evt_" + uuid.uuid4().hex),
        "X-Webhook-Timestamp": str(body.get("timestamp", now_ms())),
    }
    if hmac_key:
        h["X-Webhook-Hmac"] = sign(raw, hmac_key)
        h["X-Webhook-Hmac-Algorithm"] = "sha512"
    return h
