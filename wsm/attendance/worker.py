"""The worker: admit waiting chats into free slots and answer active chats, one handler per chat.

Triggered by any event (a lost one is covered by the tick): it reads what the keys say is
pending, so running it twice does no harm.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

from wsm.attendance.handler import Handler
from wsm.attendance.queue import admit_waiting
from wsm.conversation.flow import normalize
from wsm.core.clock import now_ms
from wsm.core.privacy import mask_chat
from wsm.core.status import ChatStatus, EndReason
from wsm.delivery.outbox import Delivery
from wsm.store import keys, record_codec
from wsm.store.chat_store import ChatStore
from wsm.store.events import SLOT_FREED, TICK, WakeUp
from wsm.store.turn import Turn

log = logging.getLogger(__name__)
SWEEP_BATCH = 256
MAX_PASSES = 8  # re-looks at one chat per invocation when messages keep arriving
STRANDED_AFTER_MS = 2000  # pending longer than this: no wake-up is coming, the tick serves it


class Worker(Handler):
    sweep_batch = SWEEP_BATCH  # ready chats one tick looks at (an SSCAN COUNT hint)

    def on_event(self, event: WakeUp) -> None:
        for session in self.sessions(event):
            sk = keys.SessionKeys(session)
            if event.type == TICK:
                self.sweep(sk)
            elif event.type == SLOT_FREED or not event.chat or self.serve(sk, event.chat):  # a slot may be free
                self.admit(sk)

    def admit(self, sk: keys.SessionKeys) -> list[str]:
        admitted = admit_waiting(self.redis, self.scripts, sk, self.settings.max_active)
        for chat in admitted:
            log.info("admitted %s from the queue", mask_chat(chat, self.settings.mask_phones))
        return admitted

    def sweep(self, sk: keys.SessionKeys) -> None:
        """Periodic: lift a stale send hold, close idle chats, admit, and serve chats whose work was stranded."""
        self.sender.probe_hold(sk)
        self.close_idle(sk)
        self.admit(sk)
        stranded = self._stranded(sk)
        if stranded:
            with ThreadPoolExecutor(max_workers=min(16, len(stranded))) as pool:
                list(pool.map(lambda chat: self.serve(sk, chat), stranded))

    def _stranded(self, sk: keys.SessionKeys) -> list[str]:
        """Chats whose oldest pending message or reply waited longer than a wake-up takes to be handled.

        Candidates are one batch of the ``ready`` set plus, as a safety net, active chats (at most
        ``WSM_MAX_ACTIVE``) with unhandled messages. The batch is one SSCAN step from a cursor kept in
        Redis, so a tick costs O(batch) however many chats are ready, and successive ticks cover them
        all. Fresh work is left to the events already on their way, so a tick never competes with them.

        A ready chat with nothing pending at all is served too: its holder died between popping its last
        reply and releasing the lease (release is what drops the mark), and no event for it is coming. Serving
        it only takes and gives back the lease, and ``release_lease`` drops the mark if nothing arrived since.
        """
        cursor, batch = self.redis.sscan(sk.ready, int(self.redis.get(sk.sweep_cursor) or 0), count=self.sweep_batch)
        self.redis.set(sk.sweep_cursor, cursor)
        ready = set(batch)
        candidates = set(ready)
        candidates.update(self.redis.zrange(sk.active, 0, -1))
        chats = sorted(candidates)
        pipe = self.redis.pipeline(transaction=False)
        for chat in chats:
            ck = sk.chat(chat)
            pipe.lindex(ck.inbox, 0)
            pipe.lindex(ck.outbox, 0)
        heads = pipe.execute()
        cutoff = now_ms() - STRANDED_AFTER_MS
        stranded = []
        for i, chat in enumerate(chats):
            inbox_head, outbox_head = heads[2 * i], heads[2 * i + 1]
            since = [record_codec.decode(inbox_head, chat).get("received_ms", 0)] if inbox_head else []
            since += [json.loads(outbox_head).get("created_ms", 0)] if outbox_head else []
            if (since and min(since) <= cutoff) or (not since and chat in ready):
                stranded.append(chat)
        return stranded

    def close_idle(self, sk: keys.SessionKeys) -> None:
        deadline = now_ms() - self.settings.idle_timeout_s * 1000
        for chat in self.redis.zrangebyscore(sk.active, "-inf", deadline, start=0, num=100):
            store = ChatStore(self.redis, self.scripts, self.settings, sk.session, chat)
            snap = store.acquire()
            if snap is None:
                continue
            try:
                score = self.redis.zscore(sk.active, chat)
                if score is not None and score <= deadline and not snap.inbox:
                    store.commit(self.engine.idle_close())
                    log.info("closed idle chat %s", mask_chat(chat, self.settings.mask_phones))
                    self.sender.deliver(store)
            finally:
                store.release()
        self.admit(sk)

    def serve(self, sk: keys.SessionKeys, chat_id: str) -> bool:
        """Handle a chat's pending messages and replies while holding its lease (a mapped @lid: its phone chat).

        Returns whether the session may have someone to admit: its queue was not empty and a slot looked free when the
        lease was taken (or the lease could not be taken, so nothing was read). A conversation that ends admits here.
        """
        chat_id = self.lids.settle(sk.session, chat_id)
        admit_due = True
        for _ in range(MAX_PASSES):
            store = ChatStore(self.redis, self.scripts, self.settings, sk.session, chat_id)
            snap = store.acquire()
            if snap is None:
                return admit_due  # its holder looks again before letting go
            admit_due = snap.queued > 0 and snap.active < self.settings.max_active
            examined, ended = 0, False
            try:
                if snap.inbox and snap.status == ChatStatus.ACTIVE:
                    ended = self._converse(store, snap.state, snap.inbox)
                elif snap.inbox and snap.status == ChatStatus.WAITING:
                    examined, ended = self._check_waiting(store, snap.state, snap.inbox)
                if self.sender.deliver(store, release_examined=examined) is Delivery.LOST_LEASE:
                    return admit_due
            finally:
                more = store.release(examined)
            if ended:
                self.admit(sk)
                admit_due = False
            if not more:
                return admit_due
        return admit_due

    def _converse(self, store: ChatStore, state: dict[str, str], inbox: list[dict]) -> bool:
        """One turn for everything pending; WAHA may deliver out of order, so sort by the sender's clock."""
        ordered = sorted(inbox, key=lambda m: m.get("timestamp") or 0)
        engine = self.engine_for(store.session)
        texts, ids = [m.get("text") or "" for m in ordered], [m["id"] for m in ordered]
        to_human = False
        words = engine.flow.menu_words | engine.flow.leave_words
        leaving = state.get("leave_message") == "1"
        if leaving and not any(normalize(t) in words for t in texts):  # nobody could answer: a message for them
            turn = self.ownership.leave_message(store.session, store.chat_id, texts, engine.flow.texts)
        elif engine.agent is not None:  # a model call may outlast the lease: keep it while the turn runs
            with store.kept_alive():
                turn = engine.turn(state, texts, store.chat_id, ids)
        else:
            turn = engine.turn(state, texts, store.chat_id, ids)
        if leaving and "leave_message" not in turn.state:
            turn.state["leave_message"] = ""
        if turn.end is EndReason.HANDOFF:  # the human queue when someone can answer; else a notice, bot stays
            to_human = self.ownership.route_handoff(store.session, turn, engine.flow.texts)
        opens = state.get("conv") != "1"  # the first reply of a conversation: its first response time is measured
        first = (ordered[0].get("received_ms") or None) if opens else None
        done = store.commit(turn, handled=len(inbox), seen_ids=[m["id"] for m in inbox], first_reply_to_ms=first)
        if to_human and done:
            by = "agent" if any(r.get("tool") == "handoff_to_human" for r in turn.records) else "flow"
            self.ownership.hand_off(store.session, store.chat_id, by)
        return bool(turn.end)

    def _check_waiting(self, store: ChatStore, state: dict[str, str], inbox: list[dict]) -> tuple[int, bool]:
        """A waiting chat is only listened to for the leave word; other messages wait to be served in order."""
        new = inbox[int(state.get("inbox_seen") or 0) :]
        if any(normalize(m.get("text") or "") in self.engine.flow.leave_words for m in new):
            store.commit(self.engine.leave_queue(), handled=len(inbox), seen_ids=[m["id"] for m in inbox])
            return 0, True
        store.commit(Turn(state={"inbox_seen": str(len(inbox))}))
        return len(inbox), False


def handle_event(ce_type: str, data: object) -> None:
    """Functions Framework entry (functions/worker/main.py)."""
    Worker.handle_cloudevent(ce_type, data)
