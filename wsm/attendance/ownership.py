"""Who answers a chat — the bot, the human queue, an operator, nobody (closed) — and every move between them.

Each transition is one ``owner_*.lua`` script, which also writes a ``transition`` record into the chat's history
and an event into the console's stream. The bot stays quiet while a human owns the chat: the chat's status is
``handoff`` with ``handoff_until_ms`` far ahead, which is what the ingest script already obeys.

A person who asks for a human (the flow's ``end: handoff`` step, the agent's ``handoff_to_human`` tool) joins the
human queue when the business is open (the schedule file's hours) and an operator is online; otherwise they are
told when people are back, may leave a message the operators will see, and the bot keeps serving them.
Operators' replies are queued in the chat's outbox and sent by the worker's sender like the bot's.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import redis

from wsm.attendance import opening
from wsm.attendance.operators import Operators, check_name
from wsm.core.clock import now_ms
from wsm.core.errors import WsmError
from wsm.core.settings import Settings
from wsm.core.status import HUMAN_HOLD_MS, PHONE_OPERATOR, ChatStatus, EndReason, Owner
from wsm.delivery.outbox import OPERATOR_KIND
from wsm.schedule.config import Schedule, load_schedule
from wsm.store import event_stream, keys
from wsm.store.chat_store import ChatStore
from wsm.store.doorbells import doorbell, ring
from wsm.store.events import MESSAGE_RECEIVED, QUEUE_CHANGED, WakeUp
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn

LEASE_WAIT_S = 10.0  # how long an operator's action waits for the worker to let go of the chat
HUMAN_TEXTS = {  # a flow file may override them under ``texts``
    "human_queued": "Você é o {position}º na fila para falar com um atendente. Espera estimada: ~{wait_min} min.",
    "human_position": "Atualização: agora você é o {position}º na fila do atendimento humano. "
    "Espera estimada: ~{wait_min} min.",
    "human_unavailable": "No momento não há atendentes disponíveis. Nossa equipe volta {when}. "
    'Se quiser, deixe aqui a sua mensagem: o primeiro atendente a verá. Enquanto isso, envie "menu" para '
    "continuar com o atendimento virtual.",
    "human_left_thanks": 'Recado anotado! Um atendente vai ler assim que voltar. Envie "menu" se precisar de '
    "mais alguma coisa.",
}


class OwnershipError(WsmError):
    """An operator action that cannot be done (offline, full, not theirs, bad step): nothing was changed."""


@dataclass(frozen=True)
class Availability:
    available: bool
    when: str  # when people are back (pt-BR), for the person's notice


def owner_of(state: dict[str, str], now: int | None = None) -> Owner:
    """The chat's owner now; a phone takeover lapses back to the bot after ``WSM_HANDOFF_S`` (as the bot does)."""
    raw = state.get("owner") or Owner.BOT
    owner = Owner(raw) if raw in Owner.__members__.values() else Owner.BOT
    phone = owner is Owner.WITH_OPERATOR and state.get("operator") == PHONE_OPERATOR
    if phone and int(state.get("handoff_until_ms") or 0) <= (now or now_ms()):
        return Owner.BOT
    return owner


