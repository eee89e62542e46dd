"""The short chaos run (the full one is `make chaos`): crashes, a Redis restart and a WAHA outage lose nothing.
The harness only kills: every process comes back through make local's supervisor."""

from __future__ import annotations

import pytest

from bench.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow


def test_short_chaos_run_loses_nothing_and_keeps_order(tmp_path) -> None:
    config = ChaosConfig(chats=40, messages_per_chat=5, send_rate_per_s=40, waha_down_s=4, kills_per_process=1, seed=11)
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
