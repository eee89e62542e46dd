"""Attendance in-process: the worker and notifier called as the router would, a real Redis, a real WAHA stand-in.

The end-to-end version with real processes is tests/test_end_to_end.py; this file covers
each rule quickly and precisely.
"""

from __future__ import annotations

import json
import time

import pytest
import redis

from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.booking_helpers import always_open
from wsm.attendance.notifier import Notifier
from wsm.attendance.operators import Operators
from wsm.attendance.worker import Worker
from wsm.conversation.engine import Engine
from wsm.conversation.flow import load_flow
from wsm.conversation.history import read_history
from wsm.core.settings import Settings
from wsm.delivery.outbox import Delivery, Sender
from wsm.ingest.ingestor import Ingestor
from wsm.store import keys, record_codec
from wsm.store.chat_store import ChatStore
from wsm.store.events import MESSAGE_RECEIVED, QUEUE_CHANGED, TICK, WakeUp
from wsm.store.scripts import Scripts
from wsm.store.turn import Turn
from wsm.waha.client import WahaClient
from wsm.waha.event import parse_event

A, B, C = "5511900000001@c.us", "5511900000002@c.us", "5511900000003@c.us"
SK = keys.SessionKeys("default")


class Platform:
    """Ingest + worker + notifier wired together the way the router wires the real functions."""

    def __init__(self, r: redis.Redis, sim: WahaSimulator, settings: Settings) -> None:
        self.r, self.sim, self.settings = r, sim, settings
        waha = WahaClient(sim.url, timeout_s=5)
        engine = Engine(load_flow())
        schedule = always_open()
        self.ingestor = Ingestor(r, settings)
        self.worker = Worker(r, settings, waha, engine, schedule)
        self.notifier = Notifier(r, settings, waha, engine, schedule)

    def say(self, chat: str, text: str, body: dict | None = None) -> dict:
        body = body or wp.message_event(chat, text)
        outcome = self.ingestor.ingest(parse_event(body))
        self.dispatch(chat)
        return outcome.details

    def dispatch(self, chat: str | None = None) -> None:
        """Deliver wake-ups until nothing changes (a router with instant delivery)."""
        for _ in range(3):
            self.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", chat))
            self.notifier.on_event(WakeUp(QUEUE_CHANGED, "default", chat))
            for admitted in self.r.smembers(SK.ready):
                self.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", admitted))

    def tick(self) -> None:
        """The router's tick, followed by the wake-ups the tick's own changes publish (e.g. chat.admitted)."""
        self.worker.on_event(WakeUp(TICK))
        self.notifier.on_event(WakeUp(TICK))
        self.dispatch()

    def texts(self, chat: str) -> list[str]:
        return [c.json["text"] for c in self.sim.sent_texts(chat)]


def make_platform(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch, **env: str) -> Platform:
    base = {"WSM_TYPING_MS_PER_CHAR": "0", "WSM_MAX_ACTIVE": "1", "WSM_NOTIFY_MIN_INTERVAL_S": "0"}
    for name, value in {**base, **env}.items():
        monkeypatch.setenv(name, value)
    return Platform(r, sim, Settings.from_env())


