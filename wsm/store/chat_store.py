"""One chat's data in Redis as its handlers see it: lease, state, inbox, and the atomic commit of a turn.

A chat is held by one handler at a time (worker or notifier) through a lease with an
expiry and a fencing token. Every write to what the conversation holds (state set by a turn, inbox,
outbox, history) is a script that checks the token first (``commit_turn``, ``outbox_sent``; a
heartbeat before each send), so a handler that stalled past its lease cannot overwrite the work of
the next one. These writes do not check it, and why that is safe:

- the outbox's retry bookkeeping (``send_attempts``, ``send_retry_at_ms`` in the state, cleared after a
  send): a stale value only moves the next attempt earlier or later; the reply stays in the outbox until
  WAHA accepted it and ``outbox_sent`` (fenced) pops it;
- the session's send hold (``held_ms`` in the ``session`` hash, set on a 422, lifted by a probe): it is the
  session's, not a chat's, and a wrong value only delays sends until the next probe or status webhook;
- the notifier's ``notify:due`` score of a chat it could not lease (``XX``: never re-adds a chat): it only
  says when to look again.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from wsm.core.clock import now_ms
from wsm.core.errors import WsmError
from wsm.core.settings import Settings
from wsm.core.status import ChatStatus, ended_status
from wsm.store import keys, record_codec
from wsm.store.doorbells import doorbell
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn

REPLY_ID_PREFIX = "wsm_"  # our replies' ids, before WAHA's id replaces them in history (their local_id then)
LOCAL_ID_HEX = 16  # our ids (replies, history-only records) are unique within one chat: 64 random bits suffice


@dataclass(frozen=True)
class OutboxView:
    """What the sender reads before sending: the session's hold, the chat's retry time, its outbox entries."""

    held: bool
    retry_at_ms: int | None
    entries: list[str]
    fresh: frozenset[str] = frozenset()  # ids of the entries the commit that read this queued: never sent yet

    @classmethod
    def of(
        cls, held: int | bool, retry: str | None, entries: list[str], fresh: frozenset[str] = frozenset()
    ) -> OutboxView:
        """From Redis's answers: ``HEXISTS`` of the hold, ``HGET`` of the retry time ("" or None: none), the outbox."""
        return cls(bool(held), int(retry) if retry else None, entries, fresh)


@dataclass(frozen=True)
class Snapshot:
    """What a handler read under the lease."""

    state: dict[str, str]
    inbox: list[dict[str, Any]]
    active: int = 0  # chats the session's slots serve, and chats in its queue, as the lease was taken
    queued: int = 0

    @property
    def status(self) -> str:
        return self.state.get("status", "")


