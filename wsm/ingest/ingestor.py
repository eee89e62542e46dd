"""Store a parsed WAHA event in Redis, atomically, and say what happened.

The webhook answers 2xx only after this returns (persist, then acknowledge).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import flask
import redis

from wsm.core.clock import now_ms
from wsm.core.settings import Settings
from wsm.core.status import HUMAN_HOLD_MS, PHONE_OPERATOR, ChatStatus, EndReason, Owner
from wsm.metrics import record as metrics
from wsm.store import event_stream, keys
from wsm.store.connection import redis_errors
from wsm.store.group_commit import GroupCommit
from wsm.store.scripts import Scripts
from wsm.waha.event import Ack, Ignored, Message, SessionStatus, WahaEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the webhook tells WAHA: always 200 here, with a status and details."""

    status: str  # accepted | duplicate | stored | ignored | updated
    details: dict[str, Any] = field(default_factory=dict)

    def as_response(self) -> flask.Response:
        """Serialized here rather than by Flask's jsonify: the hot path of every webhook call."""
        body = json.dumps({"status": self.status, **self.details}, separators=(",", ":"), ensure_ascii=False)
        return flask.Response(body, 200, mimetype="application/json")


class Ingestor:
    """Holds the Redis client and scripts of one process; ``ingest`` is called per request."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = Scripts(client)
        self.group = GroupCommit(client)
        self._known_sessions: set[str] = set()

    def ingest(self, event: WahaEvent) -> Outcome:
        if isinstance(event, Ignored):
            return Outcome("ignored", {"reason": event.reason})
        with redis_errors():
            self._remember_session(event.session)
            if isinstance(event, Message):
                return self._message(event)
            if isinstance(event, Ack):
                return self._ack(event)
            return self._session_status(event)

    def _remember_session(self, session: str) -> None:
        """The tick sweeps every known session; cached so it costs one SADD per process and session."""
        if session not in self._known_sessions:
            self.redis.sadd(keys.SESSIONS, session)
            self._known_sessions.add(session)

    def _message(self, msg: Message) -> Outcome:
        sk = keys.SessionKeys(msg.session)
        ck = sk.chat(msg.chat_id)
        s = self.settings
        now = now_ms()
        record = json.dumps({**msg.record, "received_ms": now}, separators=(",", ":"), ensure_ascii=False)
        result = self.group.call(
            self.scripts.ingest_message,
            [
                sk.seen(msg.message_id), ck.log, ck.msgs, ck.inbox, ck.state, sk.ready,
                sk.active, sk.queue, sk.queue_seq, sk.notify_due, sk.early_ack(msg.message_id),
            ],
            [
                msg.message_id, record, msg.direction, now, s.dedupe_ttl_s, s.history_max,
                s.max_active, msg.chat_id, msg.session, keys.EVENTS_CHANNEL, s.state_retention_s, s.inbox_max,
                s.handoff_s * 1000, "1" if msg.typed_on_phone else "0",
                ChatStatus.ACTIVE, ChatStatus.WAITING, ChatStatus.HANDOFF, EndReason.HANDOFF,
            ],
        )  # fmt: skip
        verdict = result[0]
        if verdict == "duplicate":
            return Outcome("duplicate", {"id": msg.message_id})
        if verdict == "stored_out":
            if msg.typed_on_phone:  # the bot's own sends are counted when WAHA accepts them (wsm.delivery.outbox)
                metrics.message("out", "phone")
                self._phone_took_over(sk, msg.chat_id, now)
            return Outcome("accepted", {"id": msg.message_id, "direction": "out"})
        metrics.message("in", "customer")
        event_stream.append(self.redis, msg.session, event_stream.MESSAGE, chat=msg.chat_id, direction="in")
        details: dict[str, Any] = {"id": msg.message_id, "direction": "in", "chat_status": result[1]}
        if result[1] == ChatStatus.WAITING:
            details["position"] = int(result[2])
        return Outcome("accepted", details)

    def _phone_took_over(self, sk: keys.SessionKeys, chat: str, now: int) -> None:
        """A reply typed on the phone: its person owns the chat now (owner_phone.lua; the console shows it)."""
        ck = sk.chat(chat)
        self.scripts.owner_phone(
            keys=[ck.state, sk.human_queue, sk.human_notify_due, ck.log, ck.msgs, sk.events_stream],
            args=[chat, now, "own_" + uuid.uuid4().hex, sk.EVENTS_STREAM_MAX, Owner.WITH_OPERATOR, PHONE_OPERATOR,
                  now + HUMAN_HOLD_MS, event_stream.OWNER_NAMES],
        )  # fmt: skip

    def _ack(self, ack: Ack) -> Outcome:
        sk = keys.SessionKeys(ack.session)
        result = self.scripts.apply_ack(
            keys=[sk.chat(ack.chat_id).msgs, sk.early_ack(ack.message_id)],
            args=[ack.message_id, ack.ack, ack.ack_name, now_ms()],
        )
        return Outcome("updated" if result == "updated" else "ignored", {"ack": result})

    def _session_status(self, ev: SessionStatus) -> Outcome:
        previous = self.scripts.session_status(
            keys=[keys.SessionKeys(ev.session).status],
            args=[ev.status, now_ms(), ev.timestamp_ms, keys.EVENTS_CHANNEL, ev.session],
        )
        if previous != ev.status:
            log.info("WAHA session %s status %s -> %s", ev.session, previous, ev.status)
        return Outcome("stored", {"session_status": ev.status})
