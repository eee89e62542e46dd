"""WhatsApp Cloud API webhooks: Meta's GET verification, the X-Hub-Signature-256 check, and the batched body.

A POST body is ``{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages",
"value": {...}}]}]}``; each ``value`` carries ``metadata.phone_number_id`` (which session it is),
``messages[]`` and ``statuses[]``. Persons are filed as ``<wa_id>@c.us`` like WAHA's, so everything
downstream is the same. Interactive button and list replies become their id (we give options their keys
as ids), so the flow reads them as if the person had typed the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from wsm.core.errors import BadRequest
from wsm.core.sessions import session_where
from wsm.core.settings import Settings
from wsm.providers.base import as_dict
from wsm.waha.event import MAX_ID_CHARS, Ack, Ignored, Message, WahaEvent

DEFAULT_SESSION = "default"
STATUS_ACKS = {"sent": (1, "SERVER"), "delivered": (2, "DEVICE"), "read": (3, "READ"), "failed": (-1, "ERROR")}
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


def verify_subscription(query: Mapping[str, str], verify_token: str) -> tuple[int, str]:
    """Meta's GET handshake: echo ``hub.challenge`` when mode and token match (403 otherwise)."""
    mode, token, challenge = query.get("hub.mode"), query.get("hub.verify_token") or "", query.get("hub.challenge")
    if (
        mode == "subscribe"
        and verify_token
        and challenge is not None
        and hmac.compare_digest(token.encode("utf-8", "replace"), verify_token.encode())
    ):
        return 200, challenge
    return 403, "verification failed"


def verify_signature(raw: bytes, header: str | None, app_secret: str) -> None:
    """401 unless ``header`` is ``sha256=<hex HMAC-SHA256 of the raw body with the app secret>``."""
    if not header:
        raise BadRequest("missing X-Hub-Signature-256 header", status=401)
    expected = "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().lower().encode("utf-8", "replace")):
        raise BadRequest("invalid X-Hub-Signature-256 signature", status=401)


def parse(body: dict[str, Any], settings: Settings) -> list[WahaEvent]:
    """Every event of a batched body, in order; 400 names the first malformed part (nothing is stored then)."""
    if body.get("object") != "whatsapp_business_account":
        raise BadRequest("field 'object' must be 'whatsapp_business_account'")
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise BadRequest("field 'entry' must be an array")
    events: list[WahaEvent] = []
    for i, entry in enumerate(entries):
        changes = as_dict(entry).get("changes")
        if not isinstance(changes, list):
            raise BadRequest(f"field 'entry[{i}].changes' must be an array")
        for j, change in enumerate(changes):
            where = f"entry[{i}].changes[{j}]"
            change = as_dict(change)
            if change.get("field") != "messages":
                events.append(Ignored(f"field {str(change.get('field'))[:64]!r} is not used"))
                continue
            events.extend(_value(where, as_dict(change.get("value")), settings))
    return events


def _value(where: str, value: dict[str, Any], settings: Settings) -> list[WahaEvent]:
    phone_number_id = _str(as_dict(value.get("metadata")), "phone_number_id", f"{where}.value.metadata")
    session = session_where(settings, "meta_phone_number_id", phone_number_id, DEFAULT_SESSION)
    messages, statuses = value.get("messages", []), value.get("statuses", [])
    if not isinstance(messages, list) or not isinstance(statuses, list):
        raise BadRequest(f"fields '{where}.value.messages' and '.statuses' must be arrays")
    parsed = [_message(f"{where}.value.messages[{k}]", as_dict(m), session or "") for k, m in enumerate(messages)]
    parsed += [_status(f"{where}.value.statuses[{k}]", as_dict(s), session or "") for k, s in enumerate(statuses)]
    if session is None:  # validated all the same: a malformed body is 400 whoever it is for
        return [Ignored(f"phone_number_id {phone_number_id[:32]!r} is not one of ours")]
    return parsed


def _str(obj: dict[str, Any], name: str, where: str, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"field '{where}.{name}' must be a string of 1..{MAX_ID_CHARS} characters")
    return value


def _timestamp(obj: dict[str, Any], where: str) -> int:
    raw = obj.get("timestamp")
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 15:
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 10**15:
        return raw
    raise BadRequest(f"field '{where}.timestamp' must be seconds since the epoch")


