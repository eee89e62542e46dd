"""WAHA's echoes of our own sends: how a sender that took over a chat knows a reply already went out.

WAHA reports every message sent through its API as a ``message.any`` webhook with ``source: "api"``, which
ingest keeps in the chat's history like any outbound message. The pop that files a reply as sent folds that
echo into the reply's own record (``outbox_sent.lua``), so an echo left on its own in the history is a send
whose pop never came: its sender died, or lost its connection, between WAHA taking the reply and the pop. The
next sender looks for one before sending a reply it did not queue itself, and files the reply under the echo's
id instead of sending it a second time.

Some engines answer a send without the message's id, so its pop cannot fold the echo in by id. Such an echo is
accounted for by our reply of the same text that was filed as sent about when the echo came
(``EXPLAINED_WITHIN_MS``), and is never taken for another reply: a reply wrongly filed would be a reply lost,
which is worse than one sent twice.
"""

from __future__ import annotations

from typing import Any

import redis

from wsm.store import keys, record_codec
from wsm.store.chat_store import REPLY_ID_PREFIX
from wsm.waha.event import SOURCE_API

LOOKBACK = 20  # history records looked at: the echoes of a dead sender's last sends are among the newest
CLOCK_SLACK_MS = 1000  # the echo was stored by the webhook, the reply queued by the worker: their clocks may differ
EXPLAINED_WITHIN_MS = 10_000  # an echo this close to a sent reply of the same text is that reply's


class Echoes:
    """The echoes no pop has filed, read from the chat's history once, when first asked."""

    def __init__(self, client: redis.Redis, ck: keys.ChatKeys) -> None:
        self._client, self._ck = client, ck
        self._unfiled: list[dict[str, Any]] | None = None

    def take(self, entry: dict[str, Any]) -> str | None:
        """The WAHA id of the echo of outbox ``entry`` (same text, stored after the entry was queued), if any;
        an echo is taken once, so two replies of the same text need two echoes."""
        if self._unfiled is None:
            self._unfiled = self._read()
        since = int(entry.get("created_ms") or 0) - CLOCK_SLACK_MS
        for i, echo in enumerate(self._unfiled):
            if echo.get("text") == entry.get("text") and int(echo.get("received_ms") or 0) >= since:
                return str(self._unfiled.pop(i)["id"])
        return None

    def _read(self) -> list[dict[str, Any]]:
        elements = self._client.lrange(self._ck.history, -2 * LOOKBACK, -1)
        chat = self._ck.chat_id
        records = [record_codec.decode_pair(i, b, chat) for i, b in zip(elements[::2], elements[1::2], strict=True)]
        return unexplained(records)


def unexplained(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The unfiled echoes among ``records`` that no sent reply of ours accounts for (one reply, one echo)."""
    sent = [r for r in records if _is_our_sent_reply(r)]
    out = []
    for echo in (r for r in records if is_unfiled_echo(r)):
        at = int(echo.get("received_ms") or 0)
        same = (r for r in sent if r.get("text") == echo.get("text"))
        match = next((r for r in same if abs(int(r["sent_ms"]) - at) <= EXPLAINED_WITHIN_MS), None)
        if match is None:
            out.append(echo)
        else:
            sent.remove(match)
    return out


def _is_our_sent_reply(record: dict[str, Any]) -> bool:
    ours = bool(record.get("local_id")) or str(record.get("id", "")).startswith(REPLY_ID_PREFIX)
    return record.get("direction") == "out" and ours and bool(record.get("sent_ms"))


def is_unfiled_echo(record: dict[str, Any]) -> bool:
    """An outbound message sent through the API that is not one of our replies (those carry our ``local_id``)."""
    return record.get("direction") == "out" and record.get("source") == SOURCE_API and not record.get("local_id")
