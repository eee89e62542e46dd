"""The compact form of a chat's records in Redis: a positional JSON array, the id kept apart in history.

A record as the rest of the code sees it (``{"id": ..., "direction": ..., "text": ...}``) is stored as
its id and a body ``[direction, text, timestamp, status, ack, source, received_ms, sent_ms, local_id,
status_ms, reply_to, media, extras]`` (:data:`BODY`): no key names, ``null`` where a field is absent,
trailing nulls dropped. ``extras`` (a JSON object, always the 13th element when present) holds any other
field and a known field whose value is ``null``, so every record comes back exactly.

- ``chat:<C>:history`` holds id and body as two elements, ``[id1, body1, id2, body2, ...]``: a lookup by
  id is one ``LPOS`` in Redis, never a decode in Lua (:func:`encode_pair`, :func:`decode_pair`);
- ``chat:<C>:inbox`` holds one element per record, ``[id, *body]`` (:func:`encode`, :func:`decode`).

The Lua scripts that update a body in place use the same positions (1-based there: 4 status, 5 ack,
8 sent ms, 9 local id, 10 status ms; see ``_history_lib.lua``).

WAHA's message ids repeat the chat (``true_5511...@c.us_3EB0...``); inside the chat's own keys the
chat is dropped (``t~3EB0...``, ``f~`` for ``false_``): :func:`compact_id`, :func:`full_id`. The scripts
get and compare ids in that form (history ids, local id, reply-to; the ``seen`` list).
"""

from __future__ import annotations

import json
from typing import Any

BODY = (
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
POSITION = {name: i for i, name in enumerate(BODY)}
ID_FIELDS = ("local_id", "reply_to")  # besides the record's own id
ESCAPE = "~"
FLAGS = {"t": "true", "f": "false"}


def encode_pair(record: dict[str, Any], chat_id: str) -> tuple[str, str]:
    """The stored id and body of a record of ``chat_id`` (two history elements)."""
    return compact_id(str(record["id"]), chat_id), json.dumps(_values(record, chat_id), **_COMPACT)


def decode_pair(stored_id: str, body: str, chat_id: str) -> dict[str, Any]:
    """A history record as the code reads it (named fields, full ids)."""
    return {"id": full_id(stored_id, chat_id), **_fields(json.loads(body), chat_id)}


def encode(record: dict[str, Any], chat_id: str) -> str:
    """The one-element form (inbox): ``[id, *body]``."""
    return json.dumps([compact_id(str(record["id"]), chat_id), *_values(record, chat_id)], **_COMPACT)


def decode(raw: str, chat_id: str) -> dict[str, Any]:
    """The inverse of :func:`encode`."""
    stored_id, *values = json.loads(raw)
    return {"id": full_id(stored_id, chat_id), **_fields(values, chat_id)}


def compact_id(message_id: str, chat_id: str) -> str:
    """A message id as the chat's keys hold it: ``true_<chat>_X`` -> ``t~X``; an id that looks compact
    (or starts with ``[``, like a body) gets a leading ``~``."""
    for short, flag in FLAGS.items():
        head = f"{flag}_{chat_id}_"
        if message_id.startswith(head) and len(message_id) > len(head):
            return f"{short}{ESCAPE}{message_id[len(head) :]}"
    if message_id.startswith((ESCAPE, "[")) or message_id[1:2] == ESCAPE:
        return ESCAPE + message_id
    return message_id


def full_id(stored: str, chat_id: str) -> str:
    """The inverse of :func:`compact_id`."""
    if stored.startswith(ESCAPE):
        return stored[1:]
    if stored[1:2] == ESCAPE and stored[:1] in FLAGS:
        return f"{FLAGS[stored[0]]}_{chat_id}_{stored[2:]}"
    return stored


_COMPACT: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}


def _values(record: dict[str, Any], chat_id: str) -> list[Any]:
    values: list[Any] = [None] * len(BODY)
    extras: dict[str, Any] = {}
    for name, value in record.items():
        if name == "id":
            continue
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
    return values


def _fields(values: list[Any], chat_id: str) -> dict[str, Any]:
    record: dict[str, Any] = dict(values[len(BODY)]) if len(values) > len(BODY) else {}
    for name, value in zip(BODY, values, strict=False):
        if value is not None:
            record[name] = full_id(value, chat_id) if name in ID_FIELDS and isinstance(value, str) else value
    return record
