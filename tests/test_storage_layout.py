"""The compact chat layout: one history list of positional records, dedupe by recent history + a bounded seen list."""

from __future__ import annotations

import json

import pytest
import redis

from infra.waha_sim import payloads as wp
from wsm.conversation.history import read_history
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.store import keys, record_codec
from wsm.store.chat_store import ChatStore
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn
from wsm.waha.event import parse_event

CHAT = "5511944445555@c.us"
SK = keys.SessionKeys("default")
CK = SK.chat(CHAT)


def ingestor(r: redis.Redis, monkeypatch: pytest.MonkeyPatch, **env: str) -> Ingestor:
    for name, value in {"WSM_MAX_ACTIVE": "5", **env}.items():
        monkeypatch.setenv(name, value)
    return Ingestor(r, Settings.from_env())


def say(ing: Ingestor, text: str, **kw: object) -> tuple[str, dict]:
    body = wp.message_event(CHAT, text, **kw)
    return ing.ingest(parse_event(body)).status, body


# --- the record codec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        {"id": f"false_{CHAT}_3EB0AA", "direction": "in", "text": "oi", "timestamp": 1, "status": "received", "ack": 1},
        {"id": f"false_{CHAT}_3EB0AB", "direction": "in", "text": "", "timestamp": 2.5, "status": "x", "ack": None},
        {"id": "wsm_1", "direction": "out", "text": 'olá\n"aspas" / barra', "local_id": "~odd", "sent_ms": 9},
        {"id": "rec_1", "kind": "tool", "name": "book", "i": "looks short", "~x": 1, "args": {"i": [1, None]}},
        {"id": f"true_{CHAT}_X", "media": {"mimetype": "image/png", "url": None}, "reply_to": f"false_{CHAT}_Y"},
        {"id": "t~not-compacted", "text": "an id that only looks compact"},
        {"id": "[not-a-body", "text": "an id that looks like a body"},
        {"id": f"false_120363@g.us_ABC_{CHAT}", "text": "a group message keeps its own id"},
    ],
)
def test_every_record_comes_back_exactly(record: dict) -> None:
    stored = record_codec.encode(record, CHAT)  # the inbox's form
    assert isinstance(json.loads(stored), list)
    assert record_codec.decode(stored, CHAT) == record
    assert CHAT not in json.loads(stored)[0] or "@g.us" in record["id"]  # the chat is not repeated in its own ids
    stored_id, body = record_codec.encode_pair(record, CHAT)  # the history's form
    assert not stored_id.startswith("[") and body.startswith("[")  # an id never looks like a body
    assert record_codec.decode_pair(stored_id, body, CHAT) == record


def test_a_40_character_message_costs_little_more_than_its_text() -> None:
    text = "Bom dia! Queria marcar uma consulta, ok?"
    record = {"id": f"false_{CHAT}_3EB0C431D2A5B8F4E6A1", "direction": "in", "text": text, "timestamp": 1764689426}
    record |= {"status": "received", "ack": 1, "source": "app", "received_ms": 1764689426123}
    old = json.dumps(record, ensure_ascii=False)
    stored_id, body = record_codec.encode_pair(record, CHAT)
    assert len(stored_id.encode()) + len(body.encode()) < len(text.encode()) + 80 < len(old.encode())


# --- dedupe -----------------------------------------------------------------------------------------


