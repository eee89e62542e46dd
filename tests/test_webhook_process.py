"""The webhook as a real Functions Framework process: concurrency, ordering, and Redis outages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from infra.platform.processes import ManagedProcess, function_process
from infra.platform.redis_server import RedisServer, free_port
from infra.waha_sim import payloads as wp
from wsm.conversation.history import read_history
from wsm.store.connection import get_redis

ALICE = "5511988887777@c.us"
BOB = "5511977776666@c.us"


def start_webhook(redis_url: str) -> ManagedProcess:
    env = dict(os.environ, REDIS_URL=redis_url, WORKERS="2", THREADS="8", WSM_MAX_ACTIVE="1")
    env.pop("WEBHOOK_HMAC_KEY", None)
    return function_process("webhook", free_port(), env).start()


@pytest.fixture
def webhook(redis_url: str) -> Iterator[str]:
    proc = start_webhook(redis_url)
    yield f"http://127.0.0.1:{proc.port}/"
    proc.stop()


def post(url: str, body: dict, session: requests.Session | None = None) -> requests.Response:
    raw = wp.encode(body)
    return (session or requests).post(url, data=raw, headers=wp.headers(raw, body), timeout=10)


def test_fifty_concurrent_deliveries_of_one_message_store_it_once(webhook: str, redis_url: str) -> None:
    body = wp.message_event(ALICE, "mensagem repetida")
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: post(webhook, body).json()["status"], range(50)))
    assert answers.count("accepted") == 1 and answers.count("duplicate") == 49
    stored = read_history(get_redis(redis_url), "default", ALICE)
    assert [m["id"] for m in stored] == [body["payload"]["id"]]


def test_two_chats_with_200_messages_each_sent_concurrently_keep_complete_order(webhook: str, redis_url: str) -> None:
    def send_chat(chat: str) -> list[str]:
        with requests.Session() as s:
            for i in range(200):
                res = post(webhook, wp.message_event(chat, f"{chat} #{i}"), s)
                assert res.status_code == 200 and res.json()["status"] == "accepted"
        return [f"{chat} #{i}" for i in range(200)]

    with ThreadPoolExecutor(2) as pool:
        expected = dict(zip((ALICE, BOB), pool.map(send_chat, (ALICE, BOB)), strict=True))
    for chat, texts in expected.items():
        assert [m["text"] for m in read_history(get_redis(redis_url), "default", chat)] == texts


def test_redis_stopped_mid_test_answers_503_then_accepts_after_restart_losing_nothing() -> None:
    with RedisServer(appendfsync="always") as server:
        proc = start_webhook(server.url)
        url = f"http://127.0.0.1:{proc.port}/"
        try:
            before = [wp.message_event(ALICE, f"antes {i}") for i in range(5)]
            assert all(post(url, b).json()["status"] == "accepted" for b in before)
            server.kill()
            during = wp.message_event(ALICE, "durante a queda")
            res = post(url, during)
            assert res.status_code == 503 and res.json() == {"error": "storage unavailable, retry later"}
            assert requests.get(url + "healthz", timeout=5).status_code == 503
            server.start()
            assert post(url, during).json()["status"] == "accepted"  # WAHA's retry
            after = wp.message_event(ALICE, "depois")
            assert post(url, after).json()["status"] == "accepted"
            texts = [m["text"] for m in read_history(get_redis(server.url), "default", ALICE)]
            assert texts == [f"antes {i}" for i in range(5)] + ["durante a queda", "depois"]
        finally:
            proc.stop()
