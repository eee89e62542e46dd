"""Deliver a chat's outbox through WAHA, in order, the way WAHA advises, without losing or doubling replies.

Each reply goes sendSeen -> startTyping -> a pause sized to the text -> stopTyping -> sendText,
and is popped from the outbox only after WAHA accepted it. A crash between WAHA's answer and
that pop is the one window in which a reply can be sent twice; WAHA's echo of the send narrows it: the
next sender files such a reply under the echo's id instead of sending it again (:mod:`wsm.delivery.echoes`).
With ``WSM_REDIS_MIN_REPLICAS``, nothing is sent before replicas hold the turn that queued it, and a pop
counts only once they hold it too, so a failover to a replica cannot bring a sent reply back into the
outbox. Failures:

* timeout, connection error, 5xx: the reply stays; the chat retries after a growing delay;
* 422 (session not WORKING): every send of the session is held until WAHA reports WORKING;
* any other 4xx: WAHA will never take it; dead-lettered with the reason and marked FAILED.

The same holds for every provider (:mod:`wsm.providers`). Where the provider has a customer-service
window (the Cloud API: 24 h after the person's last message), a send outside it goes as the approved
template configured for its purpose (reminder, queue position, waitlist offer); any other is not sent:
it is dead-lettered with its text and the reason ``OUTSIDE_WINDOW`` and marked HELD in the history.
"""

from __future__ import annotations

import json
import logging
import random
import time
from enum import Enum

import redis

from wsm.core.clock import now_ms
from wsm.core.errors import WahaError, WahaRejected, WahaRetryable, WahaSessionNotReady
from wsm.core.privacy import mask_chat
from wsm.core.status import ChatStatus
from wsm.delivery.deadletter import SEND, write_dead_letter
from wsm.delivery.echoes import Echoes
from wsm.metrics import record as metrics
from wsm.providers import window
from wsm.providers.base import OUTSIDE_WINDOW, Outbound, Template
from wsm.store import event_stream, keys, record_codec
from wsm.store.chat_store import ChatStore, OutboxView
from wsm.store.replication import confirm_replicated, execute_replicated

log = logging.getLogger(__name__)
RETRY_BASE_MS = 1000
RETRY_CAP_MS = 30000
HOLD_PROBE_AFTER_MS = 10000
OPERATOR_KIND = "operator"  # outbox entry kind of a reply an operator wrote in the console (counted as such)


class Delivery(Enum):
    DONE = "done"  # the outbox is empty
    RETRY_LATER = "retry"  # WAHA failed; the chat's retry time is set
    HELD = "held"  # the session is not WORKING
    LOST_LEASE = "lost"  # another handler owns the chat now


