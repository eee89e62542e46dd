"""(d) Memory: Redis bytes per waiting chat and per idle conversation, and where the bytes go.

A fresh redis-server without AOF (memory does not depend on it); ``used_memory`` is read before
and after, and the delta divided by the number of chats is what one costs.

- waiting: one chat holds the one slot, then N chats write one short message each and wait;
- idle conversation: N chats each hold a 10-message conversation through the real worker (run
  here, sending to the recording WAHA stand-in): 10 inbound, 10 bot replies, the last inbound
  ("sair") closes it, so inbox and outbox are empty; all 20 ids stay deduplicated (by the history).
  Twice: with 20 messages of 40 characters (the goal's case; ``bench/flows/forty.yaml`` answers each
  with 40 characters) and with the default flow, whose menus make the replies ~150 characters.
  The session's console event stream (``events:stream``, one entry per message in and out) is capped at
  ``EVENTS_STREAM_MAX`` entries whatever the number of chats, so its bytes are taken out of the delta and
  shown on their own: with 1,000 chats its ~10,000 entries would otherwise add ~450 B to each.

``MEMORY USAGE`` (exact, SAMPLES 0) of each key of one sample chat shows where the bytes go;
a session-wide key (queue, notify:due, ready) is shown as its size divided by its members. The queue
bookkeeping of a waiting chat is what being in the queue adds beyond its message: its share of
``queue``, ``notify:due`` and ``ready``, and the state fields ``status`` and ``queued_ms`` (the sample
chat's ``state`` measured with and without them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from bench.bodies import BodyMaker, chat_id, preload
from bench.plan import Plan
from bench.recorder import RecorderClient
from bench.report import Row, num
from bench.stack import bench_settings, client_for, private_redis
from wsm.attendance.worker import Worker
from wsm.conversation.engine import Engine
from wsm.conversation.flow import load_flow
from wsm.conversation.history import read_history
from wsm.ingest.ingestor import Ingestor
from wsm.store import keys
from wsm.store.connection import get_redis
from wsm.waha.client import WahaClient
from wsm.waha.event import parse_event

WAITING, IDLE, IDLE_40 = "mem-waiting", "mem-idle", "mem-idle-40"
CONVERSATION = ("oi", "1", "Maria Souza", "15/12", "2", "Maria S. Souza", "16/12", "menu", "9", "sair")
FORTY_FLOW = Path(__file__).parent / "flows" / "forty.yaml"  # every bot reply is 40 characters
CONVERSATION_40 = (  # 40 characters each, the last one ends it (the flow's leave phrase)
    "Bom dia! Queria marcar uma consulta, ok?",
    "Meu nome completo é Maria Souza Lima....",
    "Pode ser na terça ou na quarta de manhã?",
    "Prefiro com a doutora Ana, se possível..",
    "Tenho convênio, aceitam o plano Saúde+??",
    "Meu telefone é este mesmo, pode ligar...",
    "Chego uns dez minutos antes, tudo bem?..",
    "Preciso levar algum exame ou documento??",
    "Certo, muito obrigada pela atenção hoje!",
    "pode encerrar o atendimento, obrigada!!!",
)
TARGET_WAITING_B = 300
TARGET_IDLE_B = 4096


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


CHAT_KEYS = ("history", "seen", "inbox", "state")
QUEUE_FIELDS = ("status", "queued_ms")


def waiting_chat_keys(client: redis.Redis, sk: keys.SessionKeys, chat: str) -> dict[str, float]:
    ck = sk.chat(chat)
    out: dict[str, float] = {name: usage(client, getattr(ck, name)) for name in CHAT_KEYS}
    for name, key, card in (
        ("queue", sk.queue, client.zcard),
        ("notify:due", sk.notify_due, client.zcard),
        ("ready", sk.ready, client.scard),
    ):
        members = card(key)
        is_member = client.zscore(key, chat) is not None if card == client.zcard else client.sismember(key, chat)
        out[f"{name} (÷ {members:,})"] = round(usage(client, key) / members, 1) if members and is_member else 0
    return out


def queue_fields_bytes(client: redis.Redis, sk: keys.SessionKeys, chat: str) -> int:
    """What ``status`` and ``queued_ms`` add to the chat's state hash (measured on a copy without them)."""
    ck = sk.chat(chat)
    copy = ck.state + ":bench-copy"  # same slot
    client.copy(ck.state, copy)
    with_fields = usage(client, copy)
    client.hdel(copy, *QUEUE_FIELDS)
    without = usage(client, copy)
    client.delete(copy)
    return with_fields - without


def idle_chat_keys(client: redis.Redis, sk: keys.SessionKeys, chat: str) -> dict[str, float]:
    ck = sk.chat(chat)
    out: dict[str, float] = {name: usage(client, getattr(ck, name)) for name in ("history", "seen", "state")}
    out["inbox + outbox + lease + notify"] = sum(usage(client, k) for k in (ck.inbox, ck.outbox, ck.lease, ck.notify))
    return out


