"""Human attendance in-process: asking for a human, the human queue and its notices, operators taking, replying,
returning to the bot and closing, the phone taking over, and nobody being there. A real Redis, the WAHA stand-in,
the worker and notifier called as the router would (tests/test_attendance.py's platform)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis

from infra.platform.triggers import SUBSCRIPTIONS, WORKER
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.booking_helpers import always_open
from tests.test_attendance import SK, A, B, C, Platform, make_platform
from wsm.attendance.operators import OperatorError, Operators
from wsm.attendance.ownership import Ownership, OwnershipError, owner_of
from wsm.console import live
from wsm.conversation.history import read_history
from wsm.core.status import Owner
from wsm.store import event_stream, keys
from wsm.store.events import CHAT_ADMITTED, SLOT_FREED, WakeUp
from wsm.store.scripts import Scripts
from wsm.waha.event import parse_event

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture
def platform(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return make_platform(r, sim, monkeypatch, WSM_MAX_ACTIVE="3")


def ownership(platform: Platform) -> Ownership:
    return platform.worker.ownership


def online(platform: Platform, name: str = "ana", capacity: int = 1) -> None:
    ops = Operators(platform.r)
    if name not in ops.names():
        ops.add(name)
    ops.go_online("default", name, capacity)


def ask_for_human(platform: Platform, chat: str) -> None:
    platform.say(chat, "oi")
    platform.say(chat, "3")  # the default flow's "Falar com um atendente"


def state(platform: Platform, chat: str) -> dict[str, str]:
    return platform.r.hgetall(SK.chat(chat).state)


def transitions(platform: Platform, chat: str) -> list[tuple[str, str, str]]:
    records = [m for m in read_history(platform.r, "default", chat) if m.get("kind") == "transition"]
    return [(m["from"], m["to"], m["operator"]) for m in records]


def test_two_people_ask_for_a_human_and_are_told_their_positions(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    ask_for_human(platform, B)
    assert platform.texts(A)[-1].startswith("Você é o 1º na fila para falar com um atendente")
    assert platform.texts(B)[-1].startswith("Você é o 2º na fila para falar com um atendente")
    assert "Um atendente humano vai continuar" in platform.texts(B)[-2]
    assert platform.r.zrange(SK.human_queue, 0, -1) == [A, B]
    assert owner_of(state(platform, A)) is Owner.HUMAN_QUEUE
    assert transitions(platform, A) == [("bot", "human_queue", "")]
    before = len(platform.texts(A))
    platform.say(A, "alguém aí?")  # the bot stays quiet while a human owns the chat
    assert len(platform.texts(A)) == before
    assert read_history(platform.r, "default", A)[-1]["text"] == "alguém aí?"


def test_the_operator_takes_the_first_replies_and_the_second_moves_up(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    ask_for_human(platform, B)
    assert ownership(platform).take_next("default", "ana") == A
    platform.dispatch()
    assert platform.texts(B)[-1].startswith("Atualização: agora você é o 1º na fila do atendimento humano")
    ownership(platform).reply("default", A, "ana", "Olá, aqui é a Ana. Como posso ajudar?")
    platform.dispatch(A)
    assert platform.texts(A)[-1] == "Olá, aqui é a Ana. Como posso ajudar?"
    sent = [m for m in read_history(platform.r, "default", A) if m.get("direction") == "out"][-1]
    assert sent["source"] == "operator:ana" and sent["status"] == "SENT"
    assert transitions(platform, A) == [("bot", "human_queue", ""), ("human_queue", "with_operator", "ana")]
    assert platform.r.hget(SK.operators_load, "ana") == "1"


def published(listener: redis.client.PubSub) -> list[WakeUp]:
    """The wake-ups published since ``listener`` subscribed to the events channel."""
    out, deadline = [], time.monotonic() + 0.5
    while time.monotonic() < deadline:  # a None is also what a skipped subscribe confirmation reads as
        message = listener.get_message(timeout=0.05)
        if message is not None and message["type"] == "message":
            out.append(WakeUp.from_json(message["data"]))
    return out


def test_an_operator_taking_a_chat_from_the_bot_wakes_the_worker_to_admit_the_next(platform: Platform) -> None:
    """The taken chat's bot slot goes to the bot queue's head at once, not at the next tick (5 s)."""
    d = "5511900000004@c.us"
    for chat in (A, B, C, d):  # three slots: d waits
        platform.say(chat, "oi")
    assert platform.r.zrange(SK.queue, 0, -1) == [d]
    online(platform)
    listener = platform.r.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.EVENTS_CHANNEL)
    ownership(platform).take("default", A, "ana")  # the console's "Responder" on a chat the bot serves
    freed = [e for e in published(listener) if e.type == SLOT_FREED]
    assert freed == [WakeUp(SLOT_FREED, "default", A)]
    assert SLOT_FREED in SUBSCRIPTIONS and WORKER in SUBSCRIPTIONS[SLOT_FREED]  # the router takes it to the worker
    platform.worker.on_event(freed[0])
    assert platform.r.zrange(SK.queue, 0, -1) == []
    assert sorted(platform.r.zrange(SK.active, 0, -1)) == sorted([B, C, d])
    assert WakeUp(CHAT_ADMITTED, "default", d) in published(listener)
    platform.worker.on_event(WakeUp(CHAT_ADMITTED, "default", d))
    assert platform.texts(d)[-1].startswith("É a sua vez!")


def test_a_reply_typed_on_the_phone_wakes_the_worker_to_admit_the_next(platform: Platform) -> None:
    d = "5511900000004@c.us"
    for chat in (A, B, C, d):
        platform.say(chat, "oi")
    listener = platform.r.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(keys.EVENTS_CHANNEL)
    human = wp.envelope("message.any", wp.message_payload(A, "Oi, aqui é a recepção", from_me=True, source="app"))
    platform.ingestor.ingest(parse_event(human))
    assert WakeUp(SLOT_FREED, "default", A) in published(listener)
    platform.worker.on_event(WakeUp(SLOT_FREED, "default", A))
    assert sorted(platform.r.zrange(SK.active, 0, -1)) == sorted([B, C, d])


def test_capacity_and_presence_are_enforced(platform: Platform) -> None:
    ask_for_human(platform, C)  # nobody online: not queued (see the unavailable test)
    online(platform, capacity=1)
    ask_for_human(platform, A)
    ask_for_human(platform, B)
    own = ownership(platform)
    with pytest.raises(OwnershipError, match="not online"):
        own.take("default", A, "bruno")
    own.take("default", A, "ana")
    with pytest.raises(OwnershipError, match="capacity"):
        own.take("default", B, "ana")
    assert platform.r.zrange(SK.human_queue, 0, -1) == [B]
    with pytest.raises(OwnershipError, match="take the chat"):
        own.reply("default", B, "ana", "oi")
    with pytest.raises(OwnershipError, match="empty"):
        own.reply("default", A, "ana", "   ")


def test_return_to_bot_at_a_step_and_the_bot_answers_the_next_message(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    own = ownership(platform)
    own.take("default", A, "ana")
    prompt = platform.worker.engine.prompt(platform.worker.engine.flow.steps["menu"], {})
    assert own.return_to_bot("default", A, "menu", "ana", prompt)
    platform.dispatch(A)
    assert "1. Agendar consulta" in platform.texts(A)[-1]
    platform.say(A, "2")
    assert platform.texts(A)[-1].startswith("Funcionamos de segunda a sexta")
    assert owner_of(state(platform, A)) is Owner.BOT
    assert platform.r.hget(SK.operators_load, "ana") == "0"
    assert transitions(platform, A)[-1] == ("with_operator", "bot", "")
    assert not own.return_to_bot("default", A, "menu", "ana", prompt)  # the bot has it: nothing changes


def test_close_ends_the_conversation_and_the_next_message_starts_afresh(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    own = ownership(platform)
    own.take("default", A, "ana")
    assert own.close("default", A, "ana", goodbye="Atendimento encerrado.")
    platform.dispatch(A)
    assert platform.texts(A)[-1] == "Atendimento encerrado."
    platform.say(A, "oi de novo")
    assert "Como posso ajudar?" in platform.texts(A)[-1]
    assert transitions(platform, A)[-1] == ("with_operator", "closed", "")


def test_nobody_online_the_person_is_told_and_may_leave_a_message(platform: Platform) -> None:
    ask_for_human(platform, A)
    notice = platform.texts(A)[-1]
    assert notice.startswith("No momento não há atendentes disponíveis") and "assim que possível" in notice
    assert platform.r.zcard(SK.human_queue) == 0 and owner_of(state(platform, A)) is Owner.BOT
    platform.say(A, "Preciso de uma segunda via do recibo")
    assert platform.texts(A)[-1].startswith("Recado anotado!")
    [left] = ownership(platform).left_messages("default")
    assert left["chat"] == A and left["text"] == "Preciso de uma segunda via do recibo"
    platform.say(A, "menu")  # the bot keeps serving
    assert "1. Agendar consulta" in platform.texts(A)[-1]


def test_outside_opening_hours_the_person_is_told_when_people_are_back(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch)
    tomorrow = (datetime.now(ZoneInfo("America/Sao_Paulo")) + timedelta(days=1)).weekday()
    only_tomorrow = always_open(
        providers=[
            {"id": "ana", "name": "Dra. Ana", "services": ["consulta"], "hours": {DAYS[tomorrow]: ["08:00-12:00"]}}
        ],
    )
    platform.worker.ownership.__dict__["schedule"] = only_tomorrow  # the opening hours (the booking uses its own)
    online(platform)
    ask_for_human(platform, A)
    assert "Nossa equipe volta amanhã às 08:00" in platform.texts(A)[-1]
    assert platform.r.zcard(SK.human_queue) == 0


def test_a_reply_typed_on_the_phone_takes_the_chat_over(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    phone = wp.message_payload(A, "Oi, é a recepção", from_me=True, source="app")
    platform.say(A, "", wp.envelope("message.any", phone))
    assert owner_of(state(platform, A)) is Owner.WITH_OPERATOR and state(platform, A)["operator"] == "phone"
    assert platform.r.zcard(SK.human_queue) == 0
    assert transitions(platform, A)[-1] == ("human_queue", "with_operator", "phone")


def test_every_transition_reaches_the_console_stream(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    ownership(platform).take("default", A, "ana")
    events = event_stream.read_since(platform.r, {"default": "0-0"})
    owners = [e.fields["owner"] for e in events if e.fields["type"] == "owner"]
    assert owners == ["human_queue", "with_operator"]
    assert {e.fields["type"] for e in events} >= {"message", "queue", "owner", "operators"}
    assert event_stream.decode_position(event_stream.encode_position({"default": events[-1].id})) == {
        "default": events[-1].id
    }
    assert event_stream.decode_position("default=x-1 {bad}=1-0 nonsense") == {}


def test_operators_passwords_are_hashed_and_checked(r: redis.Redis) -> None:
    ops = Operators(r)
    password = ops.add("ana")
    assert ops.verify("ana", password) and not ops.verify("ana", password + "x") and not ops.verify("bob", password)
    assert password not in json.dumps(r.hgetall("wsm:operators"))
    with pytest.raises(OperatorError, match="exists"):
        ops.add("ana")
    with pytest.raises(OperatorError, match="invalid operator name"):
        ops.add("Ana Maria")
    with pytest.raises(OperatorError, match="capacity"):
        ops.go_online("default", "ana", 0)
    assert ops.names() == ["ana"]
    r.sadd("wsm:sessions", "default")
    ops.go_online("default", "ana", 2)
    assert ops.remove("ana") and not ops.remove("ana")
    assert ops.names() == [] and ops.online("default") == {}


def test_two_operators_taking_the_same_chat_at_once_one_wins(platform: Platform) -> None:
    for name in ("ana", "bia"):
        online(platform, name, capacity=5)
    ask_for_human(platform, A)
    own = ownership(platform)
    barrier = threading.Barrier(2)

    def grab(name: str) -> str:
        barrier.wait()
        try:
            own.take_next("default", name)
        except OwnershipError as e:
            return str(e)
        return name

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(grab, ["ana", "bia"]))
    holder = state(platform, A)["operator"]
    assert holder in ("ana", "bia")
    load = platform.r.hgetall(SK.operators_load)
    assert sum(int(v) for v in load.values()) == 1 and load[holder] == "1"
    assert [t for t in transitions(platform, A) if t[1] == "with_operator"] == [
        ("human_queue", "with_operator", holder)
    ]


def test_taking_the_next_never_takes_a_chat_a_colleague_took_after_it_was_read_as_the_head(
    platform: Platform,
) -> None:
    """take_next reads the head, then takes it: if ana took it in between, bia must not take it from her."""
    for name in ("ana", "bia"):
        online(platform, name, capacity=5)
    ask_for_human(platform, A)
    own = ownership(platform)
    own.take("default", A, "ana")
    assert own._take("default", A, "bia", None, queued_only=True) is None  # bia's take_next read A as the head
    assert state(platform, A)["operator"] == "ana"
    assert platform.r.hgetall(SK.operators_load) == {"ana": "1"}


def test_capacity_holds_under_concurrent_takes(platform: Platform) -> None:
    online(platform, capacity=1)
    chats = [f"55119000001{i:02d}@c.us" for i in range(6)]
    for chat in chats:
        ask_for_human(platform, chat)
    own = ownership(platform)

    def take(chat: str) -> bool:
        try:
            own.take("default", chat, "ana")
        except OwnershipError:
            return False
        return True

    with ThreadPoolExecutor(6) as pool:
        assert sum(pool.map(take, chats)) == 1
    assert platform.r.hget(SK.operators_load, "ana") == "1" and platform.r.zcard(SK.human_queue) == 5


def test_asking_twice_queues_once(platform: Platform) -> None:
    online(platform)
    ask_for_human(platform, A)
    assert ownership(platform).hand_off("default", A, "agent") is None
    assert platform.r.zrange(SK.human_queue, 0, -1) == [A] and len(transitions(platform, A)) == 1


def test_an_operator_reply_survives_waha_being_down(platform: Platform, sim: WahaSimulator) -> None:
    online(platform)
    ask_for_human(platform, A)
    own = ownership(platform)
    own.take("default", A, "ana")
    sim.set_outage(500)
    own.reply("default", A, "ana", "Já verifico para você")
    platform.dispatch(A)
    assert "Já verifico para você" not in platform.texts(A)
    assert platform.r.llen(SK.chat(A).outbox) == 1  # kept, retried later
    sim.clear_outage()
    platform.r.hdel(SK.chat(A).state, "send_retry_at_ms")  # instead of waiting out the backoff
    platform.dispatch(A)
    assert platform.texts(A)[-1] == "Já verifico para você" and platform.r.llen(SK.chat(A).outbox) == 0


def test_redis_down_the_actions_fail_clearly(platform: Platform) -> None:
    from infra.platform.redis_server import free_port

    dead = redis.Redis(port=free_port(), decode_responses=True, socket_connect_timeout=0.5)
    own = Ownership(dead, Scripts(dead), platform.settings, always_open())
    with pytest.raises(redis.ConnectionError):
        own.take("default", A, "ana")
    body = list(live.stream(dead, {"default": "0-0"}, 30))  # ends at once: the browser reconnects later
    assert body[-1] == ": redis unavailable\n\n"


def test_answering_a_message_left_then_returning_to_the_bot(platform: Platform) -> None:
    ask_for_human(platform, B)  # nobody online
    platform.say(B, "Preciso falar sobre uma cobrança")
    assert [m["chat"] for m in ownership(platform).left_messages("default")] == [B]
    ask_for_human(platform, A)  # told nobody is there; taken before writing anything more
    online(platform)
    own = ownership(platform)
    own.take("default", A, "ana")  # the console's "Responder"
    own.dismiss_left("default", B)
    assert own.left_messages("default") == []
    prompt = platform.worker.engine.prompt(platform.worker.engine.flow.steps["menu"], {})
    own.return_to_bot("default", A, "menu", "ana", prompt)
    platform.say(A, "2")  # the bot's again: an answer to the menu, not a message left
    assert platform.texts(A)[-1].startswith("Funcionamos de segunda a sexta")


def test_erasing_a_chat_removes_it_from_human_attendance(platform: Platform) -> None:
    from wsm.ops.chat_data import erase_chat

    ask_for_human(platform, B)  # nobody online: a message left
    platform.say(B, "meu CPF é 123")
    online(platform)
    ask_for_human(platform, A)
    ownership(platform).take("default", A, "ana")
    for chat in (A, B):
        erased = erase_chat(platform.r, "default", chat, 3)
        assert erased.human_attendance > 0
    assert ownership(platform).left_messages("default") == []
    assert platform.r.hget(SK.operators_load, "ana") == "0"
    assert all(e.fields.get("chat") not in (A, B) for e in event_stream.read_since(platform.r, {"default": "0-0"}))


def test_after_a_phone_takeover_lapses_the_person_can_ask_for_a_human_again(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_HANDOFF_S="1")
    online(platform)
    phone = wp.message_payload(A, "Oi, é a recepção", from_me=True, source="app")
    platform.say(A, "", wp.envelope("message.any", phone))
    assert owner_of(state(platform, A)) is Owner.WITH_OPERATOR
    time.sleep(1.1)  # WSM_HANDOFF_S passes: the bot answers again
    assert owner_of(state(platform, A)) is Owner.BOT
    ask_for_human(platform, A)
    assert platform.r.zrange(SK.human_queue, 0, -1) == [A]
    assert platform.texts(A)[-1].startswith("Você é o 1º na fila para falar com um atendente")


def test_a_chat_taken_while_the_notifier_looks_at_it_is_not_told_a_stale_position(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's take (owner_take) moves a chat without its lease: a position the notifier read before it must
    not become a notice after it (see test_attendance's admission case)."""
    import wsm.attendance.notifier as notifier_module

    online(platform)
    ask_for_human(platform, A)
    told = len(platform.texts(A))
    assert platform.texts(A)[-1].startswith("Você é o 1º na fila para falar com um atendente")
    real_position = notifier_module.position

    def position_then_taken(client: redis.Redis, sk, chat_id: str, human: bool = False):  # type: ignore[no-untyped-def]
        place = real_position(client, sk, chat_id, human)
        if human and chat_id == A:  # right after this read, ana takes the chat in the console
            ownership(platform).take("default", A, "ana")
        return place

    monkeypatch.setattr(notifier_module, "position", position_then_taken)
    platform.notifier.run(SK, human=True)
    assert len(platform.texts(A)) == told, platform.texts(A)[told:]
    assert owner_of(state(platform, A)) is Owner.WITH_OPERATOR
