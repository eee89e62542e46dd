"""The compact form a history record takes in Redis: short keys, no spaces (``chat:<C>:history``, ``inbox``).

A record as the rest of the code sees it (``{"id": ..., "direction": ..., "text": ...}``) is stored with
one-letter keys, so 20 messages of 40 characters cost ~2 KB instead of ~7 KB. The Lua scripts that update
a record in place (ack, sent) use the short keys too: ``i`` id, ``s`` status, ``a`` ack, ``M`` status ms,
``S`` sent ms, ``l`` local id. A key outside the table is kept as is; one that could be read as a short
key (or starts with ``~``) is escaped with a leading ``~``, so any record comes back exactly.

WAHA's message ids repeat the chat (``true_5511...@c.us_3EB0...``); inside the chat's own keys the
chat is dropped (``t~3EB0...``, ``f~`` for ``false_``): :func:`compact_id`, :func:`full_id`. The scripts
get and compare ids in that form (history ``i``, ``l``, ``r``; the ``seen`` list).
"""

from __future__ import annotations

import json
from typing import Any

SHORT = {
    "id": "i",
    "direction": "d",
    "text": "t",
    "timestamp": "T",
    "status": "s",
    "ack": "a",
    "source": "o",
    "reply_to": "r",
    "media": "m",
    "received_ms": "R",
    "status_ms": "M",
    "sent_ms": "S",
    "local_id": "l",
}
LONG = {short: long for long, short in SHORT.items()}
ESCAPE = "~"
ID_FIELDS = ("id", "local_id", "reply_to")
FLAGS = {"t": "true", "f": "false"}


def encode(record: dict[str, Any], chat_id: str) -> str:
    """The stored JSON of a record of ``chat_id``."""
    short = {
        _short(k): compact_id(v, chat_id) if k in ID_FIELDS and isinstance(v, str) else v for k, v in record.items()
    }
    return json.dumps(short, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str, chat_id: str) -> dict[str, Any]:
    """A stored record of ``chat_id`` as the code reads it (long keys, full ids)."""
    record = {_long(k): v for k, v in json.loads(raw).items()}
    for name in ID_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = full_id(record[name], chat_id)
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


def _short(key: str) -> str:
    if key in SHORT:
        return SHORT[key]
    return ESCAPE + key if key in LONG or key.startswith(ESCAPE) else key


def _long(key: str) -> str:
    if key in LONG:
        return LONG[key]
    return key[1:] if key.startswith(ESCAPE) else key
