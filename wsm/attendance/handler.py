"""What the worker and the notifier share: their wiring, and how a CloudEvent reaches them.

Both are triggered by wake-up events, read what the keys say is pending, and send through the
same outbox. One instance per process and settings, built on first use (after gunicorn's fork).
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import Any, ClassVar

import redis

from wsm.agent.llm import LlmClient
from wsm.agent.runner import Agent
from wsm.attendance.ownership import Ownership
from wsm.conversation.booking import BookingTalk
from wsm.conversation.engine import Engine
from wsm.conversation.flow import Flow, FlowError, load_flow
from wsm.core.errors import BadEvent
from wsm.core.sessions import named_sessions
from wsm.core.settings import Settings, get_settings
from wsm.delivery.outbox import Sender
from wsm.ingest.lid import LidResolver
from wsm.providers.base import Outbound
from wsm.providers.outbound import client_for
from wsm.schedule.book import Book
from wsm.schedule.config import Schedule, load_schedule
from wsm.store import keys
from wsm.store.connection import get_redis, redis_errors
from wsm.store.events import WakeUp
from wsm.store.scripts import Scripts
from wsm.waha.lid import LidLookup

log = logging.getLogger(__name__)


class Handler:
    """Base of :class:`~wsm.attendance.worker.Worker` and :class:`~wsm.attendance.notifier.Notifier`."""

    _instances: ClassVar[dict[tuple[type, int, int], Handler]] = {}

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        waha: Outbound,
        engine: Engine,
        schedule: Schedule | None = None,
    ) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = Scripts(client)
        self.sender = Sender(client, waha)
        # only WAHA maps @lid ids to numbers; other providers' chats are served as they come
        self.lids = LidResolver(client, self.scripts, settings, waha if isinstance(waha, LidLookup) else None)
        self.engine = engine
        self.schedule = schedule
        self._books: dict[str, tuple[Book, Engine]] = {}
        self._llm: LlmClient | None = None
        self._per_session: dict[str, Handler] = {}

    def book(self, session: str) -> Book | None:
        """The session's appointment book (None when the flow does not book)."""
        return self._booking(session)[0] if self.schedule is not None else None

    def engine_for(self, session: str) -> Engine:
        """The engine with the session's booking port (the plain engine when the flow does not book)."""
        return self._booking(session)[1] if self.schedule is not None else self.engine

    def _booking(self, session: str) -> tuple[Book, Engine]:
        found = self._books.get(session)
        if found is None and self.schedule is not None:
            book = Book(self.redis, self.schedule, session)
            found = self._books[session] = (book, Engine(self.engine.flow, book, agent=self._agent(book, session)))
        assert found is not None
        return found

    def _agent(self, book: Book, session: str) -> Agent | None:
        """The session's AI agent when the flow has an ``agent`` step (without LLM_BASE_URL it always falls back)."""
        flow = self.engine.flow
        if not flow.uses_agent:
            return None
        if self._llm is None and self.settings.llm_base_url:
            self._llm = LlmClient(self.settings)
        if self._llm is None:
            log.warning("the flow has an agent step but LLM_BASE_URL is not set: every agent turn falls back")
        return Agent(self._llm, BookingTalk(book, flow.texts), self.redis, session, self.settings)

    @cached_property
    def ownership(self) -> Ownership:
        """Human attendance: who owns a chat, the human queue (its opening hours from the schedule file)."""
        return Ownership(self.redis, self.scripts, self.settings, self.schedule)

    def on_event(self, event: WakeUp) -> Any:
        raise NotImplementedError

    def for_session(self, session: str) -> Handler:
        """The handler of one WhatsApp number: its own flow, schedule, slots and provider (``WSM_SESSIONS_FILE``)."""
        settings = self.settings.for_session(session)
        if settings is self.settings:
            return self
        found = self._per_session.get(session)
        if found is None:
            flow = load_flow(settings.flow_file or None)
            schedule = schedule_for(flow, settings.schedule_file)
            found = type(self)(self.redis, settings, client_for(settings), Engine(flow), schedule)
            self._per_session[session] = found
        return found

    def dispatch(self, event: WakeUp) -> None:
        """Hand the event to each session's handler; without a sessions file, this handler does it all as before."""
        if not self.settings.sessions_file:
            self.on_event(event)
        elif event.session:
            self.for_session(event.session).on_event(event)
        else:  # a tick: every session, each by its own settings
            for session in sorted(set(self.sessions(event)) | set(named_sessions(self.settings))):
                self.for_session(session).on_event(WakeUp(event.type, session))

    def sessions(self, event: WakeUp) -> list[str]:
        """The event's session, or every known session for a tick."""
        return [event.session] if event.session else sorted(self.redis.smembers(keys.SESSIONS))

    @classmethod
    def for_process(cls) -> Handler:
        settings = get_settings()
        key = (cls, os.getpid(), id(settings))
        found = cls._instances.get(key)
        if found is None:
            waha = client_for(settings)
            flow = load_flow(settings.flow_file)
            schedule = schedule_for(flow, settings.schedule_file)
            found = cls._instances[key] = cls(get_redis(settings.redis_url), settings, waha, Engine(flow), schedule)
        return found

    @classmethod
    def handle_cloudevent(cls, ce_type: str, data: object) -> None:
        """Functions Framework entry: raise on Redis trouble so the router (or Pub/Sub) retries the event.

        A malformed event is logged and acknowledged (the function returns, the framework answers
        200, Pub/Sub drops it): retrying cannot fix it, and the tick covers whatever it was about.
        """
        try:
            event = WakeUp.from_cloudevent(ce_type, data)
        except BadEvent as e:
            log.warning("%s: acknowledged and dropped a malformed event: %s", cls.__name__, e)
            return
        with redis_errors():
            cls.for_process().dispatch(event)


def schedule_for(flow: Flow, path: str) -> Schedule | None:
    """The schedule a booking flow needs (None for a flow without ``schedule`` steps); a mismatch fails start-up."""
    if not flow.books:
        return None
    schedule = load_schedule(path)
    problems = flow.schedule_problems(set(schedule.services), set(schedule.providers))
    if problems:
        raise FlowError(f"the flow does not fit the schedule {schedule.source or path}: " + "; ".join(problems))
    return schedule