class Sender:
    def __init__(self, client: redis.Redis, waha: Outbound) -> None:
        self.redis = client
        self.waha = waha

    def deliver(self, chat: ChatStore, release_examined: int | None = None) -> Delivery:
        """Send the chat's outbox in order. With ``release_examined`` (the inbox length the holder examined), the
        last reply's pop also gives the lease back when nothing else is queued: one round trip fewer per message."""
        view = chat.take_outbox_view() or self._read_outbox(chat)
        held, state_retry, outbox = view.held, view.retry_at_ms, view.entries
        if not outbox:
            return Delivery.DONE
        if held:
            return Delivery.HELD
        if state_retry and state_retry > now_ms():
            return Delivery.RETRY_LATER
        s = chat.settings
        if s.redis_min_replicas:  # a failover must not bring back a turn or a pop whose reply went out: a double
            confirm_replicated(self.redis, chat.ck.outbox, s.redis_min_replicas, s.redis_wait_timeout_ms)
        window_s = self.waha.window_s
        last_in = self.redis.hget(chat.ck.state, "last_seen_ms") if window_s else None
        echoes = Echoes(self.redis, chat.ck)
        for raw in outbox:
            if not chat.heartbeat():
                return Delivery.LOST_LEASE
            entry = json.loads(raw)
            template = None
            if window_s and not window.is_open(int(last_in) if last_in else None, window_s, now_ms()):
                template = window.template_for(chat.settings.meta_templates, entry.get("kind") or "")
                if template is None:
                    self._hold_outside_window(chat, entry, int(last_in) if last_in else None)
                    continue
            try:  # a reply another sender queued may have gone out before that sender died: WAHA echoed it then
                echoed = None if template or entry["id"] in view.fresh else echoes.take(entry)
                waha_id = echoed or self._send(chat, entry, template)
            except WahaSessionNotReady as e:
                self.hold(chat.sk, str(e))
                return Delivery.HELD
            except WahaRetryable as e:
                self._retry_later(chat, str(e))
                return Delivery.RETRY_LATER
            except WahaRejected as e:
                self._dead_letter(chat, entry, str(e))
                if not self._record(chat, entry["id"], "", "FAILED"):
                    return Delivery.LOST_LEASE
                continue
            if echoed:
                masked = mask_chat(chat.chat_id, s.mask_phones)
                log.info("a reply to %s was sent before (WAHA echoed it): filed, not sent again", masked)
            last = release_examined is not None and not state_retry and raw is outbox[-1]
            held = self._record(chat, entry["id"], waha_id, "SENT", release_examined if last else None)  # + event
            _count_sent(entry)
            if not held:  # another handler has the chat: it sends what is left (this reply too, if it was not popped)
                return Delivery.LOST_LEASE
        if state_retry:
            self.redis.hdel(chat.ck.state, "send_retry_at_ms", "send_attempts")
        return Delivery.DONE

    def _read_outbox(self, chat: ChatStore) -> OutboxView:
        """The session's hold, the chat's retry time and its outbox, when no commit just returned them."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hexists(chat.sk.status, "held_ms")
        pipe.hget(chat.ck.state, "send_retry_at_ms")
        pipe.lrange(chat.ck.outbox, 0, -1)
        return OutboxView.of(*pipe.execute())

    def _send(self, chat: ChatStore, entry: dict, template: Template | None = None) -> str:
        session, chat_id, text = chat.session, chat.chat_id, entry["text"]
        settings = chat.settings
        if template is not None:  # outside the window: the approved template, no read mark or typing to show
            return self.waha.send_template(session, chat_id, template, text)
        if entry.get("seen"):
            self._best_effort(self.waha.send_seen, session, chat_id, entry["seen"])
        pause_ms = min(settings.typing_max_ms, settings.typing_ms_per_char * len(text))
        if pause_ms > 0:
            self._best_effort(self.waha.start_typing, session, chat_id)
            time.sleep(pause_ms * random.uniform(0.8, 1.2) / 1000)
            self._best_effort(self.waha.stop_typing, session, chat_id)
        return self.waha.send_text(session, chat_id, text)

    @staticmethod
    def _best_effort(call, *args) -> None:  # type: ignore[no-untyped-def]
        """Seen and typing are courtesy: their failure must not block the reply (422 still holds)."""
        try:
            call(*args)
        except WahaSessionNotReady:
            raise
        except WahaError as e:
            log.debug("WAHA courtesy call failed: %s", e)

    def _record(
        self, chat: ChatStore, reply_id: str, waha_id: str, status: str, release_examined: int | None = None
    ) -> bool:
        """Pop the reply and file its outcome; with ``release_examined``, give the lease back if nothing is left.
        False when another handler holds the chat now (the pop was refused)."""
        sk, ck, filed_as, s = chat.sk, chat.ck, waha_id or reply_id, chat.settings
        keys_ = [ck.lease, ck.outbox, ck.history, ck.seen, sk.early_ack(filed_as), sk.events_stream]
        args = [
            chat.token, reply_id, record_codec.compact_id(waha_id, chat.chat_id), now_ms(), s.dedupe_ttl_s, status,
            s.dedupe_window, s.dedupe_max, sk.EVENTS_STREAM_MAX, event_stream.MESSAGE, chat.chat_id, s.lease_ms,
        ]  # fmt: skip
        if release_examined is not None:
            keys_ += [ck.inbox, sk.ready, ck.state]
            args += ["1", release_examined, ChatStatus.WAITING]
        if s.redis_min_replicas:
            result = execute_replicated(
                self.redis, chat.scripts.outbox_sent, keys_, args, s.redis_min_replicas, s.redis_wait_timeout_ms
            )
        else:
            result = chat.scripts.outbox_sent(keys=keys_, args=args)
        if isinstance(result, str) and result.startswith("released:"):
            chat.released(result.endswith("1"))
        return result != "lost_lease"

    def _retry_later(self, chat: ChatStore, error: str) -> None:
        attempts = int(self.redis.hincrby(chat.ck.state, "send_attempts", 1))
        delay_ms = min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** (attempts - 1))
        self.redis.hset(chat.ck.state, "send_retry_at_ms", now_ms() + delay_ms)
        log.warning(
            "WAHA send to %s failed (%s); attempt %d, retry in %d ms",
            mask_chat(chat.chat_id, chat.settings.mask_phones), error, attempts, delay_ms,
        )  # fmt: skip

    def _dead_letter(self, chat: ChatStore, entry: dict, error: str) -> None:
        keep = chat.settings.deadletter_max
        write_dead_letter(self.redis, SEND, error, keep, session=chat.session, chat=chat.chat_id, reply_id=entry["id"])
        log.error("WAHA refused a reply to %s for good: %s", mask_chat(chat.chat_id, chat.settings.mask_phones), error)

    def _hold_outside_window(self, chat: ChatStore, entry: dict, last_in_ms: int | None) -> None:
        """Not sendable now and no template for it: kept in the dead letters with its text, never dropped."""
        since = f"last message from the person at {last_in_ms} ms" if last_in_ms else "the person never wrote"
        error = (
            f"{OUTSIDE_WINDOW}: the 24-hour window is closed ({since}) and no template is set for {entry.get('kind')!r}"
        )
        keep = chat.settings.deadletter_max
        write_dead_letter(
            self.redis, SEND, error, keep, session=chat.session, chat=chat.chat_id, reply_id=entry["id"],
            text=entry.get("text", ""), purpose=entry.get("kind") or "reply",
        )  # fmt: skip
        self._record(chat, entry["id"], "", "HELD")
        log.warning("held a reply to %s: %s", mask_chat(chat.chat_id, chat.settings.mask_phones), error)

    # --- session hold (422) -------------------------------------------------------------------------

    def hold(self, sk: keys.SessionKeys, reason: str) -> None:
        if self.redis.hsetnx(sk.status, "held_ms", now_ms()):
            log.warning("holding sends of WAHA session %s: %s", sk.session, reason)

    def probe_hold(self, sk: keys.SessionKeys) -> None:
        """If no session.status webhook lifts a hold, ask WAHA directly (after a while, on ticks)."""
        held = self.redis.hget(sk.status, "held_ms")
        if not held or now_ms() - int(held) < HOLD_PROBE_AFTER_MS:
            return
        try:
            status = self.waha.session_status(sk.session)
        except WahaError:
            return
        if status == "WORKING":
            self.redis.hdel(sk.status, "held_ms")
            log.info("WAHA session %s is WORKING again; sends resume", sk.session)
        else:
            self.redis.hset(sk.status, "held_ms", now_ms())


def _count_sent(entry: dict) -> None:
    """A reply WAHA accepted: counted by who wrote it, and, for a conversation's first, its first response time."""
    metrics.message("out", "operator" if entry.get("kind") == OPERATOR_KIND else "bot")
    if entry.get("first_reply_to_ms"):
        metrics.first_response((now_ms() - int(entry["first_reply_to_ms"])) / 1000)
