"""An agent clinic for tests and ``make eval``: the real ingest, worker, Book and WAHA simulator on a given Redis,
with the agent flow and an OpenAI-compatible endpoint (the scripted stand-in, or whatever ``LLM_BASE_URL`` is)."""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.booking_helpers import always_open
from wsm.attendance.worker import Worker
from wsm.conversation.engine import Engine
from wsm.conversation.flow import FLOWS_DIR, load_flow
from wsm.conversation.history import read_history
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.schedule.book import Book
from wsm.schedule.config import Schedule
from wsm.store import keys
from wsm.store.events import MESSAGE_RECEIVED, WakeUp
from wsm.waha.client import WahaClient
from wsm.waha.event import parse_event

AGENT_FLOW = FLOWS_DIR / "agent.pt-BR.yaml"
SESSION = "default"


def agent_settings(llm_url: str, **env: str) -> Settings:
    """Settings from the environment with the test's LLM endpoint and limits (env names as in the README)."""
    values = {
        "WSM_TYPING_MS_PER_CHAR": "0",
        "WSM_MAX_ACTIVE": "50",
        "LLM_BASE_URL": llm_url,
        "LLM_MODEL": os.environ.get("LLM_MODEL", "llm-sim"),
        "LLM_TIMEOUT_S": "2",
        "LLM_MAX_RETRIES": "2",
        **env,
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        return Settings.from_env()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class AgentClinic:
    def __init__(
        self, r: redis.Redis, sim: WahaSimulator, settings: Settings, schedule: Schedule | None = None
    ) -> None:
        self.r, self.sim, self.settings = r, sim, settings
        self.schedule = schedule or always_open()
        waha = WahaClient(sim.url, timeout_s=5)
        self.ingestor = Ingestor(r, settings)
        self.worker = Worker(r, settings, waha, Engine(load_flow(AGENT_FLOW)), self.schedule)
        self.book = Book(r, self.schedule, SESSION)

    def say(self, chat: str, text: str) -> str:
        """Send ``text`` as ``chat`` and return what the bot answered (one WhatsApp message per turn)."""
        before = len(self.texts(chat))
        self.ingestor.ingest(parse_event(wp.message_event(chat, text)))
        self.worker.on_event(WakeUp(MESSAGE_RECEIVED, SESSION, chat))
        return "\n\n".join(self.texts(chat)[before:])

    def texts(self, chat: str) -> list[str]:
        return [c.json["text"] for c in self.sim.sent_texts(chat)]

    def history(self, chat: str) -> list[dict[str, Any]]:
        return read_history(self.r, SESSION, chat)

    def tool_records(self, chat: str) -> list[dict[str, Any]]:
        return [h for h in self.history(chat) if h.get("kind") == "tool"]

    def state(self, chat: str) -> dict[str, str]:
        return self.r.hgetall(keys.SessionKeys(SESSION).chat(chat).state)

    def usage(self, chat: str) -> dict[str, int]:
        return json.loads(self.state(chat).get("agent_usage_total") or "{}")

    def statuses(self, chat: str) -> list[str]:
        return [str(a.status) for a in self.book.appointments(chat)]
