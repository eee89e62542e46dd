"""A chat written by the old layout (``log`` ids + ``msgs`` JSON + a ``seen:<id>`` per message) stays readable,
and ``wsm migrate`` folds it into the compact history without losing a record or a dedupe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from infra.waha_sim import payloads as wp
from wsm.conversation.history import read_history
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.ops.chat_data import erase_chat, export_chat
from wsm.store import keys
from wsm.store.scripts import Scripts
from wsm.waha.event import parse_event

WSM = str(Path(sys.executable).parent / "wsm")
ANA = "5511933334444@c.us"
SK = keys.SessionKeys("default")
CK = SK.chat(ANA)

OLD_RECORDS = [  # what the old ingest / worker / outbox wrote (full key names, spaces as json.dumps puts them)
    {"id": f"false_{ANA}_3EB0A1", "direction": "in", "text": "oi", "timestamp": 1764680000, "status": "received",
     "ack": None, "source": "app", "received_ms": 1764680000100},
    {"id": f"true_{ANA}_BAE5B1", "direction": "out", "text": "Olá! Como posso ajudar?", "timestamp": 1764680000.2,
     "status": "READ", "source": "bot", "sent_ms": 1764680000300, "local_id": "wsm_" + "a" * 32, "ack": 3},
    {"id": f"false_{ANA}_3EB0A2", "direction": "in", "text": "Quero marcar 📅", "timestamp": 1764680010,
     "status": "received", "ack": 1, "source": "app", "received_ms": 1764680010100,
     "media": {"mimetype": "image/jpeg", "url": "http://waha/f.jpg", "filename": None, "caption": "", "error": None}},
    {"id": "rec_" + "b" * 32, "kind": "tool", "name": "find_slots", "arguments": {"day": "15/12"},
     "timestamp": 1764680011.0},
    {"id": "wsm_" + "c" * 32, "direction": "out", "text": "Qual dia?", "timestamp": 1764680012.0,
     "status": "PENDING", "source": "bot"},
]  # fmt: skip


def write_old_layout(r: redis.Redis, records: list[dict], ttl_s: int = 86400) -> None:
    """The keys exactly as the old scripts left them: RPUSH log id, HSET msgs id JSON, SET seen:<id> NX EX."""
    for record in records:
        r.hset(CK.msgs, record["id"], json.dumps(record, ensure_ascii=False))
        r.rpush(CK.log, record["id"])
        r.set(SK.seen(record["id"]), "1", nx=True, ex=ttl_s)
    r.expire(CK.log, 3600)
    r.expire(CK.msgs, 3600)
    r.sadd(keys.SESSIONS, "default")


def run_wsm(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=redis_url)
    return subprocess.run([WSM, *args], env=env, capture_output=True, text=True, timeout=60)


def test_an_old_layout_chat_is_readable_before_migration(r: redis.Redis, redis_url: str) -> None:
    write_old_layout(r, OLD_RECORDS)
    assert read_history(r, "default", ANA) == OLD_RECORDS
    assert read_history(r, "default", ANA, last=2) == OLD_RECORDS[-2:]
    res = run_wsm(redis_url, "history", "--chat", ANA, "--json")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line) for line in res.stdout.splitlines()] == OLD_RECORDS


def test_migrate_keeps_every_record_in_order_and_every_dedupe(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_old_layout(r, OLD_RECORDS)
    monkeypatch.setenv("WSM_MAX_ACTIVE", "5")
    ingestor = Ingestor(r, Settings.from_env())
    newer = wp.message_event(ANA, "depois da atualização")
    assert ingestor.ingest(parse_event(newer)).status == "accepted"  # the new code wrote before migrate ran
    expected = [*OLD_RECORDS, read_history(r, "default", ANA)[-1]]
    assert read_history(r, "default", ANA) == expected  # old first, then new

    res = run_wsm(redis_url, "migrate")
    assert res.returncode == 0, res.stderr
    assert "session default: 1 chats, 5 records migrated" in res.stdout
    assert not r.exists(CK.log, CK.msgs)
    assert read_history(r, "default", ANA) == expected
    assert r.ttl(CK.history) > 0

    for record in OLD_RECORDS:  # the old markers expire; the history answers for these ids now
        r.delete(SK.seen(record["id"]))
    for record in OLD_RECORDS[:3]:
        body = wp.message_event(ANA, "?", key_id=record["id"].rsplit("_", 1)[1], from_me=record["id"].startswith("t"))
        body["event"] = "message.any"
        assert ingestor.ingest(parse_event(body)).status == "duplicate", record["id"]
    ack = wp.ack_event(OLD_RECORDS[0]["id"], 3, ANA)
    assert ingestor.ingest(parse_event(ack)).status == "updated"
    assert read_history(r, "default", ANA)[0]["ack"] == 3

    again = run_wsm(redis_url, "migrate", "--session", "default")
    assert again.returncode == 0 and "0 chats, 0 records" in again.stdout
    assert read_history(r, "default", ANA)[1:] == expected[1:]


def test_migrate_past_the_window_keeps_old_ids_in_the_seen_list(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_old_layout(r, OLD_RECORDS)
    monkeypatch.setenv("WSM_DEDUPE_WINDOW", "2")
    res = subprocess.run(
        [WSM, "migrate"], env=dict(os.environ, REDIS_URL=redis_url), capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    remembered = export_chat(r, "default", ANA)["dedupe_ids"]
    assert remembered == [rec["id"] for rec in OLD_RECORDS[:3]]  # the 3 outside the last 2 records, oldest first
    for record in OLD_RECORDS:
        r.delete(SK.seen(record["id"]))
    first = wp.message_event(ANA, "?", key_id="3EB0A1")
    assert Ingestor(r, Settings.from_env()).ingest(parse_event(first)).status == "duplicate"


def test_migrate_changes_nothing_when_the_old_keys_moved_meanwhile(r: redis.Redis) -> None:
    write_old_layout(r, OLD_RECORDS)
    before = (r.lrange(CK.log, 0, -1), r.hgetall(CK.msgs))
    result = Scripts(r).migrate_chat(
        keys=[CK.log, CK.msgs, CK.history, CK.seen],
        args=[len(OLD_RECORDS) - 1, len(OLD_RECORDS), "[]", "[]", 1000, 50, 1000, 86400, 3600],
    )
    assert result == ["changed"]
    assert (r.lrange(CK.log, 0, -1), r.hgetall(CK.msgs)) == before
    assert not r.exists(CK.history, CK.seen)


def test_export_and_erase_cover_an_unmigrated_chat(r: redis.Redis) -> None:
    write_old_layout(r, OLD_RECORDS)
    doc = export_chat(r, "default", ANA)
    assert doc["history"] == OLD_RECORDS
    assert set(doc["dedupe_markers"]) == {SK.seen(rec["id"]) for rec in OLD_RECORDS}
    erased = erase_chat(r, "default", ANA, max_active=1)
    assert {CK.log, CK.msgs} <= set(erased.keys_deleted)
    assert [name for name in r.scan_iter() if "933334444" in name] == []
