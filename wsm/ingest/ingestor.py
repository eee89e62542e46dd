"""Store a parsed WAHA event in Redis, atomically, and say what happened.

The webhook answers 2xx only after this returns (persist, then acknowledge). ``ingest`` is the blocking
path (the providers' routes, AWS Lambda, tests); ``ingest_async`` is the ASGI webhook's: a message or an
ack is the same script call, sent with the event loop's other requests in one round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from redis.commands.core import Script

from wsm.core.clock import now_ms
from wsm.core.settings import Settings
from wsm.core.status import HUMAN_HOLD_MS, PHONE_OPERATOR, ChatStatus, EndReason, Owner
from wsm.ingest.lid import LidResolver
from wsm.metrics import record as metrics
from wsm.store import event_stream, keys, record_codec
from wsm.store.connection import is_cluster, redis_errors
from wsm.store.doorbells import doorbell
from wsm.store.group_commit import AsyncGroupCommit, GroupCommit
from wsm.store.replication import execute_replicated
from wsm.store.scripts import Scripts
from wsm.waha.event import Ack, Ignored, Message, SessionStatus, WahaEvent
from wsm.waha.lid import is_lid

log = logging.getLogger(__name__)
SESSIONS_REFRESH_S = 60.0  # how often a process adds a session it serves to wsm:sessions again


def json_body(data: dict[str, Any]) -> bytes:
    """A webhook answer's JSON, compact and UTF-8 (every provider's path answers with it)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Outcome:
    """What the webhook tells WAHA: always 200 here, with a status and details."""

    status: str  # accepted | duplicate | stored | ignored | updated
    details: dict[str, Any] = field(default_factory=dict)

    def body(self) -> bytes:
        """The JSON answer, serialized here: the hot path of every webhook call."""
        return json_body({"status": self.status, **self.details})


class Ingestor:
    """Holds the Redis client and scripts of one process; ``ingest`` is called per request."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = Scripts(client)
        self.group = GroupCommit(client, settings.redis_min_replicas, settings.redis_wait_timeout_ms)
        self.lids = LidResolver(client, self.scripts, settings)  # @lid -> phone chat, when known (no WAHA call)
        self._known_sessions: dict[str, float] = {}  # session -> when this process last added it
        self._async_group: AsyncGroupCommit | None = None  # on the async client of the process's event loop

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

    async def ingest_async(self, event: WahaEvent, client: redis.asyncio.Redis) -> Outcome:
        """``ingest`` for an event loop: a message or an ack on a plain Redis goes through ``client``'s group
        commit; the rare rest (session status, @lid chats, a reply typed on the phone, a Redis Cluster, the
        minute's SADD) runs the blocking path in a thread, so the loop never waits on a blocking call."""
        fast = isinstance(event, Message | Ack) and not is_lid(event.chat_id) and not is_cluster(self.redis)
        if not fast or (isinstance(event, Message) and event.typed_on_phone) or self._session_due(event.session):
            return await asyncio.to_thread(self.ingest, event)
        group = self._async_group
        if group is None or group.client is not client:
            s = self.settings
            group = self._async_group = AsyncGroupCommit(client, s.redis_min_replicas, s.redis_wait_timeout_ms)
        with redis_errors():
            if isinstance(event, Message):
                now = now_ms()
                return self._message_outcome(event, await group.call(*self._message_write(event, now)), now)
            return self._ack_outcome(await group.call(*self._ack_write(event)))

    def _session_due(self, session: str) -> bool:
        return time.monotonic() - self._known_sessions.get(session, -SESSIONS_REFRESH_S) >= SESSIONS_REFRESH_S

    def _remember_session(self, session: str) -> None:
        """The tick sweeps every known session; cached so it costs one SADD per process and session a minute
        (repeated, so an add lost with a failed-over master comes back)."""
        if self._session_due(session):
            self.redis.sadd(keys.SESSIONS, session)
            self._known_sessions[session] = time.monotonic()

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
        now = now_ms()
        result = self._write(*self._message_write(msg, now), grouped=True)
        return self._message_outcome(msg, result, now)

    def _message_write(self, msg: Message, now: int) -> tuple[Script, list, list]:
        """ingest_message.lua's keys and arguments: dedupe, history, inbox, queue admission and doorbell at once."""
        sk = keys.SessionKeys(msg.session)
        ck = sk.chat(msg.chat_id)
        s = self.settings
        stored_id, body = record_codec.encode_pair({**msg.record, "received_ms": now}, msg.chat_id)
        channel, publish = doorbell(self.redis, msg.session)
        return (
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
        )  # fmt: skip

    def _message_outcome(self, msg: Message, result: Any, now: int) -> Outcome:
        verdict = result[0]
        if verdict == "duplicate":
            return Outcome("duplicate", {"id": msg.message_id})
        if verdict == "stored_out":
            if msg.typed_on_phone:  # the bot's own sends are counted when WAHA accepts them (wsm.delivery.outbox)
                metrics.message("out", "phone")
                self._phone_took_over(keys.SessionKeys(msg.session), msg.chat_id, now)
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
        return self._ack_outcome(self._write(*self._ack_write(ack)))

    def _ack_write(self, ack: Ack) -> tuple[Script, list, list]:
        sk = keys.SessionKeys(ack.session)
        ck = sk.chat(ack.chat_id)
        return (
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

    def _ack_outcome(self, result: Any) -> Outcome:
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
