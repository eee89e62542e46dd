"""/metrics on the real stack (make local's processes, a WAHA stand-in): refused without the token, and the
figures move as two people are served and queued."""

from __future__ import annotations

import pytest
import requests

from tests.metrics_helpers import AUTH, TOKEN, Samples, parse, total, value
from tests.test_end_to_end import A, B, System

pytestmark = pytest.mark.slow


def scrape(url: str) -> Samples:
    res = requests.get(url + "metrics", headers=AUTH, timeout=10)
    assert res.status_code == 200, res.text
    return parse(res.text)


def test_metrics_move_while_people_are_served_and_queued(tmp_path) -> None:
    s = System(tmp_path, WSM_METRICS_TOKEN=TOKEN)
    try:
        url = s.local.webhook_url
        assert requests.get(url + "metrics", timeout=10).status_code == 401
        assert requests.get(url + "metrics", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        start = scrape(url)
        assert value(start, "wsm_slots_busy") == 0 and value(start, "wsm_queue_length", queue="bot") == 0

        s.say(A, "oi")
        s.wait_texts(A, 1)
        s.say(B, "olá")
        assert s.wait_texts(B, 1)[0].startswith("Você é o 1º da fila")
        # A's greeting is its first response (counted just after WAHA accepted it); B's queue notice is not one
        assert s.sim.wait_for(lambda: value(scrape(url), "wsm_first_response_seconds_count") == 1, 10)
        busy = scrape(url)
        assert value(busy, "wsm_slots_busy") == 1 and value(busy, "wsm_slots_total") == 1
        assert value(busy, "wsm_queue_length", queue="bot") == 1
        assert value(busy, "wsm_queue_oldest_enqueued_timestamp_seconds", queue="bot") > 0
        assert value(busy, "wsm_webhook_events_total", event="message", outcome="accepted") == 2
        assert value(busy, "wsm_messages_total", direction="in", sender="customer") == 2
        assert value(busy, "wsm_queue_wait_seconds_count", queue="bot") == 0

        s.say(A, "sair")
        assert s.wait_texts(B, 2)[-1].startswith("É a sua vez!")
        assert s.sim.wait_for(lambda: value(scrape(url), "wsm_first_response_seconds_count") == 2, 10)
        served = scrape(url)
        assert value(served, "wsm_queue_length", queue="bot") == 0
        assert value(served, "wsm_queue_oldest_enqueued_timestamp_seconds", queue="bot") == 0
        assert value(served, "wsm_queue_wait_seconds_count", queue="bot") == 1
        assert 0 < value(served, "wsm_queue_wait_seconds_sum", queue="bot") < 60
        assert value(served, "wsm_messages_total", direction="out", sender="bot") >= 4  # A: 2, B: queue notice + turn
        assert total(served, "wsm_waha_requests_total", endpoint="sendText") >= 4
        assert value(served, "wsm_waha_request_duration_seconds_count", endpoint="sendText") >= 4
        # the worker and notifier write into the same directory: their own /metrics show the same counters
        worker = scrape(f"http://127.0.0.1:{s.local.config.worker_port}/")
        assert value(worker, "wsm_queue_wait_seconds_count", queue="bot") == 1
    finally:
        s.stop()
