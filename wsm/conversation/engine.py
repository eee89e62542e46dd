"""Conversation engine v1: given a chat's state and its new messages, decide the replies and the next state.

Pure logic, no I/O of its own: the worker reads state and inbox, calls :meth:`Engine.turn`, and commits
the result atomically. All replies of one turn are sent as one WhatsApp message (a burst becomes one
turn). Booking steps talk to the scheduling core through the :class:`BookingPort` the worker passes in.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wsm.conversation import booking
from wsm.conversation.booking import NO, YES, BookingPort, BookingTalk, Outcome
from wsm.conversation.dates import fold
from wsm.conversation.flow import Flow, Step, normalize
from wsm.core.status import EndReason
from wsm.store.turn import Turn

if TYPE_CHECKING:
    from wsm.agent.runner import Agent, AgentReply

NOTICE_FIELD = "notice"  # chat state: JSON {"kind": "reminder" | "offer", "apt": id} of the last notice sent
BOOKING_FIELD = "booking"  # chat state: JSON of the booking conversation in progress ("" = none)
AGENT_FIELD = "agent"  # chat state: JSON {"offered": [slot ids find_slots returned in this conversation]}
USAGE_FIELD = "agent_usage"  # chat state: JSON token use of this conversation's model calls
USAGE_TOTAL_FIELD = "agent_usage_total"  # chat state: the same, over every conversation of the chat
AGENT_TEXTS = {  # a flow file may override them under ``texts``
    "agent_failed": "Desculpe, não consegui responder agora.",
    "agent_handoff": "Certo! Vou passar a conversa para um atendente humano, que continua por aqui.",
}


@dataclass
class _Ctx:
    """One turn's booking context: who, which message, and the booking conversation in progress."""

    chat: str
    booking: dict[str, Any] | None
    request_id: str = ""
    state: dict[str, str] | None = None


