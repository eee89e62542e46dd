"""Evolution API webhooks: ``messages.upsert``, ``messages.update`` and ``connection.update`` as our events.

A body is ``{"event": "messages.upsert", "instance": "<name>", "data": {...}, "apikey": "<instance token>",
...}``. Evolution does not sign its webhooks; it puts the instance's API key in the body (and can add
configured headers), so the webhook compares that key with ``EVOLUTION_API_KEY`` (or the session's
``api_key``) in constant time, or an ``apikey`` header carrying it. The instance is the session unless
the sessions file maps an ``instance`` to another session name.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from wsm.core.clock import now_ms
from wsm.core.errors import BadRequest
from wsm.core.sessions import load_sessions, session_where
from wsm.core.settings import Settings
from wsm.providers.base import as_dict
from wsm.waha.event import MAX_ID_CHARS, Ack, Ignored, Message, SessionStatus, WahaEvent, chat_kind

STATUS_ACKS = {
    "ERROR": (-1, "ERROR"),
    "PENDING": (0, "PENDING"),
    "SERVER_ACK": (1, "SERVER"),
    "DELIVERY_ACK": (2, "DEVICE"),
    "READ": (3, "READ"),
    "PLAYED": (4, "PLAYED"),
}
CONNECTION_STATES = {"open": "WORKING", "connecting": "STARTING", "close": "STOPPED"}
PHONE_SOURCES = {"android", "ios", "web", "desktop"}  # an own message typed on a device, not sent through the API
EVENTS = ("messages.upsert", "messages.update", "connection.update")  # the ones we use
MEDIA_KEYS = ("imageMessage", "videoMessage", "audioMessage", "documentMessage", "stickerMessage")


def event_name(body: dict[str, Any]) -> str:
    """``MESSAGES_UPSERT`` (v1, global webhooks) and ``messages.upsert`` (v2) are the same event."""
    name = body.get("event")
    return name.lower().replace("_", ".") if isinstance(name, str) else ""


def session_of(instance: str, settings: Settings) -> str | None:
    found = session_where(settings, "evolution_instance", instance, instance)
    if found is None and settings.sessions_file:
        overrides = load_sessions(settings.sessions_file).get(instance)
        if overrides is not None and not overrides.get("evolution_instance"):
            return instance
    return found


def verify(body: dict[str, Any], headers: Mapping[str, str], api_key: str) -> None:
    """401 unless the body's ``apikey`` (or an ``apikey`` header) is the instance's key."""
    given = body.get("apikey") if isinstance(body.get("apikey"), str) else headers.get("apikey")
    if not given:
        raise BadRequest("missing apikey (Evolution puts the instance's key in the body)", status=401)
    if not hmac.compare_digest(given.encode("utf-8", "replace"), api_key.encode()):
        raise BadRequest("invalid apikey", status=401)


def instance_of(body: dict[str, Any]) -> str:
    instance = body.get("instance")
    if not isinstance(instance, str) or not instance or len(instance) > 128 or "{" in instance or "}" in instance:
        raise BadRequest("field 'instance' must be a name of 1..128 characters without braces")
    return instance


def parse(body: dict[str, Any], session: str) -> list[WahaEvent]:
    event = event_name(body)
    data = body.get("data")
    if event == "messages.upsert":
        items = data if isinstance(data, list) else [data]
        return [_upsert(session, as_dict(item)) if isinstance(item, dict) else _bad("data") for item in items]
    if event == "messages.update":
        items = data if isinstance(data, list) else [data]
        return [_update(session, as_dict(item)) if isinstance(item, dict) else _bad("data") for item in items]
    if event == "connection.update":
        state = as_dict(data).get("state")
        if not isinstance(state, str) or not state:
            raise BadRequest("field 'data.state' must be a string")
        status = CONNECTION_STATES.get(state, state.upper()[:64])
        return [SessionStatus(session, status, now_ms())]
    if not event:
        raise BadRequest("missing required field: event")
    return [Ignored(f"event {event[:64]!r} is not used")]


def _bad(name: str) -> WahaEvent:
    raise BadRequest(f"field {name!r} must be an object")


def _id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"field '{name}' must be a string of 1..{MAX_ID_CHARS} characters")
    return value


def _upsert(session: str, data: dict[str, Any]) -> WahaEvent:
    key = as_dict(data.get("key"))
    if not key:
        raise BadRequest("field 'data.key' must be an object")
    chat_id = _id(key.get("remoteJid"), "data.key.remoteJid")
    message_id = _id(key.get("id"), "data.key.id")
    from_me = key.get("fromMe")
    if not isinstance(from_me, bool):
        raise BadRequest("field 'data.key.fromMe' must be a boolean")
    message = as_dict(data.get("message"))
    text = message.get("conversation")
    if not isinstance(text, str):
        text = as_dict(message.get("extendedTextMessage")).get("text")
    record: dict[str, Any] = {
        "id": message_id,
        "direction": "out" if from_me else "in",
        "text": "",
        "timestamp": _seconds(data.get("messageTimestamp")),
        "status": "SERVER" if from_me else "received",
        "ack": None,
    }
    if isinstance(data.get("pushName"), str):
        record["push_name"] = data["pushName"][:128]
    for media_key in MEDIA_KEYS:
        if isinstance(message.get(media_key), dict):
            media = message[media_key]
            text = media.get("caption") if isinstance(media.get("caption"), str) else ""
            record["media"] = {
                "mimetype": _opt(media.get("mimetype")),
                "url": _opt(media.get("url")),
                "filename": _opt(media.get("fileName")),
                "caption": text,
                "error": None,
            }
    record["text"] = text if isinstance(text, str) else ""
    if from_me:
        source = data.get("source")
        record["source"] = "app" if isinstance(source, str) and source in PHONE_SOURCES else "api"
    if chat_kind(chat_id) != "person":
        return Ignored("only persons are served")
    return Message(session, chat_id, message_id, record["direction"], record)


def _update(session: str, data: dict[str, Any]) -> WahaEvent:
    key = as_dict(data.get("key"))
    message_id = _id(data.get("keyId") or key.get("id") or data.get("id"), "data.keyId")
    chat_id = _id(data.get("remoteJid") or key.get("remoteJid"), "data.remoteJid")
    status = data.get("status")
    if not isinstance(status, str | int) or isinstance(status, bool):
        raise BadRequest("field 'data.status' must be a string")
    found = STATUS_ACKS.get(str(status).upper())
    if found is None or chat_kind(chat_id) != "person":
        return Ignored(f"status {str(status)[:32]!r} for {chat_kind(chat_id)} is not used")
    return Ack(session, chat_id, message_id, found[0], found[1])


def _seconds(value: object) -> int:
    """Evolution sends the timestamp as a number, a numeric string, or a protobuf Long ``{low, high}``."""
    if isinstance(value, dict):
        value = value.get("low")
    if isinstance(value, str) and value.isdigit() and len(value) <= 15:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15:
        return value
    raise BadRequest("field 'data.messageTimestamp' must be seconds since the epoch")


def _opt(value: object) -> str | None:
    return value[: MAX_ID_CHARS * 4] if isinstance(value, str) else None
