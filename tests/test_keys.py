"""The key schema: every key a script touches for a session lands in one Redis Cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from wsm.store import keys


def test_all_keys_of_a_session_and_its_chats_share_one_cluster_slot() -> None:
    sk = keys.SessionKeys("clinic-1")
    chat = sk.chat("5511988887777@c.us")
    session_keys = [sk.ready, sk.active, sk.queue, sk.queue_seq, sk.notify_due, sk.handle_stats, sk.status]
    session_keys.append(sk.sweep_cursor)
    every = [*session_keys, sk.seen("false_x_y"), sk.early_ack("true_x_y"), *chat.all()]
    assert {key_slot(k.encode()) for k in every} == {key_slot(b"{clinic-1}")}
    assert len(set(every)) == len(every)


def test_sessions_spread_over_slots() -> None:
    slots = {key_slot(keys.SessionKeys(f"s{i}").ready.encode()) for i in range(50)}
    assert len(slots) > 40


@pytest.mark.parametrize("bad", ["", "a{b", "a}b"])
def test_session_names_that_would_break_the_hash_tag_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        keys.SessionKeys(bad)
