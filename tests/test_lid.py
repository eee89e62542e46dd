"""One person, one chat: a person WAHA sends as ``…@lid`` is served as their phone chat once the mapping is known.

In-process (ingest, worker and notifier as the router calls them; a real Redis; the WAHA stand-in serving
``GET /api/{session}/lids/{lid}``), then end to end with the real functions (tests/test_end_to_end.py's stack).
"""

from __future__ import annotations

import time

import pytest
import redis

from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.conftest import snapshot
from tests.test_attendance import Platform, make_platform
from wsm.conversation.history import read_history
from wsm.schedule.book import Book
from wsm.store import keys, record_codec
from wsm.store.chat_store import ChatStore
from wsm.store.events import QUEUE_CHANGED, WakeUp
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn
from wsm.waha.event import Message, parse_event
from wsm.waha.lid import payload_phone, phone_chat

LID, PN = "120363999000111@lid", "5511977770001@c.us"
OTHER = "5511977770009@c.us"
SK = keys.SessionKeys("default")


def texts(platform: Platform, chat: str) -> list[str]:
    """What WAHA was asked to send to ``chat``."""
    return platform.texts(chat)


def history(r: redis.Redis, chat: str) -> list[str]:
    return [m["text"] for m in read_history(r, "default", chat)]


def lid_keys(r: redis.Redis) -> list[str]:
    """Every key of the @lid chat left (the mapping and the dedupe markers of its message ids name it too)."""
    return sorted(k for k in r.scan_iter(match=f"*{LID}*") if k != SK.lid(LID) and ":seen:" not in k)


def say_with_phone(platform: Platform, text: str) -> dict:
    """The person writes as @lid and the engine put their phone chat in the payload (NOWEB's remoteJidAlt)."""
    return platform.say(LID, text, wp.message_event(LID, text, phone_alt=PN))


