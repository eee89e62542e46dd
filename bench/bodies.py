"""WAHA ``message`` webhook bodies for the load generators, signed as WAHA signs them, and a fast queue filler.

Every body a :class:`BodyMaker` makes has a payload id it never made before, so every request is a
real ingest and never a duplicate. wrk reads them from a file, one ``<hmac hex>\\t<json>`` per line.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from infra.waha_sim import payloads as wp
from wsm.ingest.ingestor import Ingestor
from wsm.store.connection import get_redis
from wsm.waha.event import parse_event

BODY_BYTES = 900


def chat_id(group: int, index: int) -> str:
    """A person's chat id; ``group`` keeps the chats of different runs apart."""
    return f"55{group:03d}{index:08d}@c.us"


class BodyMaker:
    """Signed message bodies of one session; ``pad_to`` pads the text until a body is about that many bytes."""

    _serials = itertools.count()

    def __init__(self, session: str, hmac_key: str, pad_to: int = 0) -> None:
        self.session = session
        self.hmac_key = hmac_key
        self.pad_to = pad_to
        self.run = next(self._serials)
        self._ids = itertools.count()

    def body(self, chat: str, text: str = "oi") -> dict:
        key_id = f"B{self.run:04d}X{next(self._ids):012d}"
        body = wp.message_event(chat, text, session=self.session, key_id=key_id)
        if self.pad_to:
            size = len(wp.encode(body))
            body["payload"]["body"] = text + " " + "x" * max(0, self.pad_to - size - 1)
        return body

    def signed(self, chat: str, text: str = "oi") -> tuple[str, bytes, dict[str, str]]:
        """(payload id, raw bytes, headers as WAHA sends them with HMAC)."""
        body = self.body(chat, text)
        raw = wp.encode(body)
        return body["payload"]["id"], raw, wp.headers(raw, body, self.hmac_key)

    def write(self, path: Path, count: int, chats: Sequence[str]) -> Path:
        """``count`` bodies for wrk, cycling through ``chats`` (so each chat writes count/len(chats) times)."""
        with path.open("w") as f:
            for i in range(count):
                body = self.body(chats[i % len(chats)], "Olá, gostaria de marcar uma consulta.")
                raw = wp.encode(body)
                f.write(f"{wp.sign(raw, self.hmac_key)}\t{raw.decode()}\n")
        return path


def preload(redis_url: str, settings_changes: dict, session: str, chats: Sequence[str], processes: int = 2) -> None:
    """Ingest one message from each chat through the real ingest script (``Ingestor``), in a few processes."""
    if len(chats) < 2000:
        _ingest_chats(redis_url, settings_changes, session, list(chats))
        return
    step = -(-len(chats) // processes)
    slices = [list(chats[i : i + step]) for i in range(0, len(chats), step)]
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        list(pool.map(_ingest_chats, *zip(*[(redis_url, settings_changes, session, s) for s in slices], strict=True)))


def _ingest_chats(redis_url: str, settings_changes: dict, session: str, chats: list[str]) -> None:
    from bench.stack import bench_settings  # a spawned process imports this module alone

    settings = bench_settings(redis_url=redis_url, **settings_changes)
    ingestor = Ingestor(get_redis(redis_url), settings)
    maker = BodyMaker(session, "")
    for chat in chats:
        event = parse_event(maker.body(chat, "Olá, quero ser atendido."))
        outcome = ingestor.ingest(event)
        if outcome.status != "accepted":
            raise RuntimeError(f"preload: {outcome}")