def waiting_bytes(client: redis.Redis, url: str, chats: int) -> dict:
    preload(url, {"max_active": 1}, WAITING, [chat_id(701, 0)])  # takes the one slot
    before = used_memory(client)
    preload(url, {"max_active": 1}, WAITING, [chat_id(701, i) for i in range(1, chats + 1)])
    delta = used_memory(client) - before
    sk = keys.SessionKeys(WAITING)
    middle = chat_id(701, chats // 2)
    sample = waiting_chat_keys(client, sk, middle)
    fields = queue_fields_bytes(client, sk, middle)
    sample["state: status + queued_ms"] = fields
    shares = [v for k, v in sample.items() if k.startswith(("queue (", "notify:due (", "ready ("))]
    return {
        "chats": chats,
        "waiting": client.zcard(sk.queue),
        "bytes_per_chat": round(delta / chats),
        "bookkeeping_per_chat": round(sum(shares) + fields),
        "sample": sample,
    }


def idle_bytes(
    client: redis.Redis,
    url: str,
    recorder: RecorderClient,
    chats: int,
    session: str = IDLE,
    conversation: tuple[str, ...] = CONVERSATION,
    flow: Path | None = None,
) -> dict:
    settings = bench_settings(redis_url=url, waha_url=recorder.url, max_active=64, typing_ms_per_char=0)
    app = get_redis(url)
    ingestor = Ingestor(app, settings)
    worker = Worker(app, settings, WahaClient(recorder.url, "", 10.0), Engine(load_flow(flow)))
    sk, maker = keys.SessionKeys(session), BodyMaker(session, "")
    names = [chat_id(702, i) for i in range(chats)]

    def converse(chat: str) -> None:
        for text in conversation:
            ingestor.ingest(parse_event(maker.body(chat, text)))
            worker.serve(sk, chat)

    converse(chat_id(703, 0))  # first use: scripts loaded, session keys created
    before, stream_before = used_memory(client), client.memory_usage(sk.events_stream, samples=0) or 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(converse, names))
    stream = (client.memory_usage(sk.events_stream, samples=0) or 0) - stream_before
    delta = used_memory(client) - before - stream
    complete = sum(_is_idle_conversation(client, sk, chat) for chat in names)
    sample = idle_chat_keys(client, sk, names[chats // 2])
    texts = [m["text"] for m in read_history(client, session, names[chats // 2])]
    mean_chars = round(sum(map(len, texts)) / len(texts)) if texts else 0
    return {
        "chats": chats,
        "complete": complete,
        "bytes_per_chat": round(delta / chats),
        "stream_bytes": stream,
        "stream_entries": client.xlen(sk.events_stream),
        "mean_chars": mean_chars,
        "sample": sample,
    }


def _is_idle_conversation(client: redis.Redis, sk: keys.SessionKeys, chat: str) -> bool:
    ck = sk.chat(chat)
    pipe = client.pipeline(transaction=False)
    pipe.llen(ck.history)
    pipe.exists(ck.inbox, ck.outbox, ck.lease)
    pipe.hget(ck.state, "status")
    history, leftovers, status = pipe.execute()
    return history == 2 * 20 and leftovers == 0 and status == "closed"  # id, body per message


def run(plan: Plan, recorder: RecorderClient) -> tuple[dict, list[Row]]:
    recorder.reset(0)
    with private_redis(appendonly=False) as server:
        client = client_for(server.url)
        figures = {
            "waiting": waiting_bytes(client, server.url, plan.memory_waiting_chats),
            "idle_40": idle_bytes(
                client, server.url, recorder, plan.memory_idle_chats, IDLE_40, CONVERSATION_40, FORTY_FLOW
            ),
            "idle": idle_bytes(client, server.url, recorder, plan.memory_idle_chats),
            "redis_version": client.info("server")["redis_version"],
        }
        client.close()
    w, i, f = figures["waiting"], figures["idle"], figures["idle_40"]

    def where(sample: dict[str, float]) -> str:
        return ", ".join(f"{k} {num(v)}" for k, v in sample.items())

    return figures, [
        Row(
            "d",
            f"queue bookkeeping per waiting chat ({w['chats']:,} chats)",
            f"{num(w['bookkeeping_per_chat'])} B (queue + notify:due + ready shares + status, queued_ms)",
            f"≤ {TARGET_WAITING_B} B",
            w["bookkeeping_per_chat"] <= TARGET_WAITING_B and w["waiting"] == w["chats"],
        ),
        Row(
            "d",
            "  bytes per waiting chat, all (its message too)",
            f"{num(w['bytes_per_chat'])} B (used_memory delta ÷ chats; {w['waiting']:,} waiting)",
        ),
        Row("d", "  where: MEMORY USAGE, one waiting chat", where(w["sample"])),
        Row(
            "d",
            f"bytes per idle conversation, 20 msgs of {f['mean_chars']} chars ({f['chats']:,} chats)",
            f"{num(f['bytes_per_chat'])} B (used_memory delta less the event stream, ÷ chats; "
            f"{f['complete']:,} closed with 20 in history)",
            f"≤ {TARGET_IDLE_B // 1024} KB",
            f["bytes_per_chat"] <= TARGET_IDLE_B and f["complete"] == f["chats"],
        ),
        Row("d", "  where: MEMORY USAGE, one such conversation", where(f["sample"])),
        Row(
            "d",
            "  not in it: the session's console event stream (capped)",
            f"{num(f['stream_bytes'])} B for its last {f['stream_entries']:,} events (keys.EVENTS_STREAM_MAX), "
            f"whatever the number of chats; {num(f['stream_bytes'] / f['chats'])} B each of these {f['chats']:,}",
        ),
        Row(
            "d",
            f"  the default flow's conversation, 20 msgs of {i['mean_chars']} chars (its menus are long)",
            f"{num(i['bytes_per_chat'])} B (used_memory delta less the event stream, ÷ chats; "
            f"{i['complete']:,} closed with 20 in history)",
        ),
        Row("d", "  where: MEMORY USAGE, one default-flow conversation", where(i["sample"])),
    ]


def conditions(plan: Plan) -> str:
    return (
        f"fresh Redis without AOF; {plan.memory_waiting_chats:,} waiting chats (one short message each); "
        f"{plan.memory_idle_chats:,} closed conversations of 10 inbound + 10 replies through the real worker, "
        "of 40-character messages (bench/flows/forty.yaml) and of the default flow"
    )
