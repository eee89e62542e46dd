"""Parse a WAHA webhook body into one of a few typed events, or refuse it with a reason.

Validation follows WAHA's webhook documentation (waha.devlike.pro/docs/how-to/events): the envelope's
required fields and types are checked, then the payload of the events we use. Anything we deliberately do not
handle becomes :class:`Ignored` (answered 200, because WAHA retries every non-2xx).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from wsm.core.errors import BadRequest
from wsm.waha.lid import is_lid, payload_phone

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
SOURCE_APP = "app"  # payload.source of a message typed on the phone
SOURCE_API = "api"  # payload.source of a message sent through WAHA's API (our replies: wsm.delivery.echoes)
MAX_SAFE_NUMBER = 2**53 - 1  # WAHA is JavaScript: no number it sends is larger; Redis's Lua cannot re-encode inf
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, paired ones are one character already


@dataclass(frozen=True)
class Message:
    """A message to store: inbound from a person, or outbound sent from our own number."""

    session: str
    chat_id: str
    message_id: str
    direction: str  # "in" | "out"
    record: dict[str, Any]  # what history keeps (see :func:`_message_record`)
    phone_hint: str | None = None  # an @lid chat's phone chat, when the payload names it (wsm.waha.lid)

    @property
    def typed_on_phone(self) -> bool:
        """An outbound message a person typed on the phone (WAHA ``source`` "app"): a human took over."""
        return self.direction == "out" and self.record.get("source") == SOURCE_APP


@dataclass(frozen=True)
class Ack:
    session: str
    chat_id: str
    message_id: str
    ack: int
    ack_name: str
    unordered: bool = False  # statuses may come in any order (Cloud API): ranked so the order does not matter
    error: str = ""  # why it failed, when the provider says (kept on the message)


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
        text = raw.decode()  # strict: json.loads(bytes) would let UTF-8-encoded surrogates through
    except UnicodeDecodeError as e:
        raise BadRequest("body is not valid UTF-8") from e
    try:
        body = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"malformed JSON: {str(e)[:120]}") from e
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        body = _without_lone_surrogates(body)
    return body


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _without_lone_surrogates(body: dict[str, Any]) -> dict[str, Any]:
    """Replace lone ``\\udXXX`` escapes (half an emoji, cut by the sender) with U+FFFD: Redis needs valid UTF-8."""
    return json.loads(_LONE_SURROGATE.sub("\ufffd", json.dumps(body, ensure_ascii=False)))


def _check_number(name: str, value: object) -> None:
    if isinstance(value, int | float) and not abs(value) <= MAX_SAFE_NUMBER:  # also false for inf and NaN
        raise BadRequest(f"field {name!r} must be a finite number within ±2^53")


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
        _check_number(name, value)
    session = body["session"]
    if not session or len(session) > 128 or "{" in session or "}" in session:
        raise BadRequest("field 'session' must be a non-empty name without braces, at most 128 characters")


def _field(payload: dict[str, Any], name: str, types: tuple[type, ...], required: bool = True) -> Any:
    value = payload.get(name)
    if value is None:
        if required:
            raise BadRequest(f"missing required field: payload.{name}")
        return None
    if isinstance(value, float) and int in types and float not in types and value.is_integer():
        value = int(value)  # JSON has one kind of number: 3.0 is the integer 3
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        raise BadRequest(f"field 'payload.{name}' must be {' or '.join(t.__name__ for t in types)}")
    if bool not in types:
        _check_number(f"payload.{name}", value)
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


def _chat_field(payload: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = _field(payload, name, (str,), required)
    if value is not None and len(value) > MAX_ID_CHARS:
        raise BadRequest(f"field 'payload.{name}' must be at most {MAX_ID_CHARS} characters")
    return value


def _parse_message(session: str, event: str, payload: dict[str, Any]) -> WahaEvent:
    message_id = _message_id(payload)
    from_me = _field(payload, "fromMe", (bool,))
    sender = _chat_field(payload, "from")
    recipient = _chat_field(payload, "to", required=False)
    chat_id = (recipient if from_me else sender) or ""
    record = _message_record(message_id, payload, "out" if from_me else "in")  # malformed is 400 whatever the chat
    kind = chat_kind(chat_id)
    if kind != "person":
        return Ignored(f"{kind} chats are not served" if kind != "other" else "unsupported chat id")
    if from_me and event == "message":
        return Ignored("own message on 'message' (subscribe to message.any to record it)")
    hint = payload_phone(payload, from_me) if is_lid(chat_id) else None
    return Message(session, chat_id, message_id, record["direction"], record, hint)


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
            "error": _media_error(media.get("error")),
        }
    return record


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _media_error(error: object) -> str | dict[str, Any] | None:
    """WAHA's download error, flat: a nested one could be too deep for a later JSON decode (worker, Lua)."""
    if isinstance(error, dict):
        return {k: v for k, v in error.items() if v is None or isinstance(v, str | int | float | bool)}
    return error if isinstance(error, str) else None


def _parse_ack(session: str, payload: dict[str, Any]) -> WahaEvent:
    message_id = _message_id(payload)
    ack = _field(payload, "ack", (int,))
    ack_name = _field(payload, "ackName", (str,), required=False) or str(ack)
    sender = _chat_field(payload, "from", required=False)
    chat_id = _chat_of_message_id(message_id) or sender or ""
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
