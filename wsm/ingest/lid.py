"""One person, one chat: an ``…@lid`` chat is served as its phone chat (``…@c.us``) once the mapping is known.

WhatsApp may show one person as a hidden id (``…@lid``) or as their number; without this they would be two
chats with two histories, two states, two queue places. Where the mapping is looked up, and why:

- **The webhook never calls WAHA.** It must persist, then acknowledge, on Redis alone: a WAHA that is slow or
  down must neither delay the 200 (WAHA would time out and post again) nor cost a message. It uses a mapping
  already known (this process's memory, then one Redis GET of ``lid:<L>``, only for @lid chats) or the one
  the payload itself carries (see :mod:`wsm.waha.lid`; recorded and merged there and then, Redis only), and
  otherwise stores the message under the @lid chat.
- **The worker resolves an @lid chat before serving it**: the known mapping, else
  ``GET /api/{session}/lids/{lid}`` once, within ``WSM_LID_LOOKUP_TIMEOUT_S``. A phone chat found merges the
  @lid chat into it (``merge_chat.lua``: history, inbox, outbox, state, queue place or slot, appointments) before
  the first turn, so the first reply already goes to the phone chat and later messages are stored there
  directly. "WAHA does not know", a failure, a timeout or a malformed answer is remembered as "" for
  ``WSM_LID_NEGATIVE_TTL_S`` (so a WAHA outage costs one short wait per chat and minute, not one per message)
  and the chat is served as @lid meanwhile (WAHA delivers replies to an @lid id); the worker asks again after.

The merge is atomic (one script on the session's hash slot) and idempotent, so every path may call it again.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TypeVar

import redis

from wsm.core.clock import now_ms
from wsm.core.errors import WahaError
from wsm.core.privacy import mask_chat
from wsm.core.settings import Settings
from wsm.core.status import ChatStatus
from wsm.store import keys
from wsm.store.doorbells import doorbell
from wsm.store.scripts import Scripts
from wsm.waha.event import Ack, Message
from wsm.waha.lid import LidLookup, is_lid, phone_chat

log = logging.getLogger(__name__)
KNOWN_MAX = 100_000  # mappings kept in memory per process (WAHA: a lid's phone number does not change)
Event = TypeVar("Event", Message, Ack)


def mapping_keys(client: redis.Redis, session: str, chat_id: str) -> dict[str, str]:
    """The ``lid:<L>`` keys that name ``chat_id`` (its own mapping, or lids mapped to it) with their values:
    personal data, for export and erasure (one SCAN of the session's mappings)."""
    sk = keys.SessionKeys(session)
    prefix = re.sub(r"([*?\[\]\\])", r"\\\1", sk.lid(""))  # the session name, literal in the pattern
    names = sorted(client.scan_iter(match=prefix + "*", count=1000))
    values = client.mget(names) if names else []
    return {n: v or "" for n, v in zip(names, values, strict=True) if n == sk.lid(chat_id) or v == chat_id}


class LidResolver:
    def __init__(self, client: redis.Redis, scripts: Scripts, settings: Settings, waha: LidLookup | None = None):
        self.redis = client
        self.scripts = scripts
        self.settings = settings
        self.waha = waha
        self._known: dict[tuple[str, str], str] = {}

    def resolve(self, event: Event) -> Event:
        """Webhook side: the event under the phone chat when the mapping is known or carried; never calls WAHA."""
        if not is_lid(event.chat_id):
            return event
        hint = event.phone_hint if isinstance(event, Message) else None
        if hint and self._known.get((event.session, event.chat_id)) != hint:
            self.merge(event.session, event.chat_id, hint)
        phone = hint or self.known(event.session, event.chat_id)
        return dataclasses.replace(event, chat_id=phone) if phone else event

    def settle(self, session: str, chat_id: str) -> str:
        """Worker side: the chat to serve; an @lid chat WAHA maps is merged into its phone chat first."""
        if not is_lid(chat_id):
            return chat_id
        phone = self._known.get((session, chat_id))
        if phone is None:
            raw = self.redis.get(keys.SessionKeys(session).lid(chat_id))
            phone = self._ask_waha(session, chat_id) if raw is None else phone_chat(raw)
        if phone is None:
            return chat_id
        self.merge(session, chat_id, phone)
        return phone

    def known(self, session: str, lid: str) -> str | None:
        """The phone chat already learned (memory, then Redis); None when unknown or known to be unknown."""
        found = self._known.get((session, lid))
        if found is None:
            found = phone_chat(self.redis.get(keys.SessionKeys(session).lid(lid)))
            if found:
                self._remember(session, lid, found)
        return found

    def merge(self, session: str, lid: str, phone: str) -> int:
        """Record lid → phone and move the @lid chat into the phone chat (atomic, idempotent); records moved."""
        sk, sch, s = keys.SessionKeys(session), keys.ScheduleKeys(session), self.settings
        old, new = sk.chat(lid), sk.chat(phone)
        channel, publish = doorbell(self.redis, session)
        result = self.scripts.merge_chat(
            keys=[
                sk.lid(lid),
                old.history, old.seen, old.inbox, old.state, old.outbox, old.lease, old.notify,
                new.history, new.seen, new.inbox, new.state, new.outbox, new.lease, new.notify,
                sk.ready, sk.active, sk.queue, sk.notify_due, sk.queue_seq,
                sch.chat(lid), sch.chat(phone), sch.waitlist, sch.waitlist_offers, sk.offers_sent,
            ],
            args=[
                lid, phone, s.lid_cache_ttl_s, now_ms(), s.history_max, s.inbox_max, s.state_retention_s, session,
                channel, sch.prefix, ChatStatus.ACTIVE, ChatStatus.WAITING, ChatStatus.HANDOFF,
                s.dedupe_window, s.dedupe_max, s.dedupe_ttl_s, publish,
            ],
        )  # fmt: skip
        self._remember(session, lid, phone)
        if result[0] == "merged":
            log.info(
                "merged %s into %s (%s history records)",
                mask_chat(lid, s.mask_phones), mask_chat(phone, s.mask_phones), result[1],
            )  # fmt: skip
        return int(result[1])

    def _ask_waha(self, session: str, lid: str) -> str | None:
        """One quick lookup; every failure is remembered as "unknown" for a short while (never blocks ingest)."""
        phone = None
        if self.waha is not None:
            try:
                phone = self.waha.lid_phone(session, lid, self.settings.lid_lookup_timeout_s)
            except WahaError as e:
                log.warning("lid lookup of %s failed, served as is: %s", mask_chat(lid, self.settings.mask_phones), e)
        if phone is None:
            self.redis.set(keys.SessionKeys(session).lid(lid), "", ex=self.settings.lid_negative_ttl_s, nx=True)
        return phone

    def _remember(self, session: str, lid: str, phone: str) -> None:
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()
        self._known[(session, lid)] = phone
