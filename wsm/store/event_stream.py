"""The console's live feed: one bounded Redis Stream per session of small events (what changed, never the text).

Writers append after their change (the ``owner_*`` scripts append inside theirs); the console reads the streams
with XREAD and serves them as Server-Sent Events whose id names the position in every session's stream, so a
browser that reconnects with ``Last-Event-ID`` is sent exactly what it missed (as long as the stream still
holds it: ``SessionKeys.EVENTS_STREAM_MAX`` entries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from wsm.core.settings import Settings
from wsm.core.status import PHONE_OPERATOR, TRANSITION, Owner
from wsm.store import keys

MESSAGE = "message"  # fields chat, direction (in | out), source (customer | bot | operator | phone)
QUEUE = "queue"  # the bot queue or the human queue changed; field chat
OWNER = "owner"  # an ownership transition (written by the owner_*.lua scripts); fields chat, owner, operator
OPERATORS = "operators"  # an operator went online or offline; field operator
DEAD_LETTER = "dead_letter"  # the dead-letter list changed
LEFT_MESSAGE = "left_message"  # someone left a message for the operators; field chat
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
    """Events after ``positions`` (session -> stream id; "$" = only new ones), oldest first per session."""
    if not positions:
        return []
    streams = {keys.SessionKeys(s).events_stream: pos for s, pos in positions.items()}
    by_key = {keys.SessionKeys(s).events_stream: s for s in positions}
    answer = client.xread(streams, count=count, block=block_ms)
    out: list[StreamEvent] = []
    for key, entries in answer or []:
        for entry_id, fields in entries:
            out.append(StreamEvent(by_key[key], entry_id, fields))
    return out


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