def _person(wa_id: str, where: str) -> str:
    if not wa_id.isdigit():
        raise BadRequest(f"field '{where}' must be a phone number's digits")
    return f"{wa_id}@c.us"


def _message(where: str, m: dict[str, Any], session: str) -> WahaEvent:
    message_id = _str(m, "id", where)
    chat_id = _person(_str(m, "from", where), f"{where}.from")
    kind = _str(m, "type", where)
    record: dict[str, Any] = {
        "id": message_id,
        "direction": "in",
        "text": "",
        "timestamp": _timestamp(m, where),
        "status": "received",
        "ack": None,
        "type": kind,
    }
    context = as_dict(m.get("context"))
    if isinstance(context.get("id"), str):
        record["reply_to"] = context["id"][:MAX_ID_CHARS]
    if kind == "text":
        record["text"] = _text(as_dict(m.get("text")).get("body"), f"{where}.text.body")
    elif kind == "interactive":
        record["text"], record["title"] = _interactive(as_dict(m.get("interactive")), where)
    elif kind == "button":
        button = as_dict(m.get("button"))
        record["text"] = _text(button.get("payload") or button.get("text"), f"{where}.button.payload")
    elif kind in MEDIA_TYPES:
        media = as_dict(m.get(kind))
        caption = _text(media.get("caption") or "", f"{where}.{kind}.caption")
        record["text"] = caption
        record["media"] = {
            "mimetype": _opt(media.get("mime_type")),
            "url": None,  # the Cloud API gives a media id; its URL is fetched (and expires) on demand
            "media_id": _opt(media.get("id")),
            "sha256": _opt(media.get("sha256")),
            "filename": _opt(media.get("filename")),
            "caption": caption,
            "error": None,
        }
    elif kind == "location":
        loc = as_dict(m.get("location"))
        lat, lng = loc.get("latitude"), loc.get("longitude")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= 180 for v in (lat, lng)):
            raise BadRequest(f"field '{where}.location' needs numeric latitude and longitude")
        record["location"] = {"latitude": lat, "longitude": lng, "name": _opt(loc.get("name"))}
        record["location"]["address"] = _opt(loc.get("address"))
    elif kind == "reaction":
        reaction = as_dict(m.get("reaction"))
        record["text"] = _text(reaction.get("emoji") or "", f"{where}.reaction.emoji")
        record["reaction_to"] = _str(reaction, "message_id", f"{where}.reaction")
    else:
        return Ignored(f"message type {kind[:32]!r} is not used")
    return Message(session, chat_id, message_id, "in", record)


def _interactive(interactive: dict[str, Any], where: str) -> tuple[str, str]:
    """A tapped button or list row: its id is the option key we gave it."""
    kind = interactive.get("type")
    if kind not in ("button_reply", "list_reply"):
        raise BadRequest(f"field '{where}.interactive.type' must be button_reply or list_reply")
    reply = as_dict(interactive.get(kind))
    key = _str(reply, "id", f"{where}.interactive.{kind}")
    return key, _opt(reply.get("title")) or ""


def _status(where: str, s: dict[str, Any], session: str) -> WahaEvent:
    message_id = _str(s, "id", where)
    chat_id = _person(_str(s, "recipient_id", where), f"{where}.recipient_id")
    name = _str(s, "status", where)
    _timestamp(s, where)
    if name not in STATUS_ACKS:
        return Ignored(f"status {name[:32]!r} is not used")
    ack, ack_name = STATUS_ACKS[name]
    return Ack(session, chat_id, message_id, ack, ack_name, unordered=True, error=_errors(s.get("errors")))


def _errors(errors: object) -> str:
    """Meta's reason for a failure, short: ``131047 Re-engagement message: ...``."""
    if not isinstance(errors, list) or not errors:
        return ""
    first = as_dict(errors[0])
    details = as_dict(first.get("error_data")).get("details")
    parts = [str(first.get("code", "")), str(first.get("title") or first.get("message") or ""), str(details or "")]
    return " ".join(p for p in parts if p)[:300]


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"field '{where}' must be a string")
    return value


def _opt(value: object) -> str | None:
    return value[: MAX_ID_CHARS * 4] if isinstance(value, str) else None
