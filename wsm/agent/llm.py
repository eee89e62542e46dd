"""The model, reached through the ``openai`` package at any OpenAI-compatible endpoint (``LLM_BASE_URL``).

Retries are ours, not the library's: a timeout, a connection error, 429 or 5xx is tried again after a short
backoff, but never past the turn's deadline, so a failing provider ends in the fallback within
``LLM_TIMEOUT_S * (LLM_MAX_RETRIES + 1)`` plus the backoffs (the library would honour a ``Retry-After`` of
up to two minutes). Other 4xx answers (wrong key, unknown model) are not retried.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import openai

from wsm.core.errors import WsmError
from wsm.core.settings import Settings

log = logging.getLogger(__name__)
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 2.0


class LlmUnavailable(WsmError):
    """The model did not answer usefully within the turn's deadline (timeouts, 429, 5xx, a refusal)."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the model wrote it (it may be malformed)


@dataclass
class Completion:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_message(self) -> dict[str, Any]:
        """The assistant message to send back with the tool results."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


def backoff_s(attempt: int) -> float:
    return min(BACKOFF_BASE_S * 2**attempt, BACKOFF_MAX_S)


def turn_budget_s(settings: Settings) -> float:
    """The longest a turn may wait for the model: every attempt's timeout plus the pauses between them."""
    retries = settings.llm_max_retries
    return settings.llm_timeout_s * (retries + 1) + sum(backoff_s(n) for n in range(retries))


class LlmClient:
    """One model at one endpoint; thread-safe (the ``openai`` client keeps a connection pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = settings.llm_model or "default"
        self._client = openai.OpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key or "unused",  # local servers (Ollama, llama.cpp) ignore it
            timeout=settings.llm_timeout_s,
            max_retries=0,
        )

    def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], deadline: float) -> Completion:
        """One completion before ``deadline`` (``time.monotonic()``), retrying what a retry can fix."""
        last = "no attempt"
        for attempt in range(self.settings.llm_max_retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            try:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    tools=tools,  # type: ignore[arg-type]
                    timeout=min(self.settings.llm_timeout_s, remaining),
                )
                return _completion(response)
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                last = type(e).__name__
            except openai.APIStatusError as e:
                if e.status_code != 429 and e.status_code < 500:
                    raise LlmUnavailable(f"the model endpoint refused the call: HTTP {e.status_code}") from e
                last = f"HTTP {e.status_code}"
            except (openai.OpenAIError, ValueError, LookupError, AttributeError, TypeError) as e:
                raise LlmUnavailable(f"the model endpoint answered something unusable: {type(e).__name__}") from e
            log.warning("model call failed (%s), attempt %d", last, attempt + 1)
            pause = min(backoff_s(attempt), deadline - time.monotonic())
            if pause > 0 and attempt < self.settings.llm_max_retries:
                time.sleep(pause)
        raise LlmUnavailable(f"the model did not answer in time: {last}")


def _completion(response: Any) -> Completion:
    message = response.choices[0].message
    calls = [
        ToolCall(c.id or f"call_{i}", c.function.name or "", c.function.arguments or "")
        for i, c in enumerate(message.tool_calls or [])
    ]
    usage = response.usage
    return Completion(
        message.content or "",
        calls,
        int(getattr(usage, "prompt_tokens", 0) or 0),
        int(getattr(usage, "completion_tokens", 0) or 0),
    )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
