"""The compact form a history record takes in Redis: short keys, no spaces (``chat:<C>:history``, ``inbox``).

A record as the rest of the code sees it (``{"id": ..., "direction": ..., "text": ...}``) is stored with
one-letter keys, so 20 messages of 40 characters cost ~2 KB instead of ~7 KB. The Lua scripts that update
a record in place (ack, sent) use the short keys too: ``i`` id, ``s`` status, ``a`` ack, ``M`` status ms,
``S`` sent ms, ``l`` local id. A key outside the table is kept as is; one that could be read as a short
key (or starts with ``~``) is escaped with a leading ``~``, so any record comes back exactly.
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


def encode(record: dict[str, Any]) -> str:
    """The stored JSON of a record."""
    return json.dumps({_short(k): v for k, v in record.items()}, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str) -> dict[str, Any]:
    """A stored record as the code reads it (long keys)."""
    return {_long(k): v for k, v in json.loads(raw).items()}


def _short(key: str) -> str:
    if key in SHORT:
        return SHORT[key]
    return ESCAPE + key if key in LONG or key.startswith(ESCAPE) else key


def _long(key: str) -> str:
    if key in LONG:
        return LONG[key]
    return key[1:] if key.startswith(ESCAPE) else key
