"""Webhook bodies and signed requests of the Cloud API and Evolution, as the stand-in's dialects build them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from infra.waha_sim.dialects import PHONE_NUMBER_ID, CloudDialect

APP_SECRET = "meta-app-secret"
VERIFY_TOKEN = "meta-verify-token"
ACCESS_TOKEN = "meta-access-token"
EVO_KEY = "evolution-instance-key"
CLOUD = CloudDialect(None)  # type: ignore[arg-type]  # its body builders need no simulator


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def meta_signature(raw: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def cloud_post(client: Any, body: dict[str, Any] | bytes, secret: str = APP_SECRET, path: str = "/cloud") -> Any:
    raw = body if isinstance(body, bytes) else encode(body)
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["X-Hub-Signature-256"] = meta_signature(raw, secret)
    return client.post(path, content=raw, headers=headers)


def cloud_text(chat: str, text: str, phone_number_id: str = PHONE_NUMBER_ID) -> tuple[str, dict[str, Any]]:
    """(wamid, body) of one person's text."""
    return CloudDialect(None, phone_number_id).message_body(chat, text)  # type: ignore[arg-type]


def cloud_message(chat: str, message: dict[str, Any], phone_number_id: str = PHONE_NUMBER_ID) -> tuple[str, dict]:
    return CloudDialect(None, phone_number_id).message_body(chat, "", message)  # type: ignore[arg-type]


def cloud_status(message_id: str, chat: str, status: str, errors: list | None = None) -> dict[str, Any]:
    return CLOUD.status_body(message_id, chat, status, errors)


def evolution_body(event: str, data: Any, instance: str = "default", apikey: str = EVO_KEY) -> dict[str, Any]:
    return {
        "event": event,
        "instance": instance,
        "data": data,
        "destination": "http://127.0.0.1/evolution",
        "date_time": "2026-01-01T10:00:00.000Z",
        "sender": "5511900000000@s.whatsapp.net",
        "server_url": "http://127.0.0.1:8085",
        "apikey": apikey,
    }


def evolution_text(chat: str, text: str, from_me: bool = False, source: str = "android", **kw: Any) -> dict:
    data = {
        "key": {"remoteJid": f"{chat.split('@')[0]}@s.whatsapp.net", "fromMe": from_me, "id": uuid.uuid4().hex[:20]},
        "pushName": "Pessoa",
        "message": {"conversation": text},
        "messageType": "conversation",
        "messageTimestamp": int(time.time()),
        "source": source,
    }
    return evolution_body("messages.upsert", data, **kw)


def evolution_post(client: Any, body: dict[str, Any] | bytes, path: str = "/evolution") -> Any:
    raw = body if isinstance(body, bytes) else encode(body)
    return client.post(path, content=raw, headers={"Content-Type": "application/json"})
