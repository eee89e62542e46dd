"""The compact form a history record takes in Redis (``chat:<C>:history``, ``inbox``): a positional JSON array.

A record as the rest of the code sees it (``{"id": ..., "direction": ..., "text": ...}``) is stored as
``[id, direction, text, timestamp, status, ack, source, received_ms, sent_ms, local_id, status_ms,
reply_to, media, extras]`` (:data:`FIELDS`): no key names, ``null`` where a field is absent, trailing
nulls dropped. ``extras`` (a JSON object, always the 14th element when present) holds any other field
and a known field whose value is ``null``, so every record comes back exactly. The Lua scripts that
update a record in place use the same positions (1-based there: 1 id, 5 status, 6 ack, 9 sent ms,
10 local id, 11 status ms; see ``_history_lib.lua``).

WAHA's message ids repeat the chat (``true_5511...@c.us_3EB0...``); inside the chat's own keys the
chat is dropped (``t~3EB0...``, ``f~`` for ``false_``): :func:`compact_id`, :func:`full_id`. The scripts
get and compare ids in that form (history id, local id, reply-to; the ``seen`` list).
"""

from __future__ import annotations

import json
from typing import Any

FIELDS = (
    "id",
    "direction",
    "text",
    "timestamp",
    "status",
    "ack",
    "source",
    "received_ms",
    "sent_ms",
    "local_id",
    "status_ms",
    "reply_to",
    "media",
)
POSITION = {name: i for i, name in enumerate(FIELDS)}
ID_FIELDS = ("id", "local_id", "reply_to")
ESCAPE = "~"
FLAGS = {"t": "true", "f": "false"}


def encode(record: dict[str, Any], chat_id: str) -> str:
    """The stored JSON of a record of ``chat_id``."""
    values: list[Any] = [None] * len(FIELDS)
    extras: dict[str, Any] = {}
    for name, value in record.items():
        if name in ID_FIELDS and isinstance(value, str):
            value = compact_id(value, chat_id)
        if name in POSITION and value is not None:
            values[POSITION[name]] = value
        else:
            extras[name] = value
    if extras:
        values.append(extras)
    while values and values[-1] is None:
        values.pop()
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str, chat_id: str) -> dict[str, Any]:
    """A stored record of ``chat_id`` as the code reads it (named fields, full ids)."""
    values = json.loads(raw)
    record: dict[str, Any] = dict(values[len(FIELDS)]) if len(values) > len(FIELDS) else {}
    for name, value in zip(FIELDS, values, strict=False):
        if value is not None:
            record[name] = full_id(value, chat_id) if name in ID_FIELDS and isinstance(value, str) else value
    return record


def compact_id(message_id: str, chat_id: str) -> str:
    """A message id as the chat's keys hold it: ``true_<chat>_X`` -> ``t~X``; an id that looks compact gets ``~``."""
    for short, flag in FLAGS.items():
        head = f"{flag}_{chat_id}_"
        if message_id.startswith(head) and len(message_id) > len(head):
            return f"{short}{ESCAPE}{message_id[len(head) :]}"
    if message_id.startswith(ESCAPE) or message_id[1:2] == ESCAPE:
        return ESCAPE + message_id
    return message_id


def full_id(stored: str, chat_id: str) -> str:
    """The inverse of :func:`compact_id`."""
    if stored.startswith(ESCAPE):
        return stored[1:]
    if stored[1:2] == ESCAPE and stored[:1] in FLAGS:
        return f"{FLAGS[stored[0]]}_{chat_id}_{stored[2:]}"
    return stored