class ChatStore:
    def __init__(self, client: redis.Redis, scripts: Scripts, settings: Settings, session: str, chat_id: str) -> None:
        self.redis = client
        self.scripts = scripts
        self.settings = settings
        self.sk = keys.SessionKeys(session)
        self.ck = self.sk.chat(chat_id)
        self.session = session
        self.chat_id = chat_id
        self.token = ""
        self._renewed_at = float("-inf")
        self._left_work: bool | None = None  # given back with the last reply's pop (outbox_sent): work left then
        self._outbox_view: OutboxView | None = None  # what the last commit saw of the outbox, for the sender

    # --- lease -------------------------------------------------------------------------------------

    def acquire(self) -> Snapshot | None:
        """Take the lease and read state and inbox in one step; None when another handler holds the chat."""
        token = secrets.token_hex(8)  # 64 random bits: never the token of a lease a Redis restart forgot
        found = self.scripts.acquire_lease(
            keys=[self.ck.lease, self.ck.state, self.ck.inbox, self.sk.active, self.sk.queue],
            args=[token, self.settings.lease_ms],
        )
        if not found:
            return None
        self.token = token
        flat_state, inbox, active, queued = found
        self._renewed_at = time.monotonic()
        state = dict(zip(flat_state[::2], flat_state[1::2], strict=True))
        return Snapshot(state, [record_codec.decode(raw, self.chat_id) for raw in inbox], active, queued)

    def heartbeat(self) -> bool:
        """Extend the lease; False means another handler owns the chat now and we must stop.

        Skipped while less than a third of the lease has passed since it was last confirmed: it
        cannot have expired yet, so the round trip would tell nothing.
        """
        if time.monotonic() - self._renewed_at < self.settings.lease_ms / 3000:
            return True
        held = bool(self.scripts.heartbeat_lease(keys=[self.ck.lease], args=[self.token, self.settings.lease_ms]))
        if held:
            self._renewed_at = time.monotonic()
        return held

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Heartbeat the lease from a thread while a slow step runs (an agent's model call may take seconds)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.settings.lease_ms / 3000):
                with contextlib.suppress(WsmError, redis.RedisError):  # Redis blinked: the next beat tries again
                    if not self.heartbeat():
                        return

        thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self, examined: int = 0) -> bool:
        """Give the chat back; True when it has work left (new messages or unsent replies).

        Once given back by ``outbox_sent`` (:meth:`released`), this only says what that step found."""
        if self._left_work is not None:
            return self._left_work
        if not self.token:
            return False
        more = self.scripts.release_lease(
            keys=[self.ck.lease, self.ck.inbox, self.ck.outbox, self.sk.ready, self.ck.state],
            args=[self.token, self.chat_id, examined, ChatStatus.WAITING],
        )
        self.token = ""
        return bool(more)

    def released(self, more: bool) -> None:
        """The lease was given back in the same step as the last reply's pop; ``more``: the chat has work left."""
        self.token, self._left_work = "", more

    # --- reading and committing ---------------------------------------------------------------------

    def commit(
        self,
        turn: Turn,
        handled: int = 0,
        seen_ids: list[str] | None = None,
        notify: dict[str, str] | None = None,
        notify_due_ms: int | None = None,
        kind: str = "reply",
        due: tuple[str, str] | None = None,
        then: tuple[str, str, int] | None = None,
        first_reply_to_ms: int | None = None,
        source: str = "bot",
        told: tuple[str, int, int] | None = None,
    ) -> bool:
        """Apply a turn atomically: drop handled inbox messages, set state, queue the reply.

        ``due`` = (zset, member) this reply was due from (a reminder, an offer): removed in the same step,
        and nothing is done when it is already gone. ``then`` = (zset, member, score) to note the reply in.
        ``first_reply_to_ms``: this reply is a conversation's first, answering a message received then (the
        sender measures the first response time from it). ``source``: who wrote the reply, kept in its history
        record (``bot``, or ``operator:<name>`` for a reply typed in the console). ``told`` = (queue, position,
        last told position) of a position notice: done only if the chat is still at that position of that queue and
        the notify hash still says it was last told that (admission and an operator's take move a chat without its
        lease). False if the lease was lost, the due member is gone or the notice is stale.
        """
        s = self.settings
        due_key, due_member = due or (self.sk.notify_due, "")
        then_key, then_member, then_score = then or (self.sk.notify_due, "", 0)
        told_queue, told_place, told_before = told or (self.sk.queue, "", 0)
        replies = [self._record(r) for r in turn.records]
        replies += [self._reply(turn.text, seen_ids or [], kind, first_reply_to_ms, source)] if turn.text else []
        channel, publish = doorbell(self.redis, self.session)
        result = self.scripts.commit_turn(
            keys=[
                self.ck.lease, self.ck.inbox, self.ck.state, self.ck.outbox, self.ck.history, self.ck.seen,
                self.sk.ready, self.sk.active, self.sk.queue, self.sk.notify_due, self.ck.notify,
                self.sk.handle_stats, self.sk.queue_seq, due_key, then_key, told_queue, self.sk.status,
            ],
            args=[
                self.token, handled, json.dumps(turn.state), json.dumps(replies), now_ms(), s.history_max,
                s.state_retention_s, turn.end or "", self.chat_id, self.session, channel,
                json.dumps(notify) if notify else "", "" if notify_due_ms is None else notify_due_ms, s.max_active,
                uuid.uuid4().hex, ended_status(turn.end) if turn.end else "",
                ChatStatus.CLOSED, ChatStatus.ACTIVE, ChatStatus.WAITING, due_member, then_member, then_score,
                s.dedupe_window, s.dedupe_max, s.dedupe_ttl_s, publish, told_place, told_before,
            ],
        )  # fmt: skip
        if isinstance(result, list):
            held, retry, *entries = result[1:]
            fresh = frozenset(json.loads(r["entry"])["id"] for r in replies if r["entry"])
            self._outbox_view, result = OutboxView.of(held, retry, entries, fresh), result[0]
        return result == "ok"

    def take_outbox_view(self) -> OutboxView | None:
        """What the last commit saw of the outbox, once: the sender uses it instead of reading again."""
        view, self._outbox_view = self._outbox_view, None
        return view

    def _record(self, record: dict[str, object]) -> dict[str, str]:
        """A history-only record (an agent's tool call): kept in the chat's history, never sent."""
        record_id = str(record.get("id") or "rec_" + uuid.uuid4().hex[:LOCAL_ID_HEX])
        full = {"timestamp": now_ms() / 1000, **record, "id": record_id}
        stored_id, body = record_codec.encode_pair(full, self.chat_id)
        return {"id": stored_id, "entry": "", "record": body}

    def _reply(
        self, text: str, seen_ids: list[str], kind: str, first_reply_to_ms: int | None, source: str = "bot"
    ) -> dict[str, str]:
        reply_id = REPLY_ID_PREFIX + uuid.uuid4().hex[:LOCAL_ID_HEX]
        now = now_ms()
        entry: dict[str, object] = {"id": reply_id, "text": text, "kind": kind, "seen": seen_ids, "created_ms": now}
        if first_reply_to_ms:
            entry["first_reply_to_ms"] = first_reply_to_ms
        record = {"id": reply_id, "direction": "out", "text": text, "timestamp": now / 1000, "status": "PENDING"}
        record["source"] = source
        stored_id, body = record_codec.encode_pair(record, self.chat_id)
        return {"id": stored_id, "entry": json.dumps(entry), "record": body}
