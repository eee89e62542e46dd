"""Wake-up events as functions receive them: from the router, or relayed through GCP Pub/Sub."""

from __future__ import annotations

import base64
import re

import pytest

from wsm.store.events import PUBSUB_PUBLISHED, WakeUp


def test_router_cloudevent_round_trip() -> None:
    event = WakeUp("message.received", "default", "5511988887777@c.us")
    assert WakeUp.from_cloudevent(event.cloudevent_type, {"session": "default", "chat": event.chat}) == event
    assert WakeUp.from_json(event.to_json()) == event


def test_pubsub_message_published_is_unwrapped() -> None:
    doorbell = WakeUp("queue.changed", "clinic", None)
    data = {"message": {"data": base64.b64encode(doorbell.to_json().encode()).decode(), "messageId": "1"}}
    assert WakeUp.from_cloudevent(PUBSUB_PUBLISHED, data) == doorbell


@pytest.mark.parametrize(
    ("ce_type", "data"),
    [
        ("wsm.nope", {}),
        ("wsm.tick", {"session": 5}),
        (PUBSUB_PUBLISHED, {"message": {"data": "%%%"}}),
        (PUBSUB_PUBLISHED, {"message": {}}),
        (PUBSUB_PUBLISHED, {"message": {"data": base64.b64encode(b'{"type":"other"}').decode()}}),
    ],
)
def test_anything_else_is_refused(ce_type: str, data: dict) -> None:
    with pytest.raises(ValueError):
        WakeUp.from_cloudevent(ce_type, data)


def test_every_event_a_script_publishes_is_known_and_routed() -> None:
    """The Lua scripts spell their event types: a typo would be published, refused as invalid and never acted on."""
    from importlib import resources

    from infra.platform.triggers import SUBSCRIPTIONS
    from wsm.store.events import TYPES

    lua = resources.files("wsm.store").joinpath("lua")
    spelled = {m for f in lua.iterdir() for m in re.findall(r"'([a-z_]+\.[a-z_]+)'", f.read_text())}  # 'a.b'
    assert {"message.received", "queue.changed", "chat.admitted", "slot.freed"} <= spelled  # the pattern finds them
    assert spelled <= TYPES
    assert spelled <= set(SUBSCRIPTIONS)