class _Format(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Engine:
    def __init__(
        self, flow: Flow, port: BookingPort | None = None, clock: Any = None, agent: Agent | None = None
    ) -> None:
        self.flow = flow
        self.talk = BookingTalk(port, flow.texts, clock) if port is not None else None
        self.agent = agent
        self.texts = {**AGENT_TEXTS, **flow.texts}

    def render(self, template: str, fields: dict[str, str] | None = None, **values: object) -> str:
        return template.format_map(_Format({**self.flow.vars, **(fields or {}), **values}))

    def prompt(self, step: Step, fields: dict[str, str]) -> str:
        lines = [self.render(step.say, fields)]
        lines += [f"{o.key}. {o.label}" for o in step.options]
        return "\n".join(lines)

    def turn(
        self, state: dict[str, str], texts: list[str], chat: str = "", message_ids: list[str] | None = None
    ) -> Turn:
        """Handle the messages of an active chat, oldest first.

        ``message_ids`` (one per text) make the booking request ids, so a retried turn books nothing twice.
        """
        fields = json.loads(state.get("fields") or "{}")
        ids = list(message_ids or []) or [uuid.uuid4().hex for _ in texts]
        ctx = _Ctx(chat, booking.loads(state.get(BOOKING_FIELD)), state=state)
        turn = Turn()
        notice = booking.loads(state.get(NOTICE_FIELD))
        if notice:
            turn.state[NOTICE_FIELD] = ""
        if notice and texts and self.talk is not None:
            ctx.request_id = ids[0]
            outcome = self.talk.from_notice(notice["kind"], notice["apt"], texts[0], chat, ids[0])
            if outcome is not None:
                return self._after_notice(turn, state, fields, ctx, outcome, texts[1:], ids[1:])
        if any(normalize(t) in self.flow.leave_words for t in texts) and state.get("conv") != "1":
            return self._end(turn, EndReason.LEFT, self.flow.texts["goodbye"])
        start = self.flow.steps[self.flow.start]
        if state.get("conv") != "1" and start.agent is not None:
            return self._open_agent(turn, state, start, ctx, texts, ids)
        if state.get("conv") != "1":
            return self._open(turn, state, fields)
        step = self.flow.steps.get(state.get("step") or "") or self.flow.steps[self.flow.start]
        return self._continue(turn, step, fields, ctx, texts, ids)

    def _continue(
        self, turn: Turn, step: Step, fields: dict[str, str], ctx: _Ctx, texts: list[str], ids: list[str]
    ) -> Turn:
        for index, (text, message_id) in enumerate(zip(texts, ids, strict=False)):
            ctx.request_id = message_id
            if self._for_agent(step, ctx, text):
                if not self._agent_answer(turn, ctx, fields, text):
                    step = self._agent(turn, step, fields, ctx, texts[index:], ids[index:])
                    break
                continue
            step = self._handle(turn, step, fields, text, ctx)
            if turn.end:
                return turn
        if turn.end:
            return turn
        turn.state.update(
            step=step.name, fields=json.dumps(fields, ensure_ascii=False), **{BOOKING_FIELD: booking.dumps(ctx.booking)}
        )
        return turn

    def _after_notice(
        self,
        turn: Turn,
        state: dict[str, str],
        fields: dict[str, str],
        ctx: _Ctx,
        outcome: Outcome,
        texts: list[str],
        ids: list[str],
    ) -> Turn:
        """The person answered a reminder or an offer, maybe outside any conversation."""
        turn.replies += outcome.replies
        ctx.booking = outcome.state
        if ctx.booking is None and state.get("conv") != "1":
            turn.end = EndReason.DONE
            turn.state.update(conv="0", step="", fields="{}", **{BOOKING_FIELD: ""})
            return turn
        if ctx.booking is not None:
            ctx.booking["after"] = ""  # back to the menu when done
        step = self.flow.steps.get(state.get("step") or "") if state.get("conv") == "1" else None
        if step is None:
            step, fields = self.flow.steps[self.flow.start], {}
            turn.state.update(conv="1", admitted_from_queue="0", closed_reason="")
        return self._continue(turn, step, fields, ctx, texts, ids)

    # --- the agent ---------------------------------------------------------------------------------

    def _open_agent(
        self, turn: Turn, state: dict[str, str], start: Step, ctx: _Ctx, texts: list[str], ids: list[str]
    ) -> Turn:
        """An agent flow answers from the person's first message: no greeting, no menu."""
        if state.get("admitted_from_queue") == "1":
            turn.replies.append(self.flow.texts["your_turn"])
        turn.state.update(conv="1", admitted_from_queue="0", closed_reason="", **{AGENT_FIELD: "", USAGE_FIELD: ""})
        ctx.booking = None
        ctx.state = {**state, AGENT_FIELD: "", USAGE_FIELD: ""}
        return self._continue(turn, start, {}, ctx, texts, ids)

    def _for_agent(self, step: Step, ctx: _Ctx, text: str) -> bool:
        """Whether the agent answers ``text``: in an agent step, unless it is a leave/menu word or a flow booking."""
        if step.agent is None or normalize(text) in self.flow.leave_words | self.flow.menu_words:
            return False
        return ctx.booking is None or ctx.booking.get("by") == "agent"

    def _agent_answer(self, turn: Turn, ctx: _Ctx, fields: dict[str, str], text: str) -> bool:
        """The answer to a confirmation the agent requested: yes commits, no lets go. True = nothing left to do.

        Anything else lets the pending request lapse (a held slot is released) and goes to the agent; so does
        a "não, ..." that says more.
        """
        pending = ctx.booking
        if not pending or self.talk is None:
            return False
        word = fold(text).strip(" .!")
        first = word.replace(",", " ").split(" ")[0] if word else ""
        yes, no = word in YES or first in ("sim", "s"), word in NO or first in ("nao", "n")
        ctx.booking = None
        if not (yes or no):
            if pending.get("action") == "book":
                self.talk.release(pending["apt"], ctx.chat, ctx.request_id)
            return False
        outcome = self.talk.settle(pending, yes, ctx.chat, ctx.request_id)
        turn.replies += outcome.replies
        if outcome.done in ("booked", "rescheduled", "cancelled"):
            fields["booking_result"] = outcome.done
        return yes or word in NO

    def _agent(
        self, turn: Turn, step: Step, fields: dict[str, str], ctx: _Ctx, texts: list[str], ids: list[str]
    ) -> Step:
        """Let the model answer the rest of this turn's messages; ask what it requested; fall back if it failed."""
        assert step.agent is not None
        state = ctx.state or {}
        memory = json.loads(state.get(AGENT_FIELD) or "{}")
        person = {"step": step.name, "fields": fields}
        if self.agent is None:
            return self._agent_fallback(turn, step, fields, ctx)
        answer = self.agent.respond(step.agent, ctx.chat, person, memory.get("offered", []), ids[0], ids[-1])
        turn.records += answer.records
        turn.replies += answer.replies
        turn.state[AGENT_FIELD] = json.dumps({"offered": answer.offered})
        self._count_usage(turn, state, answer)
        if answer.handoff:
            self._end(turn, EndReason.HANDOFF, self.texts["agent_handoff"])
            return step
        if answer.pending is not None:
            ctx.booking = {**answer.pending, "by": "agent", "after": ""}
            turn.replies.append(answer.question)
            return step
        if answer.failed:
            return self._agent_fallback(turn, step, fields, ctx)
        return step

    def _agent_fallback(self, turn: Turn, step: Step, fields: dict[str, str], ctx: _Ctx) -> Step:
        """The model failed or looped: the flow's fallback step (a menu), else a human — never silence."""
        assert step.agent is not None
        turn.replies.append(self.texts["agent_failed"])
        if step.agent.fallback:
            return self._enter(turn, self.flow.steps[step.agent.fallback], fields, ctx)
        self._end(turn, EndReason.HANDOFF, self.texts["agent_handoff"])
        return step

    @staticmethod
    def _count_usage(turn: Turn, state: dict[str, str], answer: AgentReply) -> None:
        for name in (USAGE_FIELD, USAGE_TOTAL_FIELD):
            usage = json.loads(turn.state.get(name) or state.get(name) or "{}")
            usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + answer.prompt_tokens
            usage["completion_tokens"] = usage.get("completion_tokens", 0) + answer.completion_tokens
            usage["model_calls"] = usage.get("model_calls", 0) + answer.calls
            usage["turns"] = usage.get("turns", 0) + 1
            turn.state[name] = json.dumps(usage)

    def idle_close(self) -> Turn:
        """The person stopped answering: tell them, keep where they stopped so they can resume."""
        return Turn([self.flow.texts["idle_closed"]], {"conv": "0"}, EndReason.IDLE)

    def leave_queue(self) -> Turn:
        return Turn([self.flow.texts["left_queue"]], {"conv": "0", "step": "", "fields": "{}"}, EndReason.LEFT)

    def position_text(self, first: bool, position: int, wait_min: int) -> str:
        template = self.flow.texts["queued" if first else "position_update"]
        return self.render(template, position=position, wait_min=wait_min)

    def _open(self, turn: Turn, state: dict[str, str], fields: dict[str, str]) -> Turn:
        """First turn of a conversation: the messages that opened it are answered with a greeting."""
        if state.get("admitted_from_queue") == "1":
            turn.replies.append(self.flow.texts["your_turn"])
        step = self.flow.steps.get(state.get("step") or "")
        if step and state.get("closed_reason") == EndReason.IDLE:
            turn.replies.append(self.flow.texts["resumed"])
        else:
            step, fields = self.flow.steps[self.flow.start], {}
            turn.replies.append(self.render(self.flow.texts["welcome"]))
        turn.replies.append(self.prompt(step, fields))
        turn.state.update(
            conv="1", admitted_from_queue="0", closed_reason="", step=step.name, fields=json.dumps(fields)
        )
        if step.schedule is None:
            turn.state[BOOKING_FIELD] = ""
        return turn

    def _handle(self, turn: Turn, step: Step, fields: dict[str, str], text: str, ctx: _Ctx) -> Step:
        word = normalize(text)
        if word in self.flow.leave_words:
            self._release_hold(ctx)
            self._end(turn, EndReason.LEFT, self.flow.texts["goodbye"])
            return step
        if word in self.flow.menu_words:
            self._release_hold(ctx)
            return self._enter(turn, self.flow.steps[self.flow.start], fields, ctx)
        action = self._booking_word(word)
        if action and self.talk is not None:
            self._release_hold(ctx)
            return self._book(turn, step, fields, ctx, self.talk.start(action, ctx.chat), after="")
        if ctx.booking is not None and self.talk is not None:
            return self._book(turn, step, fields, ctx, self.talk.handle(ctx.booking, text, ctx.chat, ctx.request_id))
        if step.collect:
            fields[step.collect] = text.strip()
            return self._enter(turn, self.flow.steps[step.next or self.flow.start], fields, ctx)
        for option in step.options:
            if word in (normalize(option.key), normalize(option.label)):
                return self._enter(turn, self.flow.steps[option.next], fields, ctx)
        turn.replies += [self.flow.texts["invalid_option"], self.prompt(step, fields)]
        return step

    def _booking_word(self, word: str) -> str:
        for action, words in self.flow.booking_words.items():
            if word in words:
                return "list" if action == "appointments" else action
        return ""

    def _enter(self, turn: Turn, step: Step, fields: dict[str, str], ctx: _Ctx | None = None) -> Step:
        if step.schedule is not None:
            if step.say:
                turn.replies.append(self.render(step.say, fields))
            if self.talk is None or ctx is None:
                turn.replies.append(booking.TEXTS["booking_unavailable"])
                return self._enter(turn, self.flow.steps[step.next or self.flow.start], fields, ctx)
            spec = step.schedule
            outcome = self.talk.start(spec.action, ctx.chat, spec.service, spec.provider)
            return self._book(turn, step, fields, ctx, outcome, after=step.next or "")
        turn.replies.append(self.prompt(step, fields))
        if step.end:
            turn.end = step.end
            turn.state.update(conv="0", step="", fields="{}", last_result=json.dumps(fields, ensure_ascii=False))
        return step

    def _book(
        self, turn: Turn, step: Step, fields: dict[str, str], ctx: _Ctx, outcome: Outcome, after: str | None = None
    ) -> Step:
        """Apply what the booking conversation answered; when it is over, go on to the step after it."""
        turn.replies += outcome.replies
        after = (ctx.booking or {}).get("after", "") if after is None else after
        if outcome.state is not None:
            ctx.booking = {**outcome.state, "after": after}
            return step
        ctx.booking = None
        if outcome.done in ("booked", "rescheduled", "cancelled"):
            fields["booking_result"] = outcome.done
        target = self.flow.steps.get(after) if after and outcome.done in ("booked", "waitlist") else None
        if target is None and step.schedule is not None:
            target = self.flow.steps[self.flow.start]
        if target is None:
            turn.replies.append(self.prompt(step, fields))
            return step
        return self._enter(turn, target, fields, ctx)

    def _release_hold(self, ctx: _Ctx) -> None:
        """Leaving the booking conversation while a slot is held for us: let it go at once."""
        held = ctx.booking or {}
        if self.talk is not None and held.get("mode") == "confirm" and held.get("action") == "book":
            self.talk.release(held["apt"], ctx.chat, ctx.request_id)
        ctx.booking = None

    def _end(self, turn: Turn, reason: EndReason, text: str) -> Turn:
        turn.replies.append(text)
        turn.end = reason
        turn.state.update(conv="0", step="", fields="{}", **{BOOKING_FIELD: ""})
        return turn
