"""The Chat Completions stand-in: ``POST /v1/chat/completions`` over real HTTP, tool calls included.

Tests script it answer by answer (:meth:`LlmSimulator.push`: a message, a tool call, a status such as 429 or
500, a delay) and read back every request it got (:attr:`LlmSimulator.requests`). With nothing scripted it
answers with its ``brain`` (by default :class:`infra.llm_sim.receptionist.Receptionist`), a rule-based model
that reads the request's messages and tools like a real one would. ``wsm-llm-sim`` runs it alone.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

log = logging.getLogger(__name__)
Brain = Callable[[dict[str, Any]], dict[str, Any]]  # request body -> assistant message


@dataclass
class Answer:
    """One scripted answer: an assistant ``message`` (content and/or tool_calls), or an HTTP error ``status``."""

    message: dict[str, Any] | None = None
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def text(content: str) -> Answer:
    return Answer({"role": "assistant", "content": content})


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, content: str | None = None) -> Answer:
    """An answer calling one tool; ``arguments`` as a string is sent as is (malformed JSON, for tests)."""
    return tool_calls([(name, arguments)], content)


def tool_calls(calls: list[tuple[str, dict[str, Any] | str | None]], content: str | None = None) -> Answer:
    return Answer({"role": "assistant", "content": content, "tool_calls": [call(n, a) for n, a in calls]})


_ids = itertools.count(1)


def call(name: str, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
    return {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": args}}


def status(code: int, delay_s: float = 0.0, **headers: str) -> Answer:
    return Answer(None, code, delay_s, headers)


class LlmSimulator:
    """Serve on ``127.0.0.1:port`` (0 = a free one) until :meth:`stop`; use as a context manager."""

    def __init__(self, port: int = 0, brain: Brain | None = None, delay_s: float = 0.0) -> None:
        if brain is None:
            from infra.llm_sim.receptionist import Receptionist

            brain = Receptionist()
        self.brain = brain
        self.delay_s = delay_s  # every unscripted answer waits this long (a slow model)
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="llm-sim", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def push(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def start(self) -> LlmSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LlmSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, body: dict[str, Any]) -> Answer:
        with self._lock:
            self.requests.append(body)
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        return Answer(self.brain(body), delay_s=self.delay_s)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: LlmSimulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else keep-alive answers stall ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        answer = self.server.sim.answer(body)
        if answer.delay_s:
            time.sleep(answer.delay_s)
        if answer.status != 200 or answer.message is None:
            error = {"error": {"message": f"scripted status {answer.status}", "type": "server_error"}}
            return self._send(answer.status, error, answer.headers)
        self._send(200, completion(body, answer.message))

    def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (its timeout): nothing to answer
            pass


def completion(body: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions response around ``message``, with token counts estimated as characters / 4."""
    prompt = sum(len(json.dumps(m, ensure_ascii=False)) for m in body.get("messages") or []) // 4 + 1
    out = len(json.dumps(message, ensure_ascii=False)) // 4 + 1
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or "llm-sim",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out},
    }


@click.command()
@click.option("--port", type=int, default=3100, show_default=True)
@click.option("--delay-s", type=float, default=0.0, show_default=True, help="Wait this long before each answer.")
def main(port: int, delay_s: float) -> None:
    """Serve the rule-based receptionist as an OpenAI-compatible endpoint (LLM_BASE_URL=http://127.0.0.1:PORT/v1)."""
    logging.basicConfig(level=logging.INFO)
    sim = LlmSimulator(port, delay_s=delay_s)
    click.echo(f"llm-sim: Chat Completions at {sim.url}")
    sim._server.serve_forever()
