"""``wsm history`` as an operator runs it: a real process reading the private Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from infra.waha_sim import payloads as wp
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.waha.event import parse_event

WSM = str(Path(sys.executable).parent / "wsm")
ALICE = "5511988887777@c.us"


def run_wsm(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=redis_url)
    return subprocess.run([WSM, *args], env=env, capture_output=True, text=True, timeout=30)


def ingest_all(r: redis.Redis, bodies: list[dict]) -> None:
    ingestor = Ingestor(r, Settings.from_env())
    for body in bodies:
        ingestor.ingest(parse_event(body))


def test_history_prints_each_message_once_oldest_first(redis_url: str, r: redis.Redis) -> None:
    first = wp.message_event(ALICE, "Oi, quero marcar uma consulta", timestamp=1764120000)
    media = {"url": "http://waha/f.pdf", "mimetype": "application/pdf", "filename": "exame.pdf", "error": None}
    second = wp.message_event(ALICE, "segue o exame", media=media, timestamp=1764120060)
    reply = wp.envelope("message.any", wp.message_payload(ALICE, "Recebido!", from_me=True, timestamp=1764120100))
    ingest_all(r, [first, second, first, reply])  # the repeat must not show twice

    text = run_wsm(redis_url, "history", "--chat", ALICE)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 4
    assert "<- Oi, quero marcar uma consulta" in lines[0]
    assert "exame.pdf" in lines[1] and "-> Recebido!" in lines[2]
    assert "** owner bot -> with_operator (phone), by phone" in lines[3]  # typed on the phone: a human took over

    as_json = run_wsm(redis_url, "history", "--session", "default", "--chat", ALICE, "--json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert rows.pop()["kind"] == "transition"
    assert [(m["direction"], m["text"]) for m in rows] == [
        ("in", "Oi, quero marcar uma consulta"),
        ("in", "segue o exame"),
        ("out", "Recebido!"),
    ]
    assert all({"id", "direction", "text", "timestamp", "status"} <= m.keys() for m in rows)
    assert rows[1]["media"]["mimetype"] == "application/pdf" and rows[1]["media"]["filename"] == "exame.pdf"


def test_history_with_redis_down_is_a_clear_error() -> None:
    from infra.platform.redis_server import free_port

    res = run_wsm(f"redis://127.0.0.1:{free_port()}/0", "history", "--chat", ALICE)
    assert res.returncode != 0
    assert "redis unavailable" in res.stderr and "Traceback" not in res.stderr
