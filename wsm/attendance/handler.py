"""What the worker and the notifier share: their wiring, and how a CloudEvent reaches them.

Both are triggered by wake-up events, read what the keys say is pending, and send through the
same outbox. One instance per process and settings, built on first use (after gunicorn's fork).
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import redis

from wsm.conversation.engine import Engine
from wsm.conversation.flow import load_flow
from wsm.core.errors import BadEvent
from wsm.core.settings import Settings, get_settings
from wsm.delivery.outbox import Sender
from wsm.store import keys
from wsm.store.connection import get_redis, redis_errors
from wsm.store.events import WakeUp
from wsm.store.scripts import Scripts
from wsm.waha.client import WahaClient

log = logging.getLogger(__name__)


class Handler:
    """Base of :class:`~wsm.attendance.worker.Worker` and :class:`~wsm.attendance.notifier.Notifier`."""

    _instances: ClassVar[dict[tuple[type, int, int], Handler]] = {}

    def __init__(self, client: redis.Redis, settings: Settings, waha: WahaClient, engine: Engine) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = Scripts(client)
        self.sender = Sender(client, waha)
        self.engine = engine

    def on_event(self, event: WakeUp) -> Any:
        raise NotImplementedError

    def sessions(self, event: WakeUp) -> list[str]:
        """The event's session, or every known session for a tick."""
        return [event.session] if event.session else sorted(self.redis.smembers(keys.SESSIONS))

    @classmethod
    def for_process(cls) -> Handler:
        settings = get_settings()
        key = (cls, os.getpid(), id(settings))
        found = cls._instances.get(key)
        if found is None:
            waha = WahaClient(settings.waha_url, settings.waha_api_key, settings.waha_timeout_s)
            engine = Engine(load_flow(settings.flow_file))
            found = cls._instances[key] = cls(get_redis(settings.redis_url), settings, waha, engine)
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
            cls.for_process().on_event(event)
