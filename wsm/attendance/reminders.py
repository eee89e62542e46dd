"""Reminders before appointments and waitlist offers: sent by the notifier through the chat's outbox.

Both are due entries the scheduling core writes in the same scripts that book and cancel:
``reminders:due`` (member ``"<apt id>|<minutes before>"``, score = when) and ``waitlist:offers`` (the JSON
of a hold made for a waiting chat). A reply is queued with :meth:`ChatStore.commit`, which removes the
due member in the same Lua step (nothing is queued when it is already gone), and sent by the same
:class:`Sender` as every reply (seen, typing, pause): each is sent once, across restarts. The status is
checked again at send time, so a cancelled or moved appointment is never reminded.

The reminder offers "1 confirmar / 2 remarcar / 3 cancelar" and the offer "1 Sim / 2 Não"; which one was
sent last is kept in the chat state (``notice``) so the engine understands the answer in any step. An
offer nobody answers is passed on: shortly before its hold ends the sender cancels it as the operator,
and the core's cancel holds the slot for the next waiting person and queues their offer.
"""

from __future__ import annotations

import json
import logging

import redis

from wsm.conversation.booking import BookingPort, BookingTalk
from wsm.conversation.engine import NOTICE_FIELD
from wsm.core.clock import now_ms
from wsm.core.privacy import mask_chat
from wsm.core.settings import Settings
from wsm.delivery.outbox import Sender
from wsm.schedule.errors import BookingError
from wsm.schedule.model import AppointmentStatus
from wsm.store import keys
from wsm.store.chat_store import ChatStore
from wsm.store.doorbells import ring
from wsm.store.events import MESSAGE_RECEIVED, WakeUp
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn

log = logging.getLogger(__name__)
BATCH = 100
PASS_ON_BEFORE_MS = 15_000  # an unanswered offer is passed on this long before its hold would lapse
HOUR_MS = 3_600_000


class Reminders:
    """Sends due reminders and waitlist offers of one session; every call reads only what is due."""

    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        settings: Settings,
        sender: Sender,
        port: BookingPort,
        talk: BookingTalk,
    ) -> None:
        self.redis = client
        self.scripts = scripts
        self.settings = settings
        self.sender = sender
        self.port = port
        self.talk = talk

    def run(self, session: str) -> int:
        """Send what is due now; returns how many messages were queued."""
        sk, schk = keys.SessionKeys(session), keys.ScheduleKeys(session)
        now = now_ms()
        sent = 0
        for member in self.redis.zrangebyscore(schk.reminders_due, "-inf", now, start=0, num=BATCH):
            sent += self._remind(sk, schk.reminders_due, member, now)
        for raw in self.redis.zrangebyscore(schk.waitlist_offers, "-inf", now, start=0, num=BATCH):
            sent += self._offer(sk, schk.waitlist_offers, raw, now)
        for raw in self.redis.zrangebyscore(sk.offers_sent, "-inf", now, start=0, num=BATCH):
            self._pass_on(sk, raw)
        return sent

    # --- reminders ----------------------------------------------------------------------------------

    def _remind(self, sk: keys.SessionKeys, due_key: str, member: str, now: int) -> int:
        apt_id, _, _minutes = member.partition("|")
        apt = self.port.get(apt_id)
        if apt is None or apt.status != AppointmentStatus.BOOKED or apt.start_dt.timestamp() * 1000 <= now:
            self.redis.zrem(due_key, member)  # cancelled, moved or past: never reminded
            return 0
        text = self.talk.about("reminder", apt)
        notice = json.dumps({"kind": "reminder", "apt": apt.id})
        return self._send(sk, apt.chat, Turn([text], {NOTICE_FIELD: notice}), "reminder", (due_key, member))

    # --- waitlist offers ----------------------------------------------------------------------------

    def _offer(self, sk: keys.SessionKeys, due_key: str, raw: str, now: int) -> int:
        try:
            record = json.loads(raw)
            apt = self.port.get(str(record["appointment"]["id"]))
        except (ValueError, KeyError, TypeError):
            log.error("dropping a malformed waitlist offer: %.200s", raw)
            self.redis.zrem(due_key, raw)
            return 0
        if apt is None or apt.status != AppointmentStatus.HELD:
            self.redis.zrem(due_key, raw)  # the hold lapsed or was released before we could tell them
            return 0
        notify = self.redis.hgetall(sk.chat(apt.chat).notify)
        recent = [t for t in json.loads(notify.get("sent_ms") or "[]") if t > now - HOUR_MS]
        if len(recent) >= self.settings.notify_max_per_hour:
            return 0  # the anti-ban budget is spent; the hold lapses and is passed on
        text = self.talk.about("waitlist_offer", apt)
        turn = Turn([text], {NOTICE_FIELD: json.dumps({"kind": "offer", "apt": apt.id})})
        pass_at = (apt.hold_expires_ms or now) - PASS_ON_BEFORE_MS
        pending = (sk.offers_sent, json.dumps({"chat": apt.chat, "apt": apt.id}), max(pass_at, now))
        notice = {"sent_ms": json.dumps([*recent, now])}
        return self._send(sk, apt.chat, turn, "offer", (due_key, raw), pending, notice)

    def _pass_on(self, sk: keys.SessionKeys, raw: str) -> None:
        """Its time is up: an offer still held (unanswered) is released, so the core offers it to the next person."""
        record = json.loads(raw)
        apt = self.port.get(record["apt"])
        if apt is not None and apt.status == AppointmentStatus.HELD:
            try:
                self.port.cancel(apt.id, None, f"pass-on:{apt.id}")
                log.info("waitlist offer to %s unanswered: passed on", mask_chat(apt.chat, self.settings.mask_phones))
            except BookingError as e:
                log.info("waitlist offer %s not passed on: %s", apt.id, e)
        self.redis.zrem(sk.offers_sent, raw)

    # --- sending ------------------------------------------------------------------------------------

    def _send(
        self,
        sk: keys.SessionKeys,
        chat: str,
        turn: Turn,
        kind: str,
        due: tuple[str, str],
        then: tuple[str, str, int] | None = None,
        notify: dict[str, str] | None = None,
    ) -> int:
        store = ChatStore(self.redis, self.scripts, self.settings, sk.session, chat)
        snap = store.acquire()
        if snap is None:
            return 0  # the worker holds the chat; the next run tries again
        queued = False
        try:
            queued = store.commit(turn, kind=kind, due=due, then=then, notify=notify)
            self.sender.deliver(store)
        finally:
            if store.release(int(snap.state.get("inbox_seen") or 0)):
                ring(self.redis, WakeUp(MESSAGE_RECEIVED, sk.session, chat))
        if queued:
            log.info("%s sent to %s", kind, mask_chat(chat, self.settings.mask_phones))
        return int(queued)