class Ownership:
    def __init__(
        self, client: redis.Redis, scripts: Scripts, settings: Settings, schedule: Schedule | None = None
    ) -> None:
        self.redis = client
        self.scripts = scripts
        self.settings = settings
        self._schedule = schedule
        self.operators = Operators(client)

    @cached_property
    def schedule(self) -> Schedule:
        """Opening hours come from the schedule file even when the flow books nothing."""
        return self._schedule or load_schedule(self.settings.schedule_file or None)

    def texts(self, flow_texts: dict[str, str] | None = None) -> dict[str, str]:
        return {**HUMAN_TEXTS, **(flow_texts or {})}

    # --- asking for a human ------------------------------------------------------------------------------

    def availability(self, session: str, at: datetime | None = None) -> Availability:
        at = at or datetime.now(UTC)
        is_open = opening.is_open(self.schedule, at)
        if is_open and self.redis.zcard(keys.SessionKeys(session).operators_online):
            return Availability(True, "")
        when = "assim que possível" if is_open else opening.describe(opening.next_opening(self.schedule, at), at)
        return Availability(False, when)

    def route_handoff(self, session: str, turn: Turn, flow_texts: dict[str, str] | None = None) -> bool:
        """Called for a turn that ends in a handoff, before it is committed. True: the chat is to join the human
        queue (call :meth:`hand_off` after the commit). False: nobody can answer now; the turn is rewritten to say
        when people are back, to take a message, and to keep the chat with the bot."""
        found = self.availability(session)
        if found.available:  # owner_queue.lua makes the bot quiet; until it runs (or if it never does) the bot answers
            turn.state["handoff_until_ms"] = "0"
            return True
        notice = self.texts(flow_texts)["human_unavailable"].replace("{when}", found.when)
        if turn.replies:
            turn.replies[-1] = notice
        else:
            turn.replies.append(notice)
        turn.end = EndReason.DONE
        turn.state["leave_message"] = "1"
        return False

    def hand_off(self, session: str, chat: str, by: str) -> int | None:
        """The chat joins the human queue; returns its position (None when a human has it already)."""
        sk, ck = self._keys(session, chat)
        now = now_ms()
        result = self.scripts.owner_queue(
            keys=[ck.state, sk.human_queue, sk.human_notify_due, ck.notify, ck.history, ck.seen, sk.events_stream],
            args=[chat, now, _record_id(), sk.EVENTS_STREAM_MAX, by, Owner.HUMAN_QUEUE, ChatStatus.HANDOFF,
                  now + HUMAN_HOLD_MS, event_stream.owner_args(self.settings)],
        )  # fmt: skip
        if result[0] != "queued":
            return None
        self._wake(session, chat, QUEUE_CHANGED)  # the notifier tells the position
        return int(result[1])

    def leave_message(self, session: str, chat: str, texts: list[str], flow_texts: dict[str, str] | None) -> Turn:
        """The person's message while nobody could answer: kept for the operators; the bot thanks and goes on."""
        sk = keys.SessionKeys(session)
        entry = json.dumps({"chat": chat, "text": "\n".join(texts), "at_ms": now_ms()}, ensure_ascii=False)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(sk.human_left, entry)
        pipe.ltrim(sk.human_left, 0, sk.LEFT_MAX - 1)
        pipe.execute()
        event_stream.append(self.redis, session, event_stream.LEFT_MESSAGE, chat=chat)
        thanks = self.texts(flow_texts)["human_left_thanks"]
        return Turn([thanks], {"leave_message": "", "conv": "0", "step": "", "fields": "{}"}, EndReason.DONE)

    def left_messages(self, session: str) -> list[dict[str, object]]:
        return [json.loads(raw) for raw in self.redis.lrange(keys.SessionKeys(session).human_left, 0, -1)]

    def dismiss_left(self, session: str, chat: str) -> int:
        """An operator dealt with a chat's left messages: they leave the list."""
        sk = keys.SessionKeys(session)
        gone = 0
        for raw in self.redis.lrange(sk.human_left, 0, -1):
            if json.loads(raw).get("chat") == chat:
                gone += self.redis.lrem(sk.human_left, 1, raw)
        if gone:
            event_stream.append(self.redis, session, event_stream.LEFT_MESSAGE, chat=chat)
        return gone

    # --- operators' actions ------------------------------------------------------------------------------

    def take(self, session: str, chat: str, operator: str, by: str | None = None) -> int:
        """``operator`` takes the chat (``by`` another name: a supervisor assigns it). Returns ms it waited (-1:
        it was not in the human queue). Raises :class:`OwnershipError` when offline or at capacity."""
        waited = self._take(session, chat, operator, by, queued_only=False)
        return -1 if waited is None else waited  # None only comes from a queued-only take

    def take_next(self, session: str, operator: str) -> str | None:
        """The longest-waiting chat of the human queue goes to ``operator``; None when nobody waits."""
        sk = keys.SessionKeys(session)
        for _ in range(5):  # another operator may take the head first: try the new head
            head = self.redis.zrange(sk.human_queue, 0, 0)
            if not head:
                return None
            if self._take(session, head[0], operator, None, queued_only=True) is not None:
                return str(head[0])
        return None

    def _take(self, session: str, chat: str, operator: str, by: str | None, queued_only: bool) -> int | None:
        """The take; with ``queued_only`` none when the chat has left the human queue (another operator took it
        since it was read as the head), so taking the next one never takes a chat from a colleague."""
        check_name(operator)
        sk, ck = self._keys(session, chat)
        channel, publish = doorbell(self.redis, session)
        result = self.scripts.owner_take(
            keys=[ck.state, sk.human_queue, sk.human_notify_due, ck.notify, ck.history, ck.seen, sk.events_stream,
                  sk.operators_online, sk.operators_load, sk.active, sk.queue, sk.notify_due, sk.human_handle_stats],
            args=[chat, now_ms(), _record_id(), sk.EVENTS_STREAM_MAX, operator, by or operator,
                  Owner.WITH_OPERATOR, ChatStatus.HANDOFF, now_ms() + HUMAN_HOLD_MS, channel, session, publish,
                  "1" if queued_only else "", event_stream.owner_args(self.settings)],
        )  # fmt: skip
        verdict = result[0]
        if verdict == "offline":
            raise OwnershipError(f"{operator} is not online: go online first")
        if verdict == "full":
            raise OwnershipError(f"{operator} is at capacity: close or return a chat first")
        if verdict == "gone":
            return None
        if verdict == "already":
            return -1
        self._wake(session, chat, QUEUE_CHANGED)  # positions improved: the notifier tells who waits
        return int(result[1])

    def return_to_bot(self, session: str, chat: str, step: str, by: str, prompt: str) -> bool:
        """The bot answers the next message at ``step``; ``prompt`` (that step's question) is sent now."""
        sk, ck = self._keys(session, chat)
        result = self.scripts.owner_return(
            keys=[ck.state, sk.human_queue, sk.human_notify_due, ck.history, ck.seen, sk.events_stream,
                  sk.operators_load, sk.human_handle_stats],
            args=[chat, now_ms(), _record_id(), sk.EVENTS_STREAM_MAX, by, step, Owner.BOT, ChatStatus.CLOSED,
                  event_stream.owner_args(self.settings)],
        )  # fmt: skip
        return self._released(session, chat, result, prompt)

    def close(self, session: str, chat: str, by: str, goodbye: str = "") -> bool:
        sk, ck = self._keys(session, chat)
        result = self.scripts.owner_close(
            keys=[ck.state, sk.human_queue, sk.human_notify_due, ck.history, ck.seen, sk.events_stream,
                  sk.operators_load, sk.human_handle_stats],
            args=[chat, now_ms(), _record_id(), sk.EVENTS_STREAM_MAX, by, Owner.CLOSED, ChatStatus.CLOSED,
                  EndReason.HANDOFF, event_stream.owner_args(self.settings)],
        )  # fmt: skip
        return self._released(session, chat, result, goodbye)

    def _released(self, session: str, chat: str, result: str, bot_text: str) -> bool:
        """After the operator let go (returned to the bot or closed): the bot's text, if any, then the queues move."""
        if result != "ok":
            return False
        if bot_text:
            self.send(session, chat, bot_text, "bot", kind="reply")
        self._wake(session, chat, QUEUE_CHANGED)
        return True

    def reply(self, session: str, chat: str, operator: str, text: str) -> None:
        """An operator's message, sent through the chat's outbox (seen, typing, pause: the same anti-ban sends)."""
        text = (text or "").strip()
        if not text:
            raise OwnershipError("an empty message is not sent")
        state = self.redis.hgetall(keys.SessionKeys(session).chat(chat).state)
        if owner_of(state) is not Owner.WITH_OPERATOR or state.get("operator") != operator:
            raise OwnershipError("take the chat before replying")
        self.send(session, chat, text, f"operator:{operator}", kind=OPERATOR_KIND)

    def send(self, session: str, chat: str, text: str, source: str, kind: str) -> None:
        """Queue ``text`` in the chat's outbox under its lease and wake the worker, whose sender delivers it."""
        store = ChatStore(self.redis, self.scripts, self.settings, session, chat)
        deadline = time.monotonic() + LEASE_WAIT_S
        while store.acquire() is None:
            if time.monotonic() > deadline:
                raise OwnershipError("the chat is busy; try again in a moment")
            time.sleep(0.05)
        try:
            store.commit(Turn([text]), kind=kind, source=source)
        finally:
            store.release()
        self._wake(session, chat, MESSAGE_RECEIVED)

    def erase(self, session: str, chat: str) -> int:
        """Erasure (LGPD/GDPR): the chat leaves the human queue and its operator's load; its left messages and its
        events in the console's stream are deleted. Call before the chat's own keys go. Returns entries removed."""
        sk = keys.SessionKeys(session)
        state = self.redis.hgetall(sk.chat(chat).state)
        removed = self.redis.zrem(sk.human_queue, chat) + self.redis.zrem(sk.human_notify_due, chat)
        if owner_of(state) is Owner.WITH_OPERATOR and state.get("operator"):
            self.redis.hincrby(sk.operators_load, state["operator"], -1)
        for entry in self.left_messages(session):
            if entry.get("chat") == chat:
                removed += self.redis.lrem(sk.human_left, 0, json.dumps(entry, ensure_ascii=False))
        doomed = [i for i, fields in self.redis.xrange(sk.events_stream) if fields.get("chat") == chat]
        if doomed:
            removed += self.redis.xdel(sk.events_stream, *doomed)
        return int(removed)

    # --- helpers -----------------------------------------------------------------------------------------

    def _wake(self, session: str, chat: str, kind: str) -> None:
        ring(self.redis, WakeUp(kind, session, chat))
        if kind == QUEUE_CHANGED:
            event_stream.append(self.redis, session, event_stream.QUEUE, chat=chat)

    @staticmethod
    def _keys(session: str, chat: str) -> tuple[keys.SessionKeys, keys.ChatKeys]:
        sk = keys.SessionKeys(session)
        return sk, sk.chat(chat)


def _record_id() -> str:
    return "own_" + uuid.uuid4().hex
