"""The one dead-letter writer: one schema (kind, error, at_ms, what failed), newest first, bounded."""

from __future__ import annotations

import json

import pytest
import redis

from tests.conftest import snapshot
from wsm.core.clock import now_ms
from wsm.delivery.deadletter import EVENT, SEND, read_dead_letters, remove_dead_letter, write_dead_letter
from wsm.store import keys


def test_entries_share_one_schema_newest_first_and_the_list_is_trimmed(r: redis.Redis) -> None:
    before = now_ms()
    write_dead_letter(r, SEND, "HTTP 400", 2, session="default", chat="a@c.us", reply_id="wsm_1")
    write_dead_letter(r, EVENT, "HTTP 503", 2, type="tick", session=None, chat=None, target="worker", attempts=8)
    write_dead_letter(r, EVENT, "timeout", 2, type="tick", session=None, chat=None, target="notifier", attempts=8)
    entries = [json.loads(raw) for raw in read_dead_letters(r)]
    assert [e["error"] for e in entries] == ["timeout", "HTTP 503"]  # the oldest fell off
    assert all(e["kind"] == EVENT and before <= e["at_ms"] <= now_ms() for e in entries)


def test_an_unknown_kind_is_refused_and_writes_nothing(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="unknown dead-letter kind"):
        write_dead_letter(r, "sned", "HTTP 400", 10, chat="a@c.us")
    assert snapshot(r) == {}


def test_an_entry_is_removed_once(r: redis.Redis) -> None:
    write_dead_letter(r, SEND, "HTTP 400", 10, chat="a@c.us")
    [raw] = read_dead_letters(r)
    assert remove_dead_letter(r, raw) is True
    assert remove_dead_letter(r, raw) is False
    assert r.llen(keys.DEADLETTER) == 0
