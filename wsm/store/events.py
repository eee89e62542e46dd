"""Wake-up events ("doorbells") published on Redis Pub/Sub.

An event only says *where to look*; the Redis keys are the truth, so a lost
event never loses work (the router's periodic tick covers it). On the wire an
event is compact JSON: ``{"type": "...", "session": "...", "chat": "..."}``.
The router turns each into a CloudEvent of type ``wsm.<type>`` whose
``subject`` is the chat id.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from wsm.core.errors import BadEvent

MESSAGE_RECEIVED = "message.received"  # an inbound message was stored (ingest)
QUEUE_CHANGED = "queue.changed"  # someone joined, left or was admitted
CHAT_ADMITTED = "chat.admitted"  # a waiting chat got a slot and must be greeted
SLOT_FREED = "slot.freed"  # a bot slot was freed outside the worker (an operator's take, a reply typed on the phone)
TICK = "tick"  # periodic, emitted by the router: sweep for stranded work

TYPES = frozenset({MESSAGE_RECEIVED, QUEUE_CHANGED, CHAT_ADMITTED, SLOT_FREED, TICK})
CLOUDEVENT_PREFIX = "wsm."
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"  # how GCP delivers a Pub/Sub message


@dataclass(frozen=True)
class WakeUp:
    type: str
    session: str | None = None
    chat: str | None = None

    def to_json(self) -> str:
        return json.dumps({"type": self.type, "session": self.session, "chat": self.chat}, separators=(",", ":"))

    @property
    def cloudevent_type(self) -> str:
        return CLOUDEVENT_PREFIX + self.type

    @classmethod
    def from_json(cls, raw: str | bytes) -> WakeUp:
        """Parse a published event; raises :class:`BadEvent` (a ValueError) on anything else."""
        try:
            data = json.loads(raw)
        except ValueError as e:  # not JSON, or not UTF-8
            raise BadEvent(f"not a wsm event ({len(raw)} bytes)") from e  # the raw text may hold a phone number
        if not isinstance(data, dict) or data.get("type") not in TYPES:
            raise BadEvent(f"not a wsm event ({len(raw)} bytes)")
        session, chat = data.get("session"), data.get("chat")
        if not all(v is None or isinstance(v, str) for v in (session, chat)):
            raise BadEvent("event session and chat must be strings or null")
        return cls(data["type"], session, chat)

    @classmethod
    def from_cloudevent(cls, ce_type: str, data: object) -> WakeUp:
        """Rebuild the event a function received: from our router, or a doorbell relayed through GCP Pub/Sub.

        Raises :class:`BadEvent` for anything else.
        """
        if ce_type == PUBSUB_PUBLISHED:
            return cls._from_pubsub(data)
        name = ce_type.removeprefix(CLOUDEVENT_PREFIX)
        if name not in TYPES:
            raise BadEvent(f"unknown event type: {ce_type[:100]!r}")
        data = data if isinstance(data, dict) else {}
        session, chat = data.get("session"), data.get("chat")
        if not all(v is None or isinstance(v, str) for v in (session, chat)):
            raise BadEvent("event session and chat must be strings or null")
        return cls(name, session, chat)

    @classmethod
    def _from_pubsub(cls, data: object) -> WakeUp:
        message = data.get("message") if isinstance(data, dict) else None
        encoded = message.get("data") if isinstance(message, dict) else None
        if not isinstance(encoded, str):
            raise BadEvent("Pub/Sub event without message.data")
        try:
            return cls.from_json(base64.b64decode(encoded, validate=True))
        except binascii.Error as e:
            raise BadEvent("Pub/Sub message.data is not base64") from e
