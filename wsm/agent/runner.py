"""One agent turn: the model and the tools take turns until the model answers, asks for a confirmation or a
human, or a limit is reached (``LLM_MAX_TOOL_CALLS`` calls, ``LLM_MAX_TURN_TOKENS`` tokens, the deadline).

Whatever happens the person gets an answer: the model's text, the engine's confirmation question, or — when
the model fails or loops — the fallback the engine shows (the menu or a human). Every call, its arguments
and its result become a ``kind: tool`` history record: the audit trail, and what the model sees next turn.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from wsm.agent import prompt
from wsm.agent.llm import LlmClient, LlmUnavailable, turn_budget_s
from wsm.agent.tools import REQUESTS, TOOLS, Effect, ToolBox
from wsm.conversation.booking import BookingTalk
from wsm.conversation.flow import AgentSpec
from wsm.conversation.history import read_history
from wsm.core.settings import Settings

log = logging.getLogger(__name__)
HISTORY_READ = 60  # newest history records read; the token budget then keeps what fits


@dataclass
class AgentReply:
    """What one turn produced, for the engine to say and commit."""

    replies: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # kind: tool, for the history
    pending: dict[str, Any] | None = None  # a confirmation for the engine to ask
    question: str = ""
    handoff: str = ""  # reason, when the model handed the chat to a human
    failed: str = ""  # why the engine must fall back ("" = it did not)
    offered: list[str] = field(default_factory=list)  # slot ids found in this conversation so far
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0  # model calls


class Agent:
    """The agent of one session: a model (None = not configured: every turn falls back), its tools, its history."""

    def __init__(
        self,
        llm: LlmClient | None,
        talk: BookingTalk,
        client: redis.Redis,
        session: str,
        settings: Settings,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.llm = llm
        self.talk = talk
        self.redis = client
        self.session = session
        self.settings = settings
        self.clock = clock or talk.clock

    def respond(
        self, spec: AgentSpec, chat: str, person: dict[str, Any], offered: list[str], turn_id: str, up_to: str = ""
    ) -> AgentReply:
        """Answer the newest messages (already in the history, up to the message id ``up_to``)."""
        reply = AgentReply(offered=list(offered))
        if self.llm is None:
            reply.failed = "no model configured (LLM_BASE_URL)"
            return reply
        s = self.settings
        box = ToolBox(self.talk, chat, offered)
        person = {**person, "appointments": box.run("list_appointments", "{}", "").result["appointments"]}
        if spec.share_phone:
            person["phone"] = "+" + chat.partition("@")[0]
        system = prompt.system_prompt(spec.instructions, self.talk.schedule, self.clock(), person)
        records = self._history(chat, up_to)
        messages = [{"role": "system", "content": system}]
        messages += prompt.history_messages(records, s.llm_history_tokens, spec.share_phone)
        deadline = time.monotonic() + turn_budget_s(s)
        index = 0
        while True:
            try:
                completion = self.llm.complete(messages, TOOLS, deadline)
            except LlmUnavailable as e:
                log.warning("agent turn falls back: %s", e)
                reply.failed = str(e)
                return reply
            reply.calls += 1
            reply.prompt_tokens += completion.prompt_tokens
            reply.completion_tokens += completion.completion_tokens
            if not completion.tool_calls:
                if completion.content.strip():
                    reply.replies.append(completion.content.strip())
                else:
                    reply.failed = "the model answered nothing"
                return reply
            if completion.content.strip():
                reply.replies.append(completion.content.strip())
            messages.append(completion.as_message())
            for call in completion.tool_calls:
                effect = self._run(box, reply, call.name, call.arguments, f"{turn_id}:agent:{index}")
                reply.records.append(_record(turn_id, index, call.id, call.name, call.arguments, effect))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(effect.result)})
                index += 1
            reply.offered = box.offered
            if reply.pending or reply.handoff:
                return reply
            if index >= s.llm_max_tool_calls:
                reply.failed = f"more than {s.llm_max_tool_calls} tool calls in one turn"
                return reply
            if reply.prompt_tokens + reply.completion_tokens >= s.llm_max_turn_tokens:
                reply.failed = f"more than {s.llm_max_turn_tokens} tokens in one turn"
                return reply

    def _run(self, box: ToolBox, reply: AgentReply, name: str, arguments: str, request_id: str) -> Effect:
        """One call, unless the turn already has its answer (a confirmation pending, a handoff, the limit)."""
        if len(reply.records) >= self.settings.llm_max_tool_calls:
            return Effect({"error": "tool call limit reached for this turn"})
        if (reply.pending or reply.handoff) and (name in REQUESTS or name == "handoff_to_human"):
            return Effect({"error": "a confirmation or a handoff is already under way; wait for the person"})
        effect = box.run(name, arguments, request_id)
        if effect.pending is not None:
            reply.pending, reply.question = effect.pending, effect.question
        if effect.handoff:
            reply.handoff = effect.handoff
        return effect

    def _history(self, chat: str, up_to: str) -> list[dict[str, Any]]:
        records = read_history(self.redis, self.session, chat, HISTORY_READ)
        ids = [r.get("id") for r in records]
        if up_to and up_to in ids:  # later messages belong to the next turn
            records = records[: ids.index(up_to) + 1]
        return records


def _record(turn_id: str, index: int, call_id: str, name: str, arguments: str, effect: Effect) -> dict[str, Any]:
    try:
        parsed: Any = json.loads(arguments or "{}")
    except ValueError:
        parsed = arguments  # kept as the model wrote it: the audit trail shows the malformed call
    return {
        "id": f"tool_{turn_id}_{index}",
        "kind": "tool",
        "direction": "internal",
        "turn": turn_id,
        "index": index,
        "call_id": call_id,
        "tool": name,
        "arguments": parsed,
        "result": effect.result,
    }
