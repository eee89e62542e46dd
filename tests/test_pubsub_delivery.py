"""Delivery through GCP Pub/Sub, on Google's emulator: the router publishes doorbells and ticks to a topic, push
subscriptions POST them to the worker and notifier functions (the JSON envelope a push subscription sends, which
the Functions Framework turns into a ``messagePublished`` CloudEvent), with Pub/Sub's retry and dead-letter topic.

The emulator delivers every message to every subscription (it ignores filters), and here two routers publish
each doorbell, so every function gets each event several times: the replies must still come exactly once.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from infra.deploy.bundle import REPO
from infra.platform.processes import function_process
from infra.platform.pubsub import (
    MAX_DELIVERY_ATTEMPTS,
    PubSubTarget,
    Topology,
    create_topology,
    parse_topic,
    pubsub_triggers,
    subscription_filter,
)
from infra.platform.redis_server import free_port
from infra.platform.router import Router, to_cloudevent
from infra.platform.triggers import NOTIFIER, WORKER, DeliveryFailed
from tests.pubsub_emulator import PubSubEmulator
from tests.test_end_to_end import System
from wsm.core.settings import Settings
from wsm.store.events import CHAT_ADMITTED, MESSAGE_RECEIVED, QUEUE_CHANGED, SLOT_FREED, TICK, WakeUp

A, B = "5511922220001@c.us", "5511922220002@c.us"
TOPIC = "projects/wsm-local/topics/wsm-events"


@pytest.fixture(scope="module")
def emulator() -> Iterator[PubSubEmulator]:
    with PubSubEmulator() as e:
        yield e


@pytest.fixture
def on_emulator(emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> PubSubEmulator:
    """Google's clients in this process talk to the emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    return emulator


def pull_dead_letters(topology: Topology, timeout_s: float) -> list[bytes]:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    name = topology.path("subscriptions", topology.dead_letter_topic)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            response = subscriber.pull(subscription=name, max_messages=10, timeout=5)
            if response.received_messages:
                subscriber.acknowledge(subscription=name, ack_ids=[m.ack_id for m in response.received_messages])
                return [m.message.data for m in response.received_messages]
        return []
    finally:
        subscriber.close()


# --- no emulator needed -------------------------------------------------------------------------------------


def test_each_subscription_passes_exactly_its_functions_events() -> None:
    assert subscription_filter(WORKER) == (
        f'attributes.type = "{CHAT_ADMITTED}" OR attributes.type = "{MESSAGE_RECEIVED}" '
        f'OR attributes.type = "{SLOT_FREED}" OR attributes.type = "{TICK}"'
    )
    assert subscription_filter(NOTIFIER) == (
        f'attributes.type = "{QUEUE_CHANGED}" OR attributes.type = "{SLOT_FREED}" OR attributes.type = "{TICK}"'
    )
    with pytest.raises(ValueError, match="no event triggers 'console'"):
        subscription_filter("console")


@pytest.mark.parametrize("bad", ["wsm-events", "projects/x/topics/wsm-events", "projects/wsm-local/topics/", ""])
def test_a_topic_that_is_not_a_full_path_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="projects/<project>/topics/<topic>"):
        parse_topic(bad)


def test_the_router_refuses_a_bad_topic_setting_at_start() -> None:
    env = {**os.environ, "WSM_PUBSUB_TOPIC": "wsm-events", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = subprocess.run(
        [sys.executable, "-c", "from infra.platform.router import main; main()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "WSM_PUBSUB_TOPIC must look like projects/<project>/topics/<topic>" in done.stderr


def test_pubsub_unreachable_is_a_failed_delivery_the_router_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    target = PubSubTarget(TOPIC, timeout_s=1.0)
    try:
        with pytest.raises(DeliveryFailed, match="publish"):
            target.deliver(to_cloudevent(WakeUp(TICK)))
    finally:
        target.close()


# --- on the emulator ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_attendance_through_pubsub_push_with_two_routers_replies_once_each(
    on_emulator: PubSubEmulator, tmp_path
) -> None:
    s = System(tmp_path, WSM_PUBSUB_TOPIC=TOPIC, PUBSUB_EMULATOR_HOST=on_emulator.host, WSM_TICK_S="1")
    settings = dataclasses.replace(Settings.from_env(), redis_url=s.local.redis_url, tick_s=1.0)
    second = Router(settings, pubsub_triggers(TOPIC, 10.0)).start()  # a second router, as on two machines
    try:
        assert second.wait_subscribed(10)
        s.say(A, "oi")
        assert "Como posso ajudar?" in s.wait_texts(A, 1)[0]
        s.say(B, "olá")
        assert s.wait_texts(B, 1)[0].startswith("Você é o 1º da fila")
        s.say(A, "sair")
        assert s.wait_texts(A, 2)[-1].startswith("Atendimento encerrado")
        turn = s.wait_texts(B, 2)[-1]
        assert turn.startswith("É a sua vez!") and "Como posso ajudar?" in turn
        s.say(B, "1")
        assert "nome completo" in s.wait_texts(B, 3)[-1]
        time.sleep(3)  # several ticks from both routers, each pushed to both functions: nothing more may be sent
        assert len(s.texts(A)) == 2 and len(s.texts(B)) == 3
        assert [m["text"] for m in s.history(B) if m["direction"] == "in"] == ["olá", "1"]
        assert second.counters.delivered > 0 and second.counters.deadlettered == 0
        router_log = (s.local.logs / "router.log").read_text()
        assert f"-> pubsub ({TOPIC})" in router_log  # the platform's router published too, to the topic
    finally:
        second.stop()
        s.stop()


@pytest.mark.slow
def test_a_function_that_keeps_failing_leaves_the_event_on_the_dead_letter_topic(
    on_emulator: PubSubEmulator, tmp_path
) -> None:
    """The worker answers 500 while Redis is unreachable; Pub/Sub retries, then dead-letters the doorbell."""
    topology = Topology.from_path("projects/wsm-local/topics/wsm-failing")
    port = free_port()
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "WORKERS": "1"}
    worker = function_process(WORKER, port, env, tmp_path / "worker.log").start()
    target = PubSubTarget(topology.topic_path, timeout_s=10.0)
    try:
        create_topology(topology, {WORKER: f"http://127.0.0.1:{port}/"}, retry_s=(1, 2))
        doorbell = WakeUp(MESSAGE_RECEIVED, "default", A)
        target.deliver(to_cloudevent(doorbell))
        assert pull_dead_letters(topology, timeout_s=60) == [doorbell.to_json().encode()]
        assert (tmp_path / "worker.log").read_text().count("RedisUnavailable") >= MAX_DELIVERY_ATTEMPTS
    finally:
        target.close()
        worker.stop()
