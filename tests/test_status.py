"""Chat statuses and end reasons are defined once (wsm.core.status) and handed to the Lua scripts.

Also: a reply typed on the phone is recognised from the parsed event, not by searching the record's JSON text.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
import redis

from infra.waha_sim import payloads as wp
from wsm.conversation.flow import FlowError, load_flow, parse_flow
from wsm.conversation.history import read_history
from wsm.core.clock import now_ms
from wsm.core.status import ChatStatus, EndReason, Owner, ended_status
from wsm.store import keys, record_codec
from wsm.store.scripts import NAMES, Scripts
from wsm.waha.event import Message, parse_event

CHAT, OTHER = "5511900000001@c.us", "5511900000002@c.us"
SK = keys.SessionKeys("default")
WORDS = {member.value for enum in (ChatStatus, EndReason, Owner) for member in enum}


@pytest.mark.parametrize("name", NAMES)
def test_no_lua_script_spells_a_status_or_end_reason(name: str) -> None:
    source = resources.files("wsm.store").joinpath("lua", f"{name}.lua").read_text()
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    spelled = {word for word in re.findall(r"'([a-z_]+)'", code) if word in WORDS}
    assert not spelled, f"{name}.lua spells {spelled}: pass them as ARGV from wsm.core.status"


def test_a_misspelt_status_fails_loudly() -> None:
    with pytest.raises(ValueError):
        ChatStatus("actve")
    with pytest.raises(AttributeError):
        ChatStatus.ACTVE  # type: ignore[attr-defined]  # noqa: B018


def test_ending_by_handoff_leaves_the_chat_handed_off_any_other_end_closes_it() -> None:
    assert ended_status(EndReason.HANDOFF) is ChatStatus.HANDOFF
    assert {ended_status(r) for r in (EndReason.DONE, EndReason.LEFT, EndReason.IDLE)} == {ChatStatus.CLOSED}


def test_flow_ends_are_end_reasons_and_an_unknown_one_is_refused() -> None:
    ends = {step.end for step in load_flow().steps.values() if step.end}
    assert ends and all(isinstance(end, EndReason) for end in ends)
    flow = {"start": "a", "texts": {}, "steps": {"a": {"say": "bye", "end": "dnoe"}}}
    with pytest.raises(FlowError, match="'end' must be one of done, handoff"):
        parse_flow(flow)


# --- a reply typed on the phone hands the chat to a human ---------------------------------------------


def outbound(source: str) -> Message:
    event = parse_event(
        wp.envelope("message.any", wp.message_payload(CHAT, "Oi, aqui é a Ana", from_me=True, source=source))
    )
    assert isinstance(event, Message)
    return event


def ingest(r: redis.Redis, msg: Message, record: str, extra: list[str | int] | None = None) -> list:
    """ingest_message with the record JSON as given (spacing included), as the ingestor calls it."""
    ck = SK.chat(msg.chat_id)
    now = now_ms()
    return Scripts(r).ingest_message(
        keys=[
            SK.seen(msg.message_id), ck.history, ck.seen, ck.inbox, ck.state, SK.ready,
            SK.active, SK.queue, SK.queue_seq, SK.notify_due, SK.early_ack(msg.message_id),
        ],
        args=[
            record_codec.compact_id(msg.message_id, msg.chat_id), record, msg.direction, now, 3600, 100, 1,
            msg.chat_id, "default", keys.EVENTS_CHANNEL,
            3600, 100, 60_000, "1" if msg.typed_on_phone else "0",
            ChatStatus.ACTIVE, ChatStatus.WAITING, ChatStatus.HANDOFF, EndReason.HANDOFF, 50, 1000,
        ],
    )  # fmt: skip


def spaced_record(msg: Message) -> str:
    """The stored form of the record, re-indented: what the script must cope with, not only the compact form."""
    spaced = json.dumps(json.loads(record_codec.encode_pair(msg.record, msg.chat_id)[1]), indent=1)
    assert "\n " in spaced
    return spaced


def test_a_phone_reply_hands_off_whatever_the_json_spacing(r: redis.Redis) -> None:
    r.zadd(SK.active, {CHAT: now_ms()})
    r.hset(SK.chat(CHAT).state, "status", ChatStatus.ACTIVE)
    msg = outbound("app")
    spaced = spaced_record(msg)
    assert ingest(r, msg, spaced) == ["stored_out"]
    state = r.hgetall(SK.chat(CHAT).state)
    assert (state["status"], state["closed_reason"]) == ("handoff", "handoff")
    assert r.zcard(SK.active) == 0  # the slot is free for the next person
    assert read_history(r, "default", CHAT) == [msg.record]  # read back whatever the spacing
    assert ingest(r, msg, spaced) == ["duplicate"]  # and still known by its id


def test_a_reply_sent_through_the_api_does_not_hand_off(r: redis.Redis) -> None:
    r.zadd(SK.active, {CHAT: now_ms()})
    r.hset(SK.chat(CHAT).state, "status", ChatStatus.ACTIVE)
    msg = outbound("api")
    assert not msg.typed_on_phone
    assert ingest(r, msg, spaced_record(msg)) == ["stored_out"]
    assert r.hget(SK.chat(CHAT).state, "status") == "active"
    assert r.zrange(SK.active, 0, -1) == [CHAT]


def test_an_inbound_message_marked_app_is_a_person_writing_not_a_handoff(r: redis.Redis) -> None:
    event = parse_event(wp.message_event(OTHER, "oi"))  # people's own messages carry source "app" too
    assert isinstance(event, Message) and event.record.get("source") == "app" and not event.typed_on_phone
    assert ingest(r, event, json.dumps(event.record))[:2] == ["accepted", "active"]
