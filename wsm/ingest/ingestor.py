"""Store a parsed WAHA event in Redis, atomically, and say what happened.

The webhook answers 2xx only after this returns (persist, then acknowledge).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import flask
import redis
from redis.commands.core import Script

from wsm.core.clock import now_ms
from wsm.core.settings import Settings
from wsm.core.status import HUMAN_HOLD_MS, PHONE_OPERATOR, ChatStatus, EndReason, Owner
from wsm.ingest.lid import LidResolver
from wsm.metrics import record as metrics
from wsm.store import event_stream, keys, record_codec
from wsm.store.connection import redis_errors
from wsm.store.doorbells import doorbell
from wsm.store.group_commit import GroupCommit
from wsm.store.replication import execute_replicated
from wsm.store.scripts import Scripts
from wsm.waha.event import Ack, Ignored, Message, SessionStatus, WahaEvent

log = logging.getLogger(__name__)
SESSIONS_REFRESH_S = 60.0  # how often a process adds a session it serves to wsm:sessions again


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
        self.group = GroupCommit(client, settings.redis_min_replicas, settings.redis_wait_timeout_ms)
        self.lids = LidResolver(client, self.scripts, settings)  # @lid -> phone chat, when known (no WAHA call)
        self._known_sessions: dict[str, float] = {}  # session -> when this process last added it

    def ingest(self, event: WahaEvent) -> Outcome:
        if isinstance(event, Ignored):
            return Outcome("ignored", {"reason": event.reason})
        with redis_errors():
            self._remember_session(event.session)
            if isinstance(event, Message):
                return self._message(self.lids.resolve(event))
            if isinstance(event, Ack):
                return self._ack(self.lids.resolve(event))
            return self._session_status(event)

    def _remember_session(self, session: str) -> None:
        """The tick sweeps every known session; cached so it costs one SADD per process and session a minute
        (repeated, so an add lost with a failed-over master comes back)."""
        now = time.monotonic()
        if now - self._known_sessions.get(session, -SESSIONS_REFRESH_S) >= SESSIONS_REFRESH_S:
            self.redis.sadd(keys.SESSIONS, session)
            self._known_sessions[session] = now

    def _write(self, script: Script, key_names: list, args: list, grouped: bool = False) -> Any:
        """Run one of the webhook's scripts; with ``WSM_REDIS_MIN_REPLICAS`` only once replicas confirm it.

        ``grouped`` shares the round trip with concurrent requests (:mod:`wsm.store.group_commit`).
        """
        s = self.settings
        if grouped:
            return self.group.call(script, key_names, args)
        if s.redis_min_replicas:
            replicas, timeout_ms = s.redis_min_replicas, s.redis_wait_timeout_ms
            return execute_replicated(self.redis, script, key_names, args, replicas, timeout_ms)
        return script(keys=key_names, args=args)

    def _message(self, msg: Message) -> Outcome:
        sk = keys.SessionKeys(msg.session)
        ck = sk.chat(msg.chat_id)
        s = self.settings
        now = now_ms()
        stored_id, body = record_codec.encode_pair({**msg.record, "received_ms": now}, msg.chat_id)
        channel, publish = doorbell(self.redis, msg.session)
        result = self._write(
            self.scripts.ingest_message,
            [
                sk.seen(msg.message_id), ck.history, ck.seen, ck.inbox, ck.state, sk.ready,
                sk.active, sk.queue, sk.queue_seq, sk.notify_due, sk.early_ack(msg.message_id), sk.events_stream,
            ],
            [
                stored_id, body, msg.direction, now, s.dedupe_ttl_s, s.history_max,
                s.max_active, msg.chat_id, msg.session, channel, s.state_retention_s, s.inbox_max,
                s.handoff_s * 1000, "1" if msg.typed_on_phone else "0",
                ChatStatus.ACTIVE, ChatStatus.WAITING, ChatStatus.HANDOFF, EndReason.HANDOFF,
                s.dedupe_window, s.dedupe_max, publish, sk.EVENTS_STREAM_MAX, event_stream.MESSAGE,
            ],
            grouped=True,
        )  # fmt: skip
        verdict = result[0]
        if verdict == "duplicate":
            return Outcome("duplicate", {"id": msg.message_id})
        if verdict == "stored_out":
            if msg.typed_on_phone:  # the bot's own sends are counted when WAHA accepts them (wsm.delivery.outbox)
                metrics.message("out", "phone")
                self._phone_took_over(sk, msg.chat_id, now)
            return Outcome("accepted", {"id": msg.message_id, "direction": "out"})
        metrics.message("in", "customer")  # the console's event was added by the script
        details: dict[str, Any] = {"id": msg.message_id, "direction": "in", "chat_status": result[1]}
        if result[1] == ChatStatus.WAITING:
            details["position"] = int(result[2])
        return Outcome("accepted", details)

    def _phone_took_over(self, sk: keys.SessionKeys, chat: str, now: int) -> None:
        """A reply typed on the phone: its person owns the chat now (owner_phone.lua; the console shows it)."""
        ck = sk.chat(chat)
        self.scripts.owner_phone(
            keys=[ck.state, sk.human_queue, sk.human_notify_due, ck.history, ck.seen, sk.events_stream],
            args=[chat, now, "own_" + uuid.uuid4().hex, sk.EVENTS_STREAM_MAX, Owner.WITH_OPERATOR, PHONE_OPERATOR,
                  now + HUMAN_HOLD_MS, event_stream.owner_args(self.settings)],
        )  # fmt: skip

    def _ack(self, ack: Ack) -> Outcome:
        sk = keys.SessionKeys(ack.session)
        ck = sk.chat(ack.chat_id)
        result = self._write(
            self.scripts.apply_ack,
            [ck.history, sk.early_ack(ack.message_id), ck.seen],
            [
                record_codec.compact_id(ack.message_id, ack.chat_id),
                ack.ack,
                ack.ack_name,
                now_ms(),
                self.settings.dedupe_window,
                "1" if ack.unordered else "0",
                ack.error,
            ],
        )
        return Outcome("updated" if result == "updated" else "ignored", {"ack": result})

    def _session_status(self, ev: SessionStatus) -> Outcome:
        channel, publish = doorbell(self.redis, ev.session)
        previous = self._write(
            self.scripts.session_status,
            [keys.SessionKeys(ev.session).status],
            [ev.status, now_ms(), ev.timestamp_ms, channel, ev.session, publish],
        )
        if previous != ev.status:
            log.info("WAHA session %s status %s -> %s", ev.session, previous, ev.status)
        return Outcome("stored", {"session_status": ev.status})
