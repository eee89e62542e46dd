"""Conversation engine v1: given a chat's state and its new messages, decide the replies and the next state.

Pure logic, no I/O: the worker reads state and inbox, calls :meth:`Engine.turn`, and commits the
result atomically. All replies of one turn are sent as one WhatsApp message (a burst becomes one turn).
"""

from __future__ import annotations

import json

from wsm.conversation.flow import Flow, Step, normalize
from wsm.core.status import EndReason
from wsm.store.turn import Turn


class _Format(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Engine:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def render(self, template: str, fields: dict[str, str] | None = None, **values: object) -> str:
        return template.format_map(_Format({**self.flow.vars, **(fields or {}), **values}))

    def prompt(self, step: Step, fields: dict[str, str]) -> str:
        lines = [self.render(step.say, fields)]
        lines += [f"{o.key}. {o.label}" for o in step.options]
        return "\n".join(lines)

    def turn(self, state: dict[str, str], texts: list[str]) -> Turn:
        """Handle the messages of an active chat, oldest first."""
        fields = json.loads(state.get("fields") or "{}")
        turn = Turn()
        if any(normalize(t) in self.flow.leave_words for t in texts) and state.get("conv") != "1":
            return self._end(turn, EndReason.LEFT, self.flow.texts["goodbye"])
        if state.get("conv") != "1":
            return self._open(turn, state, fields)
        step = self.flow.steps.get(state.get("step") or "") or self.flow.steps[self.flow.start]
        for text in texts:
            step = self._handle(turn, step, fields, text)
            if turn.end:
                return turn
        turn.state.update(step=step.name, fields=json.dumps(fields, ensure_ascii=False))
        return turn

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
        return turn

    def _handle(self, turn: Turn, step: Step, fields: dict[str, str], text: str) -> Step:
        word = normalize(text)
        if word in self.flow.leave_words:
            self._end(turn, EndReason.LEFT, self.flow.texts["goodbye"])
            return step
        if word in self.flow.menu_words:
            return self._enter(turn, self.flow.steps[self.flow.start], fields)
        if step.collect:
            fields[step.collect] = text.strip()
            return self._enter(turn, self.flow.steps[step.next or self.flow.start], fields)
        for option in step.options:
            if word in (normalize(option.key), normalize(option.label)):
                return self._enter(turn, self.flow.steps[option.next], fields)
        turn.replies += [self.flow.texts["invalid_option"], self.prompt(step, fields)]
        return step

    def _enter(self, turn: Turn, step: Step, fields: dict[str, str]) -> Step:
        turn.replies.append(self.prompt(step, fields))
        if step.end:
            turn.end = step.end
            turn.state.update(conv="0", step="", fields="{}", last_result=json.dumps(fields, ensure_ascii=False))
        return step

    def _end(self, turn: Turn, reason: EndReason, text: str) -> Turn:
        turn.replies.append(text)
        turn.end = reason
        turn.state.update(conv="0", step="", fields="{}")
        return turn