@pytest.fixture
def platform(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> Platform:
    return make_platform(r, sim, monkeypatch)


def test_one_slot_first_is_served_others_told_their_position(platform: Platform) -> None:
    platform.say(A, "oi")
    assert platform.say(B, "olá")["position"] == 1
    assert platform.say(C, "bom dia")["position"] == 2
    [greeting] = platform.texts(A)
    assert "Olá! 👋" in greeting and "1. Agendar consulta" in greeting
    assert platform.texts(B) == ['Você é o 1º da fila. Espera estimada: ~3 min. Para sair da fila, envie "sair".']
    assert platform.texts(C)[0].startswith("Você é o 2º da fila. Espera estimada: ~6 min.")


def test_leaving_frees_the_slot_next_is_admitted_and_queue_moves(platform: Platform) -> None:
    for chat in (A, B, C):
        platform.say(chat, "oi")
    platform.say(A, "sair")
    assert platform.texts(A)[-1].startswith("Atendimento encerrado")
    turn = platform.texts(B)[-1]
    assert turn.startswith("É a sua vez!") and "Como posso ajudar?" in turn
    assert platform.texts(C)[-1].startswith("Atualização: agora você é o 1º da fila")
    assert platform.r.hget(SK.chat(A).state, "status") == "closed"
    assert platform.r.zrange(SK.active, 0, -1) == [B] and platform.r.zrange(SK.queue, 0, -1) == [C]


def test_a_full_conversation_collects_books_confirms_and_ends(platform: Platform) -> None:
    for text in ("oi", "1", "Maria Silva", "amanhã às 10h", "1", "sim"):
        platform.say(A, text)
    replies = platform.texts(A)
    assert "Qual é o seu nome completo?" in replies[1]
    assert "Obrigado, Maria Silva!" in replies[2] and "Horários livres para Consulta:" in replies[2]
    assert "1. " in replies[3] and "às 10:00 com Dra. Ana" in replies[3].splitlines()[1]
    assert replies[4].startswith("Confirma Consulta") and "às 10:00 com Dra. Ana?" in replies[4]
    assert replies[5].startswith("Agendado! ✅ Consulta") and "Até logo!" in replies[5]
    assert platform.r.zcard(SK.active) == 0
    result = json.loads(platform.r.hget(SK.chat(A).state, "last_result"))
    assert result == {"name": "Maria Silva", "booking_result": "booked"}


def test_invalid_option_and_menu_word(platform: Platform) -> None:
    platform.say(A, "oi")
    platform.say(A, "banana")
    assert platform.texts(A)[-1].startswith("Não entendi.")
    platform.say(A, "1")
    platform.say(A, "MENU")
    assert "1. Agendar consulta" in platform.texts(A)[-1]


def test_idle_chat_is_closed_told_and_resumes_where_it_stopped(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_IDLE_TIMEOUT_S="1")
    platform.say(A, "oi")
    platform.say(A, "1")  # now at "what is your name?"
    platform.say(B, "oi")  # waits
    time.sleep(1.2)
    platform.tick()
    assert platform.texts(A)[-1].startswith("Encerramos este atendimento por inatividade")
    assert platform.texts(B)[-1].startswith("É a sua vez!")
    platform.say(B, "sair")
    platform.say(A, "voltei")
    back = platform.texts(A)[-1]
    assert "Que bom te ver de novo" in back and "Qual é o seu nome completo?" in back


def test_duplicate_webhook_never_doubles_a_reply(platform: Platform) -> None:
    body = wp.message_event(A, "oi")
    platform.say(A, "oi", body)
    platform.say(A, "oi", dict(body, id="evt_retry"))
    platform.tick()
    assert len(platform.texts(A)) == 1


def test_messages_sent_while_waiting_are_kept_and_handled_in_order(platform: Platform) -> None:
    platform.say(A, "oi")
    platform.say(B, "oi")
    platform.say(B, "quero marcar")
    platform.say(A, "sair")
    [_, greeting] = platform.texts(B)
    assert greeting.startswith("É a sua vez!")
    assert [m["text"] for m in read_history(platform.r, "default", B) if m["direction"] == "in"] == [
        "oi",
        "quero marcar",
    ]
    platform.say(B, "2")
    assert "Funcionamos de segunda a sexta" in platform.texts(B)[-1]


def test_waiting_person_can_leave_the_queue_and_others_move_up(platform: Platform) -> None:
    for chat in (A, B, C):
        platform.say(chat, "oi")
    platform.say(B, "Sair!")
    assert platform.texts(B)[-1].startswith("Você saiu da fila")
    assert platform.texts(C)[-1].startswith("Atualização: agora você é o 1º da fila")
    assert platform.r.zrange(SK.queue, 0, -1) == [C]


def test_a_chat_already_active_or_waiting_never_requeues(platform: Platform) -> None:
    platform.say(A, "oi")
    platform.say(B, "oi")
    platform.say(B, "alô?")
    platform.say(A, "1")
    assert platform.r.zrange(SK.queue, 0, -1, withscores=True) == [(B, 1.0)]
    assert platform.texts(B) == [platform.texts(B)[0]]  # told once, nothing new to tell


def test_position_updates_are_throttled_and_never_repeat_a_position(
    r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_NOTIFY_MIN_INTERVAL_S="3600", WSM_MAX_ACTIVE="1")
    chats = [f"55119000001{i:02d}@c.us" for i in range(5)]
    for chat in chats:
        platform.say(chat, "oi")
    last = chats[-1]
    assert platform.texts(last) == [platform.texts(last)[0]]
    assert "4º da fila" in platform.texts(last)[0]
    platform.say(chats[0], "sair")  # everyone moves up, but the last one was told less than an hour ago
    platform.tick()
    assert len(platform.texts(last)) == 1
    due = r.zscore(SK.notify_due, last)
    assert due > time.time() * 1000 + 3500 * 1000


def test_hourly_cap_holds(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = make_platform(r, sim, monkeypatch, WSM_NOTIFY_MAX_PER_HOUR="2", WSM_MAX_ACTIVE="1")
    chats = [f"55119000002{i:02d}@c.us" for i in range(6)]
    for chat in chats:
        platform.say(chat, "oi")
    for chat in chats[:4]:
        platform.say(chat, "sair")
        platform.tick()
    last = platform.texts(chats[-1])
    assert len(last) == 2  # joined (4th), then one update; the cap stops the rest
    positions = [int(t.split("º")[0].split()[-1]) for t in last]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)


def test_waha_500_for_a_while_then_every_reply_arrives_once(platform: Platform) -> None:
    platform.sim.set_outage(500)
    platform.say(A, "oi")
    assert platform.texts(A) == []
    assert platform.r.llen(SK.chat(A).outbox) == 1
    platform.sim.clear_outage()
    platform.r.hset(SK.chat(A).state, "send_retry_at_ms", 0)  # skip the backoff wait
    platform.tick()
    platform.tick()
    assert len(platform.texts(A)) == 1
    assert read_history(platform.r, "default", A)[-1]["status"] == "SENT"


def test_waha_down_connection_refused_keeps_reply_pending(platform: Platform) -> None:
    platform.sim.refuse_connections()
    platform.say(A, "oi")
    platform.sim.accept_connections()
    platform.r.hset(SK.chat(A).state, "send_retry_at_ms", 0)
    platform.tick()
    assert len(platform.texts(A)) == 1


def test_422_holds_sends_until_session_is_working(platform: Platform) -> None:
    platform.sim.set_session_status("STOPPED")
    platform.say(A, "oi")
    platform.say(B, "oi")
    assert platform.r.hexists(SK.status, "held_ms")
    platform.sim.set_session_status("WORKING")
    platform.ingestor.ingest(parse_event(wp.session_status_event("WORKING")))
    platform.tick()
    assert len(platform.texts(A)) == 1 and len(platform.texts(B)) == 1


def test_other_4xx_is_dead_lettered_with_the_reason(platform: Platform) -> None:
    platform.sim.fail_next(400, count=10)
    platform.say(A, "oi")
    [entry] = [json.loads(x) for x in platform.r.lrange(keys.DEADLETTER, 0, -1)]
    assert entry["chat"] == A and "400" in entry["error"]
    assert set(entry) == {"kind", "session", "chat", "reply_id", "error", "at_ms"} and entry["kind"] == "send"
    assert read_history(platform.r, "default", A)[-1]["status"] == "FAILED"
    assert platform.r.llen(SK.chat(A).outbox) == 0


def test_reply_is_filed_under_wahas_id_and_acks_apply(platform: Platform) -> None:
    platform.say(A, "oi")
    [sent] = platform.sim.sent_texts(A)
    waha_ids = [m["id"] for m in read_history(platform.r, "default", A) if m["direction"] == "out"]
    assert len(waha_ids) == 1 and waha_ids[0].startswith("true_")
    platform.ingestor.ingest(parse_event(wp.ack_event(waha_ids[0], 3, A)))
    assert read_history(platform.r, "default", A)[-1]["status"] == "READ"
    echo = wp.envelope("message.any", wp.message_payload(A, sent.json["text"], from_me=True, source="api"))
    echo["payload"]["id"] = waha_ids[0]
    assert platform.ingestor.ingest(parse_event(echo)).status == "duplicate"


def test_a_stale_handler_cannot_commit_after_losing_its_lease(platform: Platform, r: redis.Redis) -> None:
    platform.say(A, "oi")
    scripts = Scripts(r)
    first = ChatStore(r, scripts, platform.settings, "default", A)
    assert first.acquire()
    r.delete(SK.chat(A).lease)  # its lease expired
    second = ChatStore(r, scripts, platform.settings, "default", A)
    assert second.acquire()
    assert not first.commit(Turn(["tarde demais"]))
    assert second.commit(Turn(["em dia"]))
    assert [m["text"] for m in read_history(r, "default", A)][-1] == "em dia"


def test_chat_admitted_while_its_waiting_inbox_is_being_examined_is_still_served(platform: Platform) -> None:
    """Regression (found by the chaos run): the holder's 'examined' count must not hide an admitted chat's inbox."""
    platform.say(A, "oi")
    platform.say(B, "oi")
    scripts = Scripts(platform.r)
    holder = ChatStore(platform.r, scripts, platform.settings, "default", B)
    assert holder.acquire()
    holder.commit(Turn(state={"inbox_seen": "1"}))
    leaving = ChatStore(platform.r, scripts, platform.settings, "default", A)
    assert platform.r.delete(SK.chat(A).lease) is not None and leaving.acquire()
    leaving.commit(Turn(["tchau"], end="done"))
    leaving.release()
    platform.worker.admit(SK)
    assert platform.r.hget(SK.chat(B).state, "status") == "active"
    assert holder.release(examined=1) is True
    assert B in platform.r.smembers(SK.ready)
    platform.tick()
    assert platform.texts(B)[-1].startswith("É a sua vez!")


def test_tick_serves_an_active_chat_with_stranded_messages_even_without_a_ready_mark(platform: Platform) -> None:
    platform.say(A, "oi")
    body = wp.message_event(A, "1")
    platform.ingestor.ingest(parse_event(body))
    platform.r.srem(SK.ready, A)  # as if the signal and the mark were both lost
    inbox = SK.chat(A).inbox
    stale = dict(record_codec.decode(platform.r.lindex(inbox, 0), A), received_ms=int(time.time() * 1000) - 10_000)
    platform.r.lset(inbox, 0, record_codec.encode(stale, A))  # ... long enough ago that no wake-up is coming
    platform.worker.on_event(WakeUp(TICK))
    assert "nome completo" in platform.texts(A)[-1]


def test_a_human_replying_from_the_phone_takes_over_and_frees_the_slot(platform: Platform) -> None:
    platform.say(A, "oi")
    platform.say(B, "oi")
    human = wp.envelope(
        "message.any", wp.message_payload(A, "Oi, aqui é a Ana da recepção", from_me=True, source="app")
    )
    platform.ingestor.ingest(parse_event(human))
    platform.dispatch(B)
    assert platform.r.hget(SK.chat(A).state, "status") == "handoff"
    assert platform.texts(B)[-1].startswith("É a sua vez!")
    before = len(platform.texts(A))
    platform.say(A, "obrigado, Ana")  # the bot stays quiet while the human talks
    assert len(platform.texts(A)) == before
    history = read_history(platform.r, "default", A)
    assert [m["text"] for m in history if m.get("kind") != "transition"][-2:] == [
        "Oi, aqui é a Ana da recepção",
        "obrigado, Ana",
    ]
    assert history[-2]["kind"] == "transition" and history[-2]["operator"] == "phone"  # who owns it, in history


def test_handoff_step_hands_the_chat_to_a_human(platform: Platform) -> None:
    Operators(platform.r).add("ana")
    Operators(platform.r).go_online("default", "ana", 1)  # someone can answer (else: tests/test_human_attendance.py)
    platform.say(A, "oi")
    platform.say(A, "3")
    assert "atendente humano" in platform.texts(A)[1]
    state = platform.r.hgetall(SK.chat(A).state)
    assert state["status"] == "handoff" and int(state["handoff_until_ms"]) > time.time() * 1000
    platform.say(A, "alô?")
    assert len(platform.texts(A)) == 3  # greeting, handoff, the human queue position; then quiet


def test_tick_leaves_fresh_work_to_the_wake_ups_on_their_way(platform: Platform) -> None:
    platform.say(A, "oi")
    platform.ingestor.ingest(parse_event(wp.message_event(A, "1")))  # stored, its wake-up not delivered yet
    platform.worker.on_event(WakeUp(TICK))
    assert len(platform.texts(A)) == 1
    platform.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", A))
    assert "nome completo" in platform.texts(A)[-1]


def test_ticks_serve_every_stranded_chat_a_bounded_batch_at_a_time(platform: Platform) -> None:
    platform.say(A, "oi")  # holds the only slot: everyone else waits
    waiting = [f"55119100{i:05d}@c.us" for i in range(150)]
    for chat in waiting:  # each joins the queue, then asks to leave it; every wake-up is lost
        platform.ingestor.ingest(parse_event(wp.message_event(chat, "oi")))
        platform.ingestor.ingest(parse_event(wp.message_event(chat, "sair")))
    pipe = platform.r.pipeline()
    for chat in waiting:
        inbox = SK.chat(chat).inbox
        stale = dict(
            record_codec.decode(platform.r.lindex(inbox, 0), chat), received_ms=int(time.time() * 1000) - 10_000
        )
        pipe.lset(inbox, 0, record_codec.encode(stale, chat))
    pipe.execute()
    assert platform.r.object("encoding", SK.ready) == "hashtable"  # where SSCAN's COUNT bounds a step
    platform.worker.sweep_batch = 20

    def told() -> int:
        return sum(1 for chat in waiting if platform.texts(chat) == [platform.worker.engine.flow.texts["left_queue"]])

    platform.worker.on_event(WakeUp(TICK))
    first = told()
    assert 0 < first <= 60, first  # one tick looks at one batch, not the whole ready set
    for _ in range(40):
        if told() == len(waiting):
            break
        platform.worker.on_event(WakeUp(TICK))
    assert told() == len(waiting)
    assert platform.r.zrange(SK.queue, 0, -1) == [] and platform.r.smembers(SK.ready) == set()


def test_a_chat_admitted_while_the_notifier_looks_at_it_is_not_told_a_stale_position(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (a doubled "Você é o 1º da fila" in the cluster scenario): the notifier holds the chat's lease,
    but admission (admit_next) does not take it. A position read before the chat was admitted must not become a
    notice after it (the notify hash admission deleted read as "never told": the first notice again)."""
    import wsm.attendance.notifier as notifier_module

    platform.say(A, "oi")
    platform.say(B, "olá")
    assert platform.texts(B) == ['Você é o 1º da fila. Espera estimada: ~3 min. Para sair da fila, envie "sair".']
    real_position = notifier_module.position

    def position_then_admitted(client: redis.Redis, sk: keys.SessionKeys, chat_id: str, human: bool = False):
        place = real_position(client, sk, chat_id, human)
        if chat_id == B:  # right after this read, the worker ends A's conversation and admits B
            leaving = ChatStore(platform.r, Scripts(platform.r), platform.settings, "default", A)
            assert leaving.acquire()
            assert leaving.commit(Turn(["tchau"], end="done"))
            leaving.release()
            assert platform.worker.admit(SK) == [B]
        return place

    monkeypatch.setattr(notifier_module, "position", position_then_admitted)
    platform.notifier.on_event(WakeUp(QUEUE_CHANGED, "default", B))
    monkeypatch.setattr(notifier_module, "position", real_position)
    assert len(platform.texts(B)) == 1, platform.texts(B)  # nothing told after admission
    assert not platform.r.exists(SK.chat(B).notify)  # and admission's reset stands
    platform.dispatch(B)
    texts = platform.texts(B)
    assert len(texts) == 2 and texts[0].startswith("Você é o 1º da fila") and texts[1].startswith("É a sua vez!")


def test_a_ready_mark_left_by_a_sender_killed_before_it_released_is_cleared_by_the_tick(platform: Platform) -> None:
    """Regression (the chaos run's drain never ended): a handler SIGKILLed after its last reply was sent and popped,
    before release_lease, left the chat in ``ready`` with nothing pending; no event was coming and the tick only
    served chats with a pending message or reply, so the mark stayed forever."""
    platform.say(A, "oi")
    assert platform.r.sismember(SK.ready, A) == 0
    holder = ChatStore(platform.r, Scripts(platform.r), platform.settings, "default", A)
    assert holder.acquire()
    assert holder.commit(Turn(["uma resposta"]))
    platform.worker.sender.deliver(holder)  # sent and popped; then the process dies before release
    platform.r.delete(SK.chat(A).lease)  # and its lease runs out
    assert platform.r.sismember(SK.ready, A) == 1
    assert platform.r.llen(SK.chat(A).inbox) == platform.r.llen(SK.chat(A).outbox) == 0
    platform.worker.on_event(WakeUp(TICK))  # the tick alone: no event for A is coming
    assert platform.r.sismember(SK.ready, A) == 0
    assert platform.texts(A)[-1] == "uma resposta"


def held_with_reply(platform: Platform, chat: str, text: str = "uma resposta") -> ChatStore:
    """A handler holding ``chat`` with one reply committed and not yet sent."""
    holder = ChatStore(platform.r, Scripts(platform.r), platform.settings, "default", chat)
    assert holder.acquire() is not None
    assert holder.commit(Turn([text]))
    return holder


def test_the_last_reply_gives_the_lease_back_in_the_same_step(platform: Platform) -> None:
    """Nothing left after the last reply: the pop gives the lease back and drops the ready mark (no release call)."""
    platform.say(A, "oi")
    holder = held_with_reply(platform, A)
    platform.worker.sender.deliver(holder, release_examined=0)
    assert not platform.r.exists(SK.chat(A).lease) and platform.r.sismember(SK.ready, A) == 0
    assert holder.token == "" and holder.release() is False  # what the step found; nothing is called again
    assert platform.texts(A)[-1] == "uma resposta"


def test_a_message_that_arrives_while_the_last_reply_is_sent_keeps_the_chat_ready(platform: Platform) -> None:
    platform.say(A, "oi")
    holder = held_with_reply(platform, A)
    platform.ingestor.ingest(parse_event(wp.message_event(A, "e agora?")))  # lands while the reply is on its way
    platform.worker.sender.deliver(holder, release_examined=0)
    assert not platform.r.exists(SK.chat(A).lease)
    assert holder.release() is True and platform.r.sismember(SK.ready, A) == 1  # the worker looks again
    platform.dispatch(A)
    assert len(platform.texts(A)) == 3  # the greeting, the reply, and an answer to "e agora?"


def test_a_reply_queued_while_the_last_one_is_sent_is_sent_before_the_lease_is_given_back(platform: Platform) -> None:
    """An operator's reply pushed after the sender read the outbox: the pop does not release, the sender's caller
    does, and learns there is work left."""
    platform.say(A, "oi")
    holder = held_with_reply(platform, A)
    pushed = {"id": "wsm_operator1", "text": "do operador", "kind": "operator", "created_ms": 1}
    real_send = platform.worker.sender._send

    def send_then_push(chat: ChatStore, entry: dict, template: object = None) -> str:
        sent = real_send(chat, entry, template)
        if entry["text"] == "uma resposta":
            platform.r.rpush(SK.chat(A).outbox, json.dumps(pushed))
        return sent

    platform.worker.sender._send = send_then_push  # type: ignore[method-assign]
    platform.worker.sender.deliver(holder, release_examined=0)
    assert platform.r.get(SK.chat(A).lease) == holder.token  # still held: one reply left
    assert holder.release() is True and platform.r.sismember(SK.ready, A) == 1
    platform.dispatch(A)
    assert platform.texts(A)[-2:] == ["uma resposta", "do operador"]


def test_a_handler_that_lost_its_lease_gives_back_nothing_with_its_last_reply(platform: Platform) -> None:
    platform.say(A, "oi")
    holder = held_with_reply(platform, A)
    platform.r.set(SK.chat(A).lease, "someone-else")  # its lease ran out and another handler took the chat
    platform.worker.sender.deliver(holder, release_examined=0)
    assert platform.r.get(SK.chat(A).lease) == "someone-else"
    assert platform.r.llen(SK.chat(A).outbox) == 1  # the reply stays for the new holder (fenced pop refused)


@pytest.mark.parametrize("speaker", [A, B], ids=["an-active-chat-speaks", "the-waiting-chat-speaks"])
def test_a_message_admits_the_queue_when_a_slot_is_free_without_waiting_for_the_tick(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, speaker: str
) -> None:
    """Slots raised from 1 to 2 (a redeploy): nobody ends a conversation, yet the next message of anyone admits B."""
    platform.say(A, "oi")
    platform.say(B, "oi")
    assert platform.r.zrange(SK.queue, 0, -1) == [B]
    monkeypatch.setenv("WSM_MAX_ACTIVE", "2")
    platform = Platform(platform.r, platform.sim, Settings.from_env())
    platform.say(speaker, "1")
    assert platform.r.zrange(SK.queue, 0, -1) == [] and platform.r.zscore(SK.active, B) is not None
    assert any(t.startswith("É a sua vez!") for t in platform.texts(B))


def test_a_message_of_an_active_chat_with_nobody_waiting_asks_for_no_admission(platform: Platform) -> None:
    """The worker learns the queue's size with the lease (acquire_lease): no admission round trip per message."""
    platform.say(A, "oi")
    before = platform.r.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0)
    platform.say(A, "1")
    assert platform.r.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0) == before
    assert len(platform.texts(A)) == 2


def test_a_reply_queued_between_the_commit_and_the_send_is_sent_too(platform: Platform) -> None:
    """The sender sends from what the commit saw of the outbox; an operator's reply pushed after it is not missed."""
    platform.say(A, "oi")
    holder = held_with_reply(platform, A)
    pushed = {"id": "wsm_operator2", "text": "do operador", "kind": "operator", "created_ms": 1}
    platform.r.rpush(SK.chat(A).outbox, json.dumps(pushed))
    platform.worker.sender.deliver(holder, release_examined=0)
    assert holder.release() is True  # the pop saw one more reply: no release with it, work left
    platform.dispatch(A)
    assert platform.texts(A)[-2:] == ["uma resposta", "do operador"]
    assert platform.r.llen(SK.chat(A).outbox) == 0 and platform.r.sismember(SK.ready, A) == 0


def _reply_left_by_a_dead_sender(platform: Platform, text: str) -> str:
    """A handler queued ``text``, then died (its lease lapsed) before sending it or before popping it."""
    store = ChatStore(platform.r, Scripts(platform.r), platform.settings, "default", A)
    assert store.acquire()
    assert store.commit(Turn([text]))
    platform.r.delete(SK.chat(A).lease)
    return json.loads(platform.r.lindex(SK.chat(A).outbox, 0))["id"]


def _echo(chat: str, text: str) -> dict:
    """WAHA's message.any for a message sent through its API."""
    return wp.envelope("message.any", wp.message_payload(chat, text, from_me=True, source="api"))


def test_a_reply_a_dead_sender_had_sent_is_filed_under_wahas_echo_not_sent_again(platform: Platform) -> None:
    platform.say(A, "oi")
    text = "Um momento, por favor: já verifico."
    reply_id = _reply_left_by_a_dead_sender(platform, text)
    WahaClient(platform.sim.url, timeout_s=5).send_text("default", A, text)  # WAHA took it ...
    echo = _echo(A, text)
    platform.ingestor.ingest(parse_event(echo))  # ... and echoed it; the sender died before its pop
    platform.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", A))  # the next handler
    assert platform.texts(A).count(text) == 1
    assert platform.r.llen(SK.chat(A).outbox) == 0
    [record] = [m for m in read_history(platform.r, "default", A) if m.get("text") == text]  # the echo folded in
    assert record["id"] == echo["payload"]["id"] and record["local_id"] == reply_id
    assert record["status"] == "SERVER"  # as the echo said (ack 1): WhatsApp's server has it


def test_an_echo_of_the_same_text_from_before_the_reply_was_queued_does_not_stop_it(platform: Platform) -> None:
    platform.say(A, "oi")
    text = "Pode repetir, por favor?"
    platform.ingestor.ingest(parse_event(_echo(A, text)))  # sent through WAHA's API by someone else, earlier
    time.sleep(1.1)  # more than the clock slack allowed between webhook and worker
    _reply_left_by_a_dead_sender(platform, text)  # queued, never sent
    platform.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", A))
    assert platform.texts(A).count(text) == 1  # sent now, once
    assert platform.r.llen(SK.chat(A).outbox) == 0


class _IdlessWaha(WahaClient):
    """An engine that answers a send without the message's id (WAHA.md: "sometimes empty")."""

    def send_text(self, session: str, chat_id: str, text: str) -> str:
        super().send_text(session, chat_id, text)
        return ""


def test_an_echo_a_pop_could_not_fold_by_id_never_stands_in_for_a_later_reply(platform: Platform) -> None:
    """With no id in the answer the pop cannot fold WAHA's echo in: that echo belongs to the reply sent then, and a
    later reply of the same text (an operator's second "ok") must still be sent, not filed under it."""
    platform.say(A, "oi")
    store = ChatStore(platform.r, Scripts(platform.r), platform.settings, "default", A)
    assert store.acquire()
    assert store.commit(Turn(["ok"]))
    assert Sender(platform.r, _IdlessWaha(platform.sim.url, timeout_s=5)).deliver(store) is Delivery.DONE
    store.release()
    platform.ingestor.ingest(parse_event(_echo(A, "ok")))  # its echo: an id no record carries
    _reply_left_by_a_dead_sender(platform, "ok")  # the second "ok", queued for the worker
    platform.worker.on_event(WakeUp(MESSAGE_RECEIVED, "default", A))
    assert platform.texts(A).count("ok") == 2
