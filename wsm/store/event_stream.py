"""The console's live feed: one bounded Redis Stream per session of small events (what changed, never the text).

Writers append after their change (the ``owner_*`` scripts append inside theirs); the console reads the streams
with XREAD and serves them as Server-Sent Events whose id names the position in every session's stream, so a
browser that reconnects with ``Last-Event-ID`` is sent exactly what it missed (as long as the stream still
holds it: ``SessionKeys.EVENTS_STREAM_MAX`` entries).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import redis
from redis.crc import key_slot

from wsm.core.settings import Settings
from wsm.core.status import PHONE_OPERATOR, TRANSITION, Owner
from wsm.store import keys
from wsm.store.connection import is_cluster

MESSAGE = "message"  # fields chat, direction (in | out), source (customer | bot | operator | phone)
QUEUE = "queue"  # the bot queue or the human queue changed; field chat
OWNER = "owner"  # an ownership transition (written by the owner_*.lua scripts); fields chat, owner, operator
OPERATORS = "operators"  # an operator went online or offline; field operator
DEAD_LETTER = "dead_letter"  # the dead-letter list changed
LEFT_MESSAGE = "left_message"  # someone left a message for the operators; field chat

CLUSTER_POLL_MS = 100  # how often a console on a Redis Cluster looks at streams that live on several nodes

# the names the owner_*.lua scripts must not spell (see _owner_lib.lua)
OWNER_NAMES = {
    "bot": Owner.BOT,
    "with_operator": Owner.WITH_OPERATOR,
    "phone": PHONE_OPERATOR,
    "record": TRANSITION,
    "event": OWNER,
}


def owner_args(settings: Settings) -> str:
    """The last ARGV of every owner_*.lua: those names, and how the chat's history is kept, since the
    transition record is appended to it like any other (dedupe window, bound, retention: _history_lib.lua)."""
    s = settings
    history = {
        "window": s.dedupe_window,
        "max": s.history_max,
        "dedupe_max": s.dedupe_max,
        "dedupe_ttl": s.dedupe_ttl_s,
        "retention": s.state_retention_s,
    }
    return json.dumps({**OWNER_NAMES, "history": history})


@dataclass(frozen=True)
class StreamEvent:
    session: str
    id: str
    fields: dict[str, str]


def append(client: redis.Redis, session: str, kind: str, **fields: str) -> None:
    """Add one event to the session's stream (trimmed to about ``EVENTS_STREAM_MAX``)."""
    sk = keys.SessionKeys(session)
    client.xadd(sk.events_stream, {"type": kind, **fields}, maxlen=keys.SessionKeys.EVENTS_STREAM_MAX, approximate=True)


def read_since(
    client: redis.Redis, positions: dict[str, str], block_ms: int | None = None, count: int = 500
) -> list[StreamEvent]:
    """Events after ``positions`` (session -> stream id; "$" = only new ones), oldest first per session.

    One XREAD names every stream, and blocks up to ``block_ms`` for the first new event. On a Redis Cluster the
    sessions' streams (each under its session's hash tag) may live on different nodes, which one XREAD cannot
    name together: there each slot's streams are read in turn without blocking, every ``CLUSTER_POLL_MS``
    until an event comes or ``block_ms`` is over.
    """
    if not positions:
        return []
    by_key = {keys.SessionKeys(s).events_stream: s for s in positions}
    groups = _by_slot(client, {key: positions[s] for key, s in by_key.items()})
    if len(groups) == 1:
        return _events(client.xread(groups[0], count=count, block=block_ms), by_key)
    now = latest_ids(client, [s for s, p in positions.items() if p == "$"])  # "$" means after what is there now
    groups = [{key: now.get(by_key[key], p) if p == "$" else p for key, p in group.items()} for group in groups]
    deadline = math.inf if block_ms == 0 else time.monotonic() + (block_ms or 0) / 1000  # 0: as XREAD, forever
    while True:
        out = [e for group in groups for e in _events(client.xread(group, count=count), by_key)]
        left_s = deadline - time.monotonic()
        if out or block_ms is None or left_s <= 0:
            return out
        time.sleep(min(CLUSTER_POLL_MS / 1000, left_s))


def _by_slot(client: redis.Redis, streams: dict[str, str]) -> list[dict[str, str]]:
    """``streams`` as one group (a plain Redis), or one group per hash slot (a Redis Cluster)."""
    if not is_cluster(client):
        return [streams]
    groups: dict[int, dict[str, str]] = {}
    for key, position in streams.items():
        groups.setdefault(key_slot(key.encode()), {})[key] = position
    return list(groups.values())


def _events(answer: list | None, by_key: dict[str, str]) -> list[StreamEvent]:
    return [StreamEvent(by_key[key], entry_id, fields) for key, entries in answer or [] for entry_id, fields in entries]


def latest_ids(client: redis.Redis, sessions: list[str]) -> dict[str, str]:
    """Each session's newest stream id ("0-0" when it has none): where a fresh page starts listening."""
    pipe = client.pipeline(transaction=False)
    for session in sessions:
        pipe.xrevrange(keys.SessionKeys(session).events_stream, count=1)
    return {s: (found[0][0] if found else "0-0") for s, found in zip(sessions, pipe.execute(), strict=True)}


def encode_position(positions: dict[str, str]) -> str:
    """An SSE id: ``session=stream id`` pairs joined by spaces (session names hold no spaces or ``=``)."""
    return " ".join(f"{s}={i}" for s, i in sorted(positions.items()))


def decode_position(text: str) -> dict[str, str]:
    """The positions of a ``Last-Event-ID``; anything malformed is skipped (that session starts from now)."""
    out: dict[str, str] = {}
    for part in (text or "").split():
        session, _, entry_id = part.partition("=")
        major, _, minor = entry_id.partition("-")
        if session and major.isdigit() and minor.isdigit() and "{" not in session and "}" not in session:
            out[session] = entry_id
    return out
