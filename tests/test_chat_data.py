"""A person's data on request: ``wsm export`` and ``wsm erase`` after a real conversation through the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from tests.conftest import snapshot
from tests.test_attendance import Platform, make_platform
from wsm.conversation.history import read_history
from wsm.delivery.deadletter import EVENT, write_dead_letter
from wsm.ops.chat_data import erase_chat, export_chat
from wsm.store import keys

WSM = str(Path(sys.executable).parent / "wsm")
ANA, BRUNO, CARLA = "5511966661111@c.us", "5511977772222@c.us", "5511988883333@c.us"
SK = keys.SessionKeys("default")


@pytest.fixture
def platform(r: redis.Redis, sim: WahaSimulator, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """One slot, and a short history so that old ids are trimmed while the chat's seen list remembers them."""
    return make_platform(r, sim, monkeypatch, WSM_HISTORY_MAX="4")


def run_wsm(redis_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=redis_url, WSM_MAX_ACTIVE="1")
    return subprocess.run([WSM, *args], env=env, input=stdin, capture_output=True, text=True, timeout=30)


def converse(platform: Platform, sim: WahaSimulator) -> None:
    """Ana is served (several turns, a message another integration sent through WAHA's API, acks, a refused send);
    Bruno waits; Carla too. (A reply typed on the phone, source "app", would hand Ana to a human instead.)"""
    for text in ("oi", "1", "Ana Souza"):
        platform.say(ANA, text)
    platform.say(BRUNO, "olá")
    platform.say(CARLA, "bom dia")
    own = wp.envelope("message.any", wp.message_payload(ANA, "Aqui é a recepção", from_me=True, source="api"))
    platform.say(ANA, "", own)
    platform.say(ANA, "", wp.ack_event(own["payload"]["id"], 3, ANA))
    platform.say(ANA, "", wp.ack_event(f"true_{ANA}_NEVERARRIVED", 2, ANA))  # an early ack that stays
    sim.fail_next(400, count=2)  # WAHA refuses the next reply for good: a dead-letter entry names Ana
    platform.say(ANA, "15/12")
    for chat in (ANA, BRUNO):  # what the router leaves after giving up
        write_dead_letter(platform.r, EVENT, "HTTP 500", 100, type="message.received", session="default", chat=chat)


def traces(r: redis.Redis, needle: str) -> list[str]:
    """Keys whose name, or whose value read by type (and its DUMP), contains ``needle``."""
    found = []
    for name in r.scan_iter(count=1000):
        kind = r.type(name)
        if kind == "string":
            value: object = r.get(name)
        elif kind == "hash":
            value = r.hgetall(name)
        elif kind == "list":
            value = r.lrange(name, 0, -1)
        elif kind == "set":
            value = sorted(r.smembers(name))
        elif kind == "zset":
            value = r.zrange(name, 0, -1, withscores=True)
        else:
            value = kind
        dumped = r.dump(name) or b""  # raw bytes, not decoded
        if needle in name or needle in json.dumps(value, ensure_ascii=False) or needle.encode() in dumped:
            found.append(name)
    return found


def test_export_holds_everything_about_the_chat(platform: Platform, sim: WahaSimulator, redis_url: str) -> None:
    converse(platform, sim)
    res = run_wsm(redis_url, "export", "--chat", ANA)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    texts = [m["text"] for m in doc["history"]]
    assert texts[-3:-1] == ["Aqui é a recepção", "15/12"] and "15/12 às" in texts[-1]  # slots of that day
    assert doc["history"][-1]["status"] == "FAILED"  # the reply WAHA refused
    assert doc["history"] == read_history(platform.r, "default", ANA)
    assert doc["state"]["status"] == "active" and doc["attendance"]["active"] is True
    assert doc["attendance"]["queue_position"] is None
    assert {e["chat"] for e in doc["deadletter"]} == {ANA} and len(doc["deadletter"]) == 2
    assert list(doc["early_acks"].values()) == [{"status": "DEVICE", "ack": 2}]
    assert doc["dedupe_ids"] and not set(doc["dedupe_ids"]) & {m["id"] for m in doc["history"]}  # trimmed, remembered
    waiting = export_chat(platform.r, "default", CARLA)
    assert waiting["attendance"]["queue_position"] == 2 and waiting["notify"]["position"] == "2"


def test_erase_leaves_no_trace_and_gives_the_slot_to_the_next(
    platform: Platform, sim: WahaSimulator, redis_url: str
) -> None:
    converse(platform, sim)
    digits = ANA.partition("@")[0]
    assert len(traces(platform.r, digits)) >= 6  # the check below can see what it looks for (history, seen, ack...)
    bruno_before = read_history(platform.r, "default", BRUNO)

    res = run_wsm(redis_url, "erase", "--chat", ANA, "--yes")
    assert res.returncode == 0, res.stderr
    assert f"erased {ANA} in session default" in res.stdout and "2 dead-letter entries" in res.stdout
    assert "left active" in res.stdout and "slot given to *********2222@c.us" in res.stdout

    assert traces(platform.r, digits) == []
    assert traces(platform.r, ANA) == []
    assert platform.r.zrange(SK.active, 0, -1) == [BRUNO]
    assert platform.r.zrange(SK.queue, 0, -1) == [CARLA]
    assert read_history(platform.r, "default", BRUNO) == bruno_before
    assert [json.loads(e)["chat"] for e in platform.r.lrange(keys.DEADLETTER, 0, -1)] == [BRUNO]
    platform.dispatch(BRUNO)
    assert platform.texts(BRUNO)[-1].startswith("É a sua vez!")


def test_erasing_a_waiting_chat_moves_the_queue_up(platform: Platform, sim: WahaSimulator) -> None:
    converse(platform, sim)
    erased = erase_chat(platform.r, "default", BRUNO, max_active=1)
    assert {"queue", "notify:due"} <= set(erased.left) and "active" not in erased.left
    assert erased.admitted == []
    assert platform.r.zrange(SK.queue, 0, -1) == [CARLA]
    assert platform.r.zrange(SK.notify_due, 0, -1) == [CARLA]
    assert traces(platform.r, BRUNO.partition("@")[0]) == []


def test_erase_asks_first_and_changes_nothing_when_refused(
    platform: Platform, sim: WahaSimulator, redis_url: str
) -> None:
    converse(platform, sim)
    before = snapshot(platform.r)
    res = run_wsm(redis_url, "erase", "--chat", ANA, stdin="n\n")
    assert res.returncode != 0 and "Aborted" in res.stderr
    assert snapshot(platform.r) == before


def test_erase_of_an_unknown_chat_is_harmless(platform: Platform, sim: WahaSimulator) -> None:
    converse(platform, sim)
    before = snapshot(platform.r)
    erased = erase_chat(platform.r, "default", "5511900009999@c.us", max_active=1)
    assert (erased.keys_deleted, erased.left, erased.deadletter_entries) == ([], [], 0)
    assert snapshot(platform.r) == before
