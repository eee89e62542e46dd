"""Server-Sent Events from the sessions' event streams, each id the position in every stream.

A stream lives at most ``WSM_CONSOLE_SSE_S`` and then ends; the browser's EventSource reconnects by itself
with ``Last-Event-ID``, and the events written in between are sent first. So a gunicorn thread is held for a
bounded time per open page, and a reconnect misses nothing (within the stream's ``EVENTS_STREAM_MAX``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis

from wsm.store import event_stream, keys

RETRY_MS = 500  # how soon the browser reconnects after a stream ends
BLOCK_MS = 5000  # one XREAD waits at most this long; a comment line is sent after each empty wait


def start_positions(client: redis.Redis, last_event_id: str) -> dict[str, str]:
    """Where to read from: the ``Last-Event-ID``'s positions; every other session from its newest event."""
    sessions = sorted(client.smembers(keys.SESSIONS))
    given = event_stream.decode_position(last_event_id)
    fresh = [s for s in sessions if s not in given]
    return {**event_stream.latest_ids(client, fresh), **{s: i for s, i in given.items() if s in sessions}}


def stream(client: redis.Redis, positions: dict[str, str], lifetime_s: float) -> Iterator[str]:
    """The SSE body: ``retry``, then one ``id``/``data`` block per event, until the lifetime is over."""
    deadline = time.monotonic() + lifetime_s
    yield f"retry: {RETRY_MS}\n: {len(positions)} sessions\n\n"
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            return
        try:
            for session in client.smembers(keys.SESSIONS):  # a session seen since: all of its events
                positions.setdefault(session, "0-0")
            if not positions:
                time.sleep(min(1.0, left_ms / 1000))
                continue
            events = event_stream.read_since(client, positions, block_ms=max(1, min(BLOCK_MS, left_ms)))
        except redis.RedisError:
            yield ": redis unavailable\n\n"
            return
        if not events:
            yield ": idle\n\n"
            continue
        for event in events:
            positions[event.session] = event.id
            data = json.dumps({"session": event.session, **event.fields}, ensure_ascii=False)
            yield f"id: {event_stream.encode_position(positions)}\ndata: {data}\n\n"