@pytest.fixture
def platform(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return make_platform(r, sim, monkeypatch, WSM_LID_NEGATIVE_TTL_S="1", WSM_MAX_ACTIVE="2")


def wait_until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def forget_negative(r: redis.Redis) -> None:
    """Wait out WSM_LID_NEGATIVE_TTL_S (1 s here): the worker asks WAHA again after it."""
    assert wait_until(lambda: not r.exists(SK.lid(LID))), "the 'unknown' mark never expired"


# --- the mapping known first -----------------------------------------------------------------------


def test_mapping_known_first_one_chat_from_the_first_reply(platform: Platform, r: redis.Redis) -> None:
    platform.sim.set_lid(LID, PN)
    platform.say(LID, "oi")
    platform.say(LID, "1")
    platform.say(PN, "Maria Silva")  # the same person, now seen by number
    replies = texts(platform, PN)
    assert "1. Agendar consulta" in replies[0] and "Qual é o seu nome completo?" in replies[1]
    assert "Obrigado, Maria Silva!" in replies[2]
    assert texts(platform, LID) == []
    assert history(r, PN)[0::2] == ["oi", "1", "Maria Silva"]
    assert lid_keys(r) == []
    assert platform.sim.lid_lookups(LID) == 1  # later messages used the cached mapping


def test_cached_mapping_is_used_by_a_fresh_process(
    platform: Platform, r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.set_lid(LID, PN)
    platform.say(LID, "oi")
    again = make_platform(r, sim, monkeypatch)  # new processes: empty memory, the mapping is in Redis
    again.say(LID, "1")
    assert "Qual é o seu nome completo?" in texts(again, PN)[-1]
    assert sim.lid_lookups() == 1


# --- @lid first, the mapping later ------------------------------------------------------------------


def test_lid_first_then_mapping_learned_merges_without_losing_or_doubling(platform: Platform, r: redis.Redis) -> None:
    platform.say(LID, "oi")
    platform.say(LID, "1")
    assert "Qual é o seu nome completo?" in texts(platform, LID)[-1]  # served as @lid meanwhile
    assert platform.sim.lid_lookups(LID) == 1  # "unknown" is remembered, not asked per message
    before = history(r, LID)

    platform.sim.set_lid(LID, PN)
    forget_negative(r)
    platform.say(LID, "Maria Silva")
    assert "Obrigado, Maria Silva!" in texts(platform, PN)[-1]  # the conversation went on where it was
    merged = history(r, PN)
    assert merged[: len(before)] == before and merged[len(before)] == "Maria Silva"
    ids = r.lrange(SK.chat(PN).history, 0, -1)[::2]  # id, body pairs
    assert len(ids) == len(set(ids)) == len(merged)
    assert lid_keys(r) == []
    assert r.zrange(SK.active, 0, -1) == [PN] and not r.sismember(SK.ready, LID)
    platform.say(PN, "sair")
    assert texts(platform, PN)[-1].startswith("Atendimento encerrado")


def test_mapping_in_the_payload_merges_at_once_without_asking_waha(platform: Platform, r: redis.Redis) -> None:
    platform.say(LID, "oi")
    asked = platform.sim.lid_lookups()
    assert say_with_phone(platform, "1")["chat_status"] == "active"
    assert "Qual é o seu nome completo?" in texts(platform, PN)[-1]
    assert history(r, PN)[0::2] == ["oi", "1"] and lid_keys(r) == []
    assert platform.sim.lid_lookups() == asked
    platform.say(LID, "Maria Silva")  # no hint this time: the recorded mapping routes it
    assert "Obrigado, Maria Silva!" in texts(platform, PN)[-1]


def test_queue_place_is_kept_through_the_merge(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_MAX_ACTIVE="1")
    platform.say(OTHER, "oi")  # holds the only slot
    assert platform.say(LID, "oi")["position"] == 1
    platform.say("5511977770002@c.us", "oi")  # second in the queue
    assert say_with_phone(platform, "ainda aqui")["position"] == 1
    assert r.zrange(SK.queue, 0, -1) == [PN, "5511977770002@c.us"]
    platform.say(OTHER, "sair")
    turn = texts(platform, PN)[-1]
    assert turn.startswith("É a sua vez!")
    assert history(r, PN)[0] == "oi" and "ainda aqui" in history(r, PN)


def test_the_notifier_tells_a_mapped_lid_its_position_at_its_number(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_MAX_ACTIVE="1")
    platform.say(OTHER, "oi")
    sim.set_lid(LID, PN)
    platform.ingestor.ingest(parse_event(wp.message_event(LID, "oi")))  # queued as @lid
    platform.notifier.on_event(WakeUp(QUEUE_CHANGED, "default", LID))  # the notifier's wake-up came first
    assert texts(platform, PN)[0].startswith("Você é o 1º da fila") and texts(platform, LID) == []
    assert r.zrange(SK.queue, 0, -1) == [PN]


def test_appointments_follow_the_person(platform: Platform, r: redis.Redis) -> None:
    for text in ("oi", "1", "Maria Silva", "amanhã às 10h", "1", "sim"):
        platform.say(LID, text)
    assert texts(platform, LID)[-1].startswith("Agendado!")
    say_with_phone(platform, "oi")  # a new conversation, as the phone chat
    platform.say(PN, "4")  # "Meus agendamentos"
    assert "Seus agendamentos:" in texts(platform, PN)[-1] and "Dra. Ana" in texts(platform, PN)[-1]
    [apt] = Book(r, platform.worker.schedule, "default").appointments(PN)
    assert apt.chat == PN and Book(r, platform.worker.schedule, "default").appointments(LID) == []


def test_two_live_chats_merge_in_time_order(platform: Platform, r: redis.Redis) -> None:
    """The person wrote both ways before the mapping was known: one history, interleaved as it happened."""
    for chat, text in ((LID, "a"), (PN, "b"), (LID, "c")):
        platform.ingestor.ingest(parse_event(wp.message_event(chat, text)))
        time.sleep(0.002)  # distinct arrival times (ms)
    platform.ingestor.lids.merge("default", LID, PN)
    assert history(r, PN) == ["a", "b", "c"]
    inbox = [record_codec.decode(m, PN) for m in r.lrange(SK.chat(PN).inbox, 0, -1)]
    assert [m["text"] for m in inbox] == ["a", "b", "c"]
    assert r.zrange(SK.active, 0, -1) == [PN] and lid_keys(r) == []
    platform.dispatch(PN)
    assert len(texts(platform, PN)) == 1  # one turn answers the three, once
    assert texts(platform, LID) == []


def test_merge_is_idempotent(platform: Platform, r: redis.Redis) -> None:
    platform.say(LID, "oi")
    platform.say(PN, "1")
    assert platform.ingestor.lids.merge("default", LID, PN) == 2
    after = snapshot(r)
    assert platform.ingestor.lids.merge("default", LID, PN) == 0
    assert snapshot(r) == after


def test_a_retry_of_a_message_from_before_the_merge_is_still_a_duplicate(platform: Platform, r: redis.Redis) -> None:
    """Ids inside a chat's keys drop the chat they name (record_codec): the merge re-writes the moved ones,
    so WAHA retrying an @lid message it sent before the mapping was known finds it in the phone chat."""
    event = wp.message_event(LID, "oi")
    assert platform.say(LID, "oi", event)["direction"] == "in"
    assert platform.ingestor.lids.merge("default", LID, PN) > 0
    assert platform.ingestor.ingest(parse_event(event)).status == "duplicate"
    assert history(r, PN).count("oi") == 1


def test_a_handler_holding_the_lid_chat_is_fenced_by_the_merge(platform: Platform, r: redis.Redis) -> None:
    platform.ingestor.ingest(parse_event(wp.message_event(LID, "oi")))
    stale = ChatStore(r, Scripts(r), platform.settings, "default", LID)
    assert stale.acquire()
    platform.ingestor.lids.merge("default", LID, PN)
    assert not stale.commit(Turn(["tarde demais"], {"step": "x"}), handled=1)
    assert lid_keys(r) == []
    platform.dispatch(PN)
    assert "1. Agendar consulta" in texts(platform, PN)[0] and texts(platform, LID) == []


def test_a_later_ack_of_a_reply_sent_to_the_lid_finds_it_in_the_phone_chat(platform: Platform, r: redis.Redis) -> None:
    platform.say(LID, "oi")
    [reply_id] = [m["id"] for m in read_history(r, "default", LID) if m["direction"] == "out"]
    say_with_phone(platform, "1")
    platform.ingestor.ingest(parse_event(wp.ack_event(reply_id, 3, LID)))
    [acked] = [m for m in read_history(r, "default", PN) if m["id"] == reply_id]
    assert acked["status"] == "READ"


# --- WAHA slow, down or talking nonsense --------------------------------------------------------


def test_waha_down_during_the_lookup_keeps_the_lid_then_merges_later(platform: Platform, r: redis.Redis) -> None:
    platform.sim.set_lid(LID, PN)
    platform.sim.fail_next(503)  # the lookup is the first call WAHA gets
    platform.say(LID, "oi")
    assert history(r, LID)[0] == "oi" and "1. Agendar consulta" in texts(platform, LID)[0]
    assert r.get(SK.lid(LID)) == ""
    forget_negative(r)
    platform.say(LID, "1")
    assert "Qual é o seu nome completo?" in texts(platform, PN)[-1]
    assert history(r, PN)[0::2] == ["oi", "1"] and lid_keys(r) == []


def test_waha_refusing_connections_never_blocks_ingest(platform: Platform, r: redis.Redis) -> None:
    platform.sim.refuse_connections()
    try:
        details = platform.say(LID, "oi")  # the worker's lookup and sends fail; the message is kept
    finally:
        platform.sim.accept_connections()
    assert details["chat_status"] == "active" and history(r, LID)[0] == "oi"
    assert r.get(SK.lid(LID)) == "" and r.llen(SK.chat(LID).outbox) == 1  # the reply waits for WAHA


def test_slow_waha_lookup_gives_up_quickly_and_serves_the_lid(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_LID_LOOKUP_TIMEOUT_S="0.2")
    sim.set_lid(LID, PN)
    sim.response_delay_s = 1.0  # every WAHA answer is slow; the lookup's short timeout gives up
    platform.say(LID, "oi")
    sim.response_delay_s = 0.0
    assert r.get(SK.lid(LID)) == "" and "1. Agendar consulta" in texts(platform, LID)[0]


@pytest.mark.parametrize(
    "answer",
    [b"not json", [], {"lid": LID}, {"lid": LID, "pn": 5511}, {"lid": LID, "pn": "x@g.us"}, {"lid": "1@lid", "pn": PN}],
    ids=["not-json", "list", "no-pn", "pn-number", "pn-group", "other-lid"],
)
def test_malformed_lid_answer_is_unknown(platform: Platform, r: redis.Redis, answer: object) -> None:
    platform.sim.set_lid_answer(answer)
    platform.say(LID, "oi")
    assert history(r, LID)[0] == "oi" and "1. Agendar consulta" in texts(platform, LID)[0]
    assert r.get(SK.lid(LID)) == "" and r.keys(f"*{PN}*") == []


def test_waha_not_knowing_the_lid_is_asked_again_only_after_a_while(platform: Platform, r: redis.Redis) -> None:
    platform.say(LID, "oi")
    platform.say(LID, "1")
    assert platform.sim.lid_lookups(LID) == 1 and r.ttl(SK.lid(LID)) > 0
    forget_negative(r)
    platform.say(LID, "Maria")
    assert platform.sim.lid_lookups(LID) == 2 and texts(platform, PN) == []


# --- what a payload may claim -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "from_me", "expected"),
    [
        ({"key": {"remoteJidAlt": "5511977770001@s.whatsapp.net"}}, False, PN),
        ({"key": {"senderPn": "5511977770001@s.whatsapp.net"}}, False, PN),
        ({"key": {"senderPn": "5511900000000@s.whatsapp.net"}}, True, None),  # on our own message: our number
        ({"Info": {"SenderAlt": "5511977770001:12@s.whatsapp.net"}}, False, PN),
        ({"Info": {"RecipientAlt": "5511977770001@s.whatsapp.net"}}, True, PN),
        ({"key": {"remoteJidAlt": "120363@g.us"}}, False, None),
        ({"key": {"remoteJidAlt": 5511977770001}}, False, None),
        ({"key": "5511977770001@c.us"}, False, None),
        ("junk", False, None),
    ],
)
def test_payload_hints_are_trusted_only_when_they_name_a_phone_chat(data, from_me: bool, expected) -> None:
    assert payload_phone({"_data": data}, from_me) == expected


def test_a_hint_on_a_phone_chat_is_ignored() -> None:
    event = parse_event(wp.message_event(OTHER, "oi", phone_alt=PN))
    assert isinstance(event, Message) and event.chat_id == OTHER and event.phone_hint is None
    assert phone_chat("5511977770001@c.us") == PN and phone_chat("abc@c.us") is None


# --- end to end through the functions ----------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_both_orders(tmp_path) -> None:
    from tests.test_end_to_end import System

    s = System(tmp_path, WSM_MAX_ACTIVE="2", WSM_LID_NEGATIVE_TTL_S="1")
    known_lid, known_pn = "120363999000222@lid", "5511977770002@c.us"
    try:
        client = redis.Redis.from_url(s.local.redis_url, decode_responses=True)
        s.sim.set_lid(known_lid, known_pn)
        s.say(known_lid, "oi")  # known first: the first reply already goes to the number
        s.wait_texts(known_pn, 1)
        asked = s.sim.lid_lookups(known_lid)
        s.say(known_lid, "1")  # the webhook stores it under the number: no new lookup, no merge
        assert "nome completo" in s.wait_texts(known_pn, 2)[-1]
        assert s.texts(known_lid) == [] and s.sim.lid_lookups(known_lid) == asked >= 1
        assert wait_until(lambda: [m["text"] for m in s.history(known_pn)][0::2] == ["oi", "1"])

        s.say(LID, "oi")  # unknown: served as @lid
        s.wait_texts(LID, 1)
        s.sim.set_lid(LID, PN)
        assert wait_until(lambda: not client.exists(SK.lid(LID)), 15)
        s.say(LID, "1")
        assert "nome completo" in s.wait_texts(PN, 1)[-1]
        # read_history is two reads: a reply being re-filed under WAHA's id between them is missed, so wait
        assert wait_until(lambda: len(s.history(PN)) == 4), s.history(PN)
        merged = [m["text"] for m in s.history(PN)]
        assert merged[0] == "oi" and "Como posso ajudar?" in merged[1] and merged[2] == "1"
        assert len(s.texts(LID)) == 1
        assert lid_keys(client) == []
        client.close()
    finally:
        s.stop()


# --- the WAHA stand-in's side --------------------------------------------------------------------


def test_the_simulator_serves_lids_as_waha_does() -> None:
    import requests

    with WahaSimulator(api_key="k") as sim, requests.Session() as http:
        url, auth = f"{sim.url}/api/default/lids/{LID}", {"X-Api-Key": "k"}
        assert http.get(url, timeout=5).status_code == 401
        assert http.get(url, headers=auth, timeout=5).json() == {"lid": LID, "pn": None}
        assert http.post(f"{sim.url}/sim/lids", json={"lid": LID.split("@")[0], "phone": PN}, timeout=5).ok
        assert http.get(url, headers=auth, timeout=5).json() == {"lid": LID, "pn": PN}
        assert http.get(f"{sim.url}/api/other/lids/{LID}", headers=auth, timeout=5).status_code == 404
        assert http.post(f"{sim.url}/sim/lids", json={"phone": PN}, timeout=5).status_code == 400
        assert sim.lid_lookups(LID) == 4 and sim.lid_lookups("1@lid") == 0  # the page call is not one


def test_the_simulator_page_can_write_as_a_lid() -> None:
    import requests

    with WahaSimulator(webhook_url="http://127.0.0.1:9/") as sim, requests.Session() as http:
        posted: list[dict] = []
        sim.post_webhook = posted.append  # type: ignore[method-assign]  # keep what it would post
        body = {"lid": LID.split("@")[0], "phone": PN.split("@")[0], "text": "oi"}
        answer = http.post(f"{sim.url}/sim/send", json=body, timeout=5).json()
        assert answer["chat_id"] == LID
        event = parse_event(posted[0])
        assert isinstance(event, Message) and event.chat_id == LID and event.phone_hint == PN


def test_export_and_erase_of_the_person_include_their_lid_mapping(platform: Platform, r: redis.Redis) -> None:
    from wsm.ops.chat_data import erase_chat, export_chat

    platform.say(LID, "oi")
    say_with_phone(platform, "1")
    assert export_chat(r, "default", PN)["lid_mappings"] == {SK.lid(LID): PN}
    erase_chat(r, "default", PN, max_active=2)
    assert r.keys(f"*{PN}*") == [] and r.keys(f"*{LID}*") == []


def test_the_lid_benchmark_runs() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bench.lid", "--messages", "20", "--history", "20"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "@lid, mapping known" in out and "merge of 10 + 10 history records" in out