def test_a_retried_message_is_stored_once(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = ingestor(r, monkeypatch)
    status, body = say(ing, "oi")
    assert status == "accepted"
    assert ing.ingest(parse_event(body)).status == "duplicate"
    assert [m["text"] for m in read_history(r, "default", CHAT)] == ["oi"]
    assert r.llen(CK.inbox) == 1
    assert not r.exists(SK.seen(body["payload"]["id"]))  # no key per message any more


def test_a_duplicate_older_than_the_window_is_still_refused(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = ingestor(r, monkeypatch, WSM_DEDUPE_WINDOW="3")
    bodies = [say(ing, f"m{i}")[1] for i in range(10)]
    assert r.llen(CK.seen) == 7  # the ids that left the last 3 records
    for body in bodies:
        assert ing.ingest(parse_event(body)).status == "duplicate"
    assert len(read_history(r, "default", CHAT)) == 10
    assert 0 < r.ttl(CK.seen) <= 86400


def test_a_duplicate_trimmed_from_history_is_still_refused(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = ingestor(r, monkeypatch, WSM_HISTORY_MAX="4")
    bodies = [say(ing, f"m{i}")[1] for i in range(10)]
    assert [m["text"] for m in read_history(r, "default", CHAT)] == ["m6", "m7", "m8", "m9"]
    assert all(ing.ingest(parse_event(body)).status == "duplicate" for body in bodies)


def test_the_seen_list_is_bounded(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past WSM_DEDUPE_WINDOW + WSM_DEDUPE_MAX newer messages of the same chat, an id is forgotten (README)."""
    ing = ingestor(r, monkeypatch, WSM_DEDUPE_WINDOW="2", WSM_DEDUPE_MAX="5")
    bodies = [say(ing, f"m{i}")[1] for i in range(20)]
    assert r.llen(CK.seen) == 5
    assert all(ing.ingest(parse_event(b)).status == "duplicate" for b in bodies[-7:])
    assert ing.ingest(parse_event(bodies[0])).status == "accepted"


def test_an_old_layout_marker_still_counts(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = ingestor(r, monkeypatch)
    body = wp.message_event(CHAT, "oi")
    r.set(SK.seen(body["payload"]["id"]), "1", ex=3600)  # as the old layout's ingest left it
    assert ing.ingest(parse_event(body)).status == "duplicate"
    assert not r.exists(CK.history, CK.inbox)


def test_a_message_whose_id_only_differs_by_suffix_is_not_a_duplicate(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ing = ingestor(r, monkeypatch)
    say(ing, "first", key_id="ABC")
    assert say(ing, "second", key_id="ABCD")[0] == "accepted"
    assert say(ing, "third", key_id="AB")[0] == "accepted"
    assert [m["text"] for m in read_history(r, "default", CHAT)] == ["first", "second", "third"]


# --- acks ---------------------------------------------------------------------------------------------


def test_an_ack_reaches_a_record_deep_in_a_long_history(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = ingestor(r, monkeypatch)
    first = say(ing, "m0", event="message.any", from_me=True, source="api")[1]
    for i in range(1, 150):  # more than the window and than one read chunk
        say(ing, f"m{i}")
    message_id = first["payload"]["id"]
    assert ing.ingest(parse_event(wp.ack_event(message_id, 3, CHAT))).status == "updated"
    assert ing.ingest(parse_event(wp.ack_event(message_id, 2, CHAT))).details["ack"] == "stale"
    oldest = read_history(r, "default", CHAT)[0]
    assert (oldest["id"], oldest["ack"], oldest["status"]) == (message_id, 3, "READ")
    assert oldest["status_ms"] > 0


def test_an_early_ack_is_folded_into_the_message_when_it_arrives(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ing = ingestor(r, monkeypatch)
    body = wp.message_event(CHAT, "from the phone", event="message.any", from_me=True, source="api")
    message_id = body["payload"]["id"]
    assert ing.ingest(parse_event(wp.ack_event(message_id, 2, CHAT))).details["ack"] == "pending"
    ing.ingest(parse_event(body))
    [record] = read_history(r, "default", CHAT)
    assert (record["ack"], record["status"]) == (2, "DEVICE")
    assert not r.exists(SK.early_ack(message_id))


def test_the_stored_form_is_the_compact_one(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ing = ingestor(r, monkeypatch)
    say(ing, "oi")
    stored_id, body = r.lrange(CK.history, 0, -1)  # the id apart: a lookup is one LPOS
    assert stored_id.startswith("f~") and CHAT not in body and '"text"' not in body
    assert body.startswith('["in","oi",')


# --- a reply filed under WAHA's id ------------------------------------------------------------------------


def sent(r: redis.Redis, chat: ChatStore, waha_id: str) -> str:
    """outbox_sent for the head of the outbox, as the sender calls it once WAHA accepted the reply."""
    s, head = chat.settings, json.loads(r.lindex(chat.ck.outbox, 0))
    return chat.scripts.outbox_sent(
        keys=[chat.ck.lease, chat.ck.outbox, chat.ck.history, chat.ck.seen, SK.early_ack(waha_id)],
        args=[chat.token, head["id"], record_codec.compact_id(waha_id, CHAT), 1, 86400, "SENT", s.dedupe_window, 1000],
    )


@pytest.mark.parametrize("window", ["50", "1"])
def test_an_echo_stored_before_the_send_is_folded_into_the_reply(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch, window: str
) -> None:
    """WAHA's echo of our send (message.any, source api) may arrive before the sender files the reply."""
    ing = ingestor(r, monkeypatch, WSM_DEDUPE_WINDOW=window)
    say(ing, "oi")
    chat = ChatStore(r, Scripts(r), Settings.from_env(), "default", CHAT)
    assert chat.acquire() and chat.commit(Turn(["Olá!"]), handled=1)
    echo = wp.message_event(CHAT, "Olá!", event="message.any", from_me=True, source="api")
    waha_id = echo["payload"]["id"]
    assert ing.ingest(parse_event(wp.ack_event(waha_id, 3, CHAT))).details["ack"] == "pending"
    assert ing.ingest(parse_event(echo)).status == "accepted"  # stored apart, its ack folded in
    say(ing, "mais uma")  # the reply is no longer the newest record (with a window of 1, outside it)
    assert sent(r, chat, waha_id) == "ok"
    history = read_history(r, "default", CHAT)
    assert [m["text"] for m in history] == ["oi", "Olá!", "mais uma"]
    reply = history[1]
    assert (reply["id"], reply["status"], reply["ack"]) == (waha_id, "READ", 3)
    assert reply["local_id"].startswith("wsm_")
    assert ing.ingest(parse_event(echo)).status == "duplicate"  # WAHA delivering its echo again
