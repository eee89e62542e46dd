"""Parse a WAHA webhook body into one of a few typed events, or refuse it with a reason.

Validation follows shared/WAHA.md: the envelope's required fields and types are
checked, then the payload of the events we use. Anything we deliberately do not
handle becomes :class:`Ignored` (answered 200, because WAHA retries every non-2xx).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wsm.errors import BadRequest

ENVELOPE_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "timestamp": (int, float),
    "session": (str,),
    "engine": (str,),
    "event": (str,),
    "payload": (dict,),
    "environment": (dict,),
}
PERSON_SUFFIXES = ("@c.us", "@lid", "@s.whatsapp.net")
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class Message:
    """A message to store: inbound from a person, or outbound sent from our own number."""

    session: str
    chat_id: str
    message_id: str
    direction: str  # "in" | "out"
    record: dict[str, Any]  # what history keeps (see :func:`_message_record`)


@dataclass(frozen=True)
class Ack:
    session: str
    chat_id: str
    message_id: str
    ack: int
    ack_name: str


@dataclass(frozen=True)
class SessionStatus:
    session: str
    status: str
    timestamp_ms: int


@dataclass(frozen=True)
class Ignored:
    reason: str


WahaEvent = Message | Ack | SessionStatus | Ignored


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode the JSON body; 400 names what is wrong."""
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as e:
        raise BadRequest("body is not valid UTF-8") from e
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"malformed JSON: {str(e)[:120]}") from e
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def parse_event(body: dict[str, Any]) -> WahaEvent:
    """Validate the envelope and turn the payload into a typed event."""
    _check_envelope(body)
    session, payload = body["session"], body["payload"]
    event = body["event"]
    if event in ("message", "message.any"):
        return _parse_message(session, event, payload)
    if event == "message.ack":
        return _parse_ack(session, payload)
    if event == "session.status":
        return _parse_session_status(session, payload, body["timestamp"])
    return Ignored(f"event {event!r} is not used")


def _check_envelope(body: dict[str, Any]) -> None:
    missing = [name for name in ENVELOPE_TYPES if name not in body]
    if missing:
        raise BadRequest(f"missing required field(s): {', '.join(missing)}")
    for name, types in ENVELOPE_TYPES.items():
        value = body[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise BadRequest(f"field {name!r} must be {' or '.join(t.__name__ for t in types)}")
    session = body["session"]
    if not session or len(session) > 128 or "{" in session or "}" in session:
        raise BadRequest("field 'session' must be a non-empty name without braces, at most 128 characters")


def _field(payload: dict[str, Any], name: str, types: tuple[type, ...], required: bool = True) -> Any:
    value = payload.get(name)
    if value is None:
        if required:
            raise BadRequest(f"missing required field: payload.{name}")
        return None
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        raise BadRequest(f"field 'payload.{name}' must be {' or '.join(t.__name__ for t in types)}")
    return value


def chat_kind(chat_id: str) -> str:
    """person | group | status | newsletter | other — the bot answers persons only."""
    if chat_id == "status@broadcast":
        return "status"
    if chat_id.endswith(PERSON_SUFFIXES):
        return "person"
    if chat_id.endswith("@g.us"):
        return "group"
    if chat_id.endswith("@newsletter"):
        return "newsletter"
    return "other"


def _message_id(payload: dict[str, Any]) -> str:
    message_id = _field(payload, "id", (str,))
    if not message_id or len(message_id) > MAX_ID_CHARS:
        raise BadRequest(f"field 'payload.id' must be 1..{MAX_ID_CHARS} characters")
    return message_id


def _parse_message(session: str, event: str, payload: dict[str, Any]) -> WahaEvent:
    message_id = _message_id(payload)
    from_me = _field(payload, "fromMe", (bool,))
    sender = _field(payload, "from", (str,))
    recipient = _field(payload, "to", (str,), required=False)
    chat_id = (recipient or "") if from_me else sender
    kind = chat_kind(chat_id)
    if kind != "person":
        return Ignored(f"{kind} chats are not served" if kind != "other" else "unsupported chat id")
    if from_me and event == "message":
        return Ignored("own message on 'message' (subscribe to message.any to record it)")
    record = _message_record(message_id, payload, "out" if from_me else "in")
    return Message(session, chat_id, message_id, record["direction"], record)


def _message_record(message_id: str, payload: dict[str, Any], direction: str) -> dict[str, Any]:
    """What history keeps of a message: no raw engine data, media fields when present."""
    body = _field(payload, "body", (str,), required=False) or ""
    timestamp = _field(payload, "timestamp", (int, float))
    source = _field(payload, "source", (str,), required=False)
    has_media = bool(_field(payload, "hasMedia", (bool,), required=False))
    media = _field(payload, "media", (dict,), required=False)
    ack_name = _field(payload, "ackName", (str,), required=False)
    record: dict[str, Any] = {
        "id": message_id,
        "direction": direction,
        "text": body,
        "timestamp": timestamp,
        "status": "received" if direction == "in" else (ack_name or "SERVER"),
        "ack": _field(payload, "ack", (int,), required=False),
    }
    if source:
        record["source"] = source
    reply_to = payload.get("replyTo")
    if isinstance(reply_to, dict) and isinstance(reply_to.get("id"), str):
        record["reply_to"] = reply_to["id"]
    if has_media:
        media = media or {}
        record["media"] = {
            "mimetype": _str_or_none(media.get("mimetype")),
            "url": _str_or_none(media.get("url")),
            "filename": _str_or_none(media.get("filename")),
            "caption": body,
            "error": media.get("error") if isinstance(media.get("error"), (str, dict)) else None,
        }
    return record


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _parse_ack(session: str, payload: dict[str, Any]) -> WahaEvent:
    message_id = _message_id(payload)
    ack = _field(payload, "ack", (int,))
    ack_name = _field(payload, "ackName", (str,), required=False) or str(ack)
    chat_id = _chat_of_message_id(message_id) or _field(payload, "from", (str,), required=False) or ""
    if chat_kind(chat_id) != "person":
        return Ignored("ack for a chat that is not served")
    return Ack(session, chat_id, message_id, ack, ack_name)


def _chat_of_message_id(message_id: str) -> str | None:
    """WAHA ids read ``{fromMe}_{chatId}_{keyId}[_{participant}]``."""
    parts = message_id.split("_")
    if len(parts) >= 3 and parts[0] in ("true", "false"):
        return parts[1]
    return None


def _parse_session_status(session: str, payload: dict[str, Any], timestamp_ms: float) -> WahaEvent:
    status = _field(payload, "status", (str,))
    if not status or len(status) > 64:
        raise BadRequest("field 'payload.status' must be 1..64 characters")
    return SessionStatus(session, status, int(timestamp_ms))
