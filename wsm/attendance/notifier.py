"""The notifier: tell waiting people their queue position when it improves, within the anti-ban budget.

Work is driven by ``notify:due`` (a sorted set of waiting chats scored by when each may be told
again), so one run reads at most ``WSM_NOTIFY_BATCH`` chats however long the queue is. A chat is
told at once when it joins, then only when its position improved, at most once per
``WSM_NOTIFY_MIN_INTERVAL_S`` and ``WSM_NOTIFY_MAX_PER_HOUR`` times an hour, never the same position twice.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from wsm.attendance.handler import Handler
from wsm.attendance.queue import average_handle_ms, estimated_wait_min, position
from wsm.attendance.reminders import Reminders
from wsm.core.clock import now_ms
from wsm.schedule.caldav_push import CalendarPush
from wsm.store import keys
from wsm.store.chat_store import ChatStore
from wsm.store.doorbells import ring
from wsm.store.events import MESSAGE_RECEIVED, TICK, WakeUp
from wsm.store.turn import Turn

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
BUSY_RETRY_MS = 1000  # a chat held by the worker is looked at again this soon


class Notifier(Handler):
    def on_event(self, event: WakeUp) -> int:
        if event.type == TICK:  # appointment changes reach the clinic's calendar on ticks (off without CALDAV_URL)
            self.calendar.sweep(self.sessions(event))
        told = 0
        for session in self.sessions(event):
            told += self.run(keys.SessionKeys(session))
            told += self.remind(session)
        return told

    def remind(self, session: str) -> int:
        """Reminders and waitlist offers that are due (only when the flow books)."""
        book = self.book(session)
        talk = self.engine_for(session).talk
        if book is None or talk is None:
            return 0
        return Reminders(self.redis, self.scripts, self.settings, self.sender, book, talk).run(session)

    @cached_property
    def calendar(self) -> CalendarPush:
        return CalendarPush(self.redis, self.settings)

    def run(self, sk: keys.SessionKeys) -> int:
        """Look at the chats due now (at most one batch); returns how many were told something."""
        now = now_ms()
        due = self.redis.zrangebyscore(sk.notify_due, "-inf", now, start=0, num=self.settings.notify_batch)
        if not due:
            return 0
        avg_ms = average_handle_ms(self.redis, sk)
        if len(due) == 1:
            return int(self.consider(sk, due[0], avg_ms))
        with ThreadPoolExecutor(max_workers=min(8, len(due))) as pool:
            return sum(pool.map(lambda chat: self.consider(sk, chat, avg_ms), due))

    def consider(self, sk: keys.SessionKeys, chat_id: str, avg_handle_ms: float) -> bool:
        chat_id = self.lids.settle(sk.session, chat_id)  # a mapped @lid is told as its phone chat
        store = ChatStore(self.redis, self.scripts, self.settings, sk.session, chat_id)
        snap = store.acquire()
        if snap is None:
            self.redis.zadd(sk.notify_due, {chat_id: now_ms() + BUSY_RETRY_MS}, xx=True)
            return False
        try:
            told = self._tell_if_due(store, avg_handle_ms)
            self.sender.deliver(store)
        finally:
            # What the worker has looked at; only a lease holder changes it, and we hold the lease.
            examined = int(snap.state.get("inbox_seen") or 0)
            if store.release(examined):  # messages it has not seen: wake the worker for this chat
                ring(self.redis, WakeUp(MESSAGE_RECEIVED, sk.session, chat_id))
        return told

    def _tell_if_due(self, store: ChatStore, avg_handle_ms: float) -> bool:
        place = position(self.redis, store.sk, store.chat_id)
        if place is None:
            self.redis.zrem(store.sk.notify_due, store.chat_id)
            return False
        now = now_ms()
        notify = self.redis.hgetall(store.ck.notify)
        told = int(notify.get("position") or 0)
        sent = [t for t in json.loads(notify.get("sent_ms") or "[]") if t > now - HOUR_MS]
        s = self.settings
        if told and place >= told:  # not improved: look again after the minimum interval
            store.commit(Turn(), notify_due_ms=now + s.notify_min_interval_s * 1000)
            return False
        if len(sent) >= s.notify_max_per_hour:
            store.commit(Turn(), notify_due_ms=sent[0] + HOUR_MS)
            return False
        wait = estimated_wait_min(avg_handle_ms, place, s.max_active)
        text = self.engine.position_text(first=not told, position=place, wait_min=wait)
        fields = {"position": str(place), "sent_ms": json.dumps([*sent, now])}
        due = now + s.notify_min_interval_s * 1000
        return store.commit(Turn([text]), notify=fields, notify_due_ms=due, kind="position")


def handle_event(ce_type: str, data: object) -> None:
    """Functions Framework entry (functions/notifier/main.py)."""
    Notifier.handle_cloudevent(ce_type, data)
