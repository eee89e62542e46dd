"""The notifier: tell waiting people their queue position when it improves, within the anti-ban budget.

Work is driven by ``notify:due`` (a sorted set of waiting chats scored by when each may be told
again), so one run reads at most ``WSM_NOTIFY_BATCH`` chats however long the queue is. A chat is
told at once when it joins, then only when its position improved, at most once per
``WSM_NOTIFY_MIN_INTERVAL_S`` and ``WSM_NOTIFY_MAX_PER_HOUR`` times an hour, never the same position twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
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
            told += self.run(keys.SessionKeys(session), human=True)
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

    def run(self, sk: keys.SessionKeys, human: bool = False) -> int:
        """Look at the chats due now (at most one batch) of the bot's queue, or of the human queue when ``human``;
        returns how many were told something."""
        now = now_ms()
        due_key = sk.human_notify_due if human else sk.notify_due
        due = self.redis.zrangebyscore(due_key, "-inf", now, start=0, num=self.settings.notify_batch)
        if not due:
            return 0
        avg_ms = average_handle_ms(self.redis, sk, human)
        if len(due) == 1:
            return int(self.consider(sk, due[0], avg_ms, human))
        with ThreadPoolExecutor(max_workers=min(8, len(due))) as pool:
            return sum(pool.map(lambda chat: self.consider(sk, chat, avg_ms, human), due))

    def consider(self, sk: keys.SessionKeys, chat_id: str, avg_handle_ms: float, human: bool = False) -> bool:
        chat_id = self.lids.settle(sk.session, chat_id)  # a mapped @lid is told as its phone chat
        store = ChatStore(self.redis, self.scripts, self.settings, sk.session, chat_id)
        snap = store.acquire()
        if snap is None:
            due_key = sk.human_notify_due if human else sk.notify_due
            self.redis.zadd(due_key, {chat_id: now_ms() + BUSY_RETRY_MS}, xx=True)
            return False
        try:
            told = self._tell_human(store, avg_handle_ms) if human else self._tell_if_due(store, avg_handle_ms)
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
        wait = estimated_wait_min(avg_handle_ms, place, self.settings.max_active)

        def text(told: int) -> str:
            return self.engine.position_text(first=not told, position=place, wait_min=wait)

        return self._tell(store, place, text, store.sk.queue, store.sk.notify_due)

    def _tell_human(self, store: ChatStore, avg_handle_ms: float) -> bool:
        """The same rules for the human queue; its ETA counts the capacity of the operators online."""
        place = position(self.redis, store.sk, store.chat_id, human=True)
        if place is None:
            self.redis.zrem(store.sk.human_notify_due, store.chat_id)
            return False
        slots = self.ownership.operators.capacity_online(store.session)
        wait = estimated_wait_min(avg_handle_ms, place, slots)
        texts = self.ownership.texts(self.engine.flow.texts)

        def text(told: int) -> str:
            return self.engine.render(
                texts["human_position" if told else "human_queued"], position=place, wait_min=wait
            )

        return self._tell(store, place, text, store.sk.human_queue, store.sk.human_notify_due)

    def _tell(self, store: ChatStore, place: int, text: Callable[[int], str], queue_key: str, due_key: str) -> bool:
        """Tell ``text(last told position)`` if the position improved, within the throttle; else say when to look
        again. The notice is committed only if the chat is still at ``place`` of ``queue_key`` and nobody told it
        anything since we read (admission or an operator's take move a chat without its lease): else it is stale."""
        now = now_ms()
        notify = self.redis.hgetall(store.ck.notify)
        told = int(notify.get("position") or 0)
        sent = [t for t in json.loads(notify.get("sent_ms") or "[]") if t > now - HOUR_MS]
        s = self.settings

        def again(at_ms: int) -> dict[str, object]:  # the bot queue's due set is updated XX by the commit itself
            if due_key == store.sk.notify_due:
                return {"notify_due_ms": at_ms}
            return {"then": (due_key, store.chat_id, at_ms)}

        if told and place >= told:  # not improved: look again after the minimum interval
            store.commit(Turn(), **again(now + s.notify_min_interval_s * 1000))  # type: ignore[arg-type]
            return False
        if len(sent) >= s.notify_max_per_hour:
            store.commit(Turn(), **again(sent[0] + HOUR_MS))  # type: ignore[arg-type]
            return False
        fields = {"position": str(place), "sent_ms": json.dumps([*sent, now])}
        due = now + s.notify_min_interval_s * 1000
        return store.commit(
            Turn([text(told)]),
            notify=fields,
            kind="position",
            told=(queue_key, place, told),
            **again(due),  # type: ignore[arg-type]
        )


def handle_event(ce_type: str, data: object) -> None:
    """Functions Framework entry (functions/notifier/main.py)."""
    Notifier.handle_cloudevent(ce_type, data)
