"""The short chaos run (the full one is `make chaos`): crashes, a Redis restart and a WAHA outage lose nothing.
The harness only kills: every process comes back through make local's supervisor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis

from bench.chaos import ChaosConfig, DrainTimeout, _drain, run_chaos
from wsm.store import keys

pytestmark = pytest.mark.slow


def test_short_chaos_run_loses_nothing_and_keeps_order(tmp_path) -> None:
    # About 25 s (20-32 s with two busy loops and a second chaos run beside it): ~5 s start, 5 s of sending, the
    # drain, ~3 s stop. The drain gives up after 60 s, well inside pytest's 120 s, and then fails with the stuck
    # chats' keys and the processes' last log lines (bench.chaos.DrainTimeout) instead of a bare timeout.
    config = ChaosConfig(
        chats=40, messages_per_chat=5, send_rate_per_s=40, waha_down_s=4, kills_per_process=1, seed=11,
        drain_timeout_s=60,
    )  # fmt: skip
    report = run_chaos(config, data_dir=tmp_path, log=lambda _line: None)
    print(report.table())
    assert report.inbound_sent == 200
    assert report.inbound_lost == 0
    assert report.inbound_unhandled == 0
    assert report.replies_lost == 0
    assert report.order_violations == 0
    assert report.replies_expected > 0
    # A reply can be doubled only when a send is cut between WAHA taking it and us recording it: a
    # sending process killed (each has at most one send in flight per slot) or WAHA cutting its
    # connections mid-request. Any duplicate beyond that would be a bug.
    cuts = report.kills["worker"] + report.kills["notifier"] + 1
    assert report.duplicate_replies <= cuts * config.slots
    assert report.redis_restarts == 1 and sum(report.kills.values()) == 4
    assert report.supervisor_restarts == 5  # each kill restarted once, by make local itself


def test_a_drain_that_never_ends_names_the_stuck_chat_and_what_its_keys_hold(r: redis.Redis, tmp_path) -> None:
    sk, chat = keys.SessionKeys("default"), "5511900000026@c.us"
    r.sadd(sk.ready, chat)
    r.hset(sk.chat(chat).state, mapping={"status": "closed", "closed_reason": "left"})
    (tmp_path / "worker.log").write_text("earlier\nlast words\n")
    with pytest.raises(DrainTimeout) as failed:
        _drain(r, SimpleNamespace(calls=[]), 0.3, tmp_path)  # type: ignore[arg-type]
    text = str(failed.value)
    assert f"ready=['{chat}']" in text and "'closed_reason': 'left'" in text and "lease=None" in text
    assert "--- worker.log" in text and text.endswith("last words")
