"""Several WhatsApp numbers (WSM_SESSIONS_FILE): the file's rules, and three sessions side by side — one
per provider, each with its own flow, schedule and slots — showing nothing crosses between them."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import pytest
import yaml

from infra.platform.redis_server import free_port
from infra.waha_sim.dialects import PHONE_NUMBER_ID
from tests import booking_helpers
from tests.provider_system import ProviderSystem, stand_in
from wsm.conversation.history import read_history
from wsm.core.sessions import SessionsFileError, load_sessions, session_where
from wsm.core.settings import Settings
from wsm.providers.outbound import client_for
from wsm.store import keys
from wsm.store.connection import get_redis


def write_sessions(path: Path, sessions: dict) -> Path:
    path.write_text(yaml.safe_dump({"sessions": sessions}, allow_unicode=True), encoding="utf-8")
    load_sessions.cache_clear()
    return path


def settings_with(monkeypatch: pytest.MonkeyPatch, sessions_file: Path | str, **env: str) -> Settings:
    monkeypatch.setenv("WSM_SESSIONS_FILE", str(sessions_file))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


# --- the file ---------------------------------------------------------------------------------


def test_each_session_gets_its_overrides_and_the_rest_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sessions(tmp_path / "sessions.yaml", {
        "centro": {"provider": "waha", "slots": 3, "flow_file": "flows/centro.yaml"},
        "sul": {"provider": "cloud", "phone_number_id": 1098765, "templates": {"reminder": {"name": "lembrete"}}},
        "norte": {"provider": "evolution", "instance": "clinica-norte"},
    })  # fmt: skip
    base = settings_with(monkeypatch, path, WSM_MAX_ACTIVE="1", WSM_DEDUPE_TTL_S="3600")
    centro, sul, norte = (base.for_session(n) for n in ("centro", "sul", "norte"))
    assert (centro.provider, centro.max_active, centro.flow_file) == ("waha", 3, str(tmp_path / "flows/centro.yaml"))
    assert (sul.provider, sul.max_active, sul.meta_phone_number_id) == ("cloud", 1, "1098765")
    assert json.loads(sul.meta_templates) == {"reminder": {"name": "lembrete"}}
    assert sul.dedupe_ttl_s == sul.meta_dedupe_ttl_s > 7 * 86400  # Meta retries for days
    assert centro.dedupe_ttl_s == norte.dedupe_ttl_s == 3600
    assert norte.evolution_instance == "clinica-norte"
    assert base.for_session("sul") is sul  # built once: per-settings caches hold
    assert base.for_session("not-in-the-file") is base
    assert session_where(base, "meta_phone_number_id", "1098765", "default") == "sul"
    assert session_where(base, "meta_phone_number_id", "111", "default") is None
    assert [type(client_for(s)).__name__ for s in (centro, sul, norte)] == [
        "WahaClient",
        "CloudClient",
        "EvolutionClient",
    ]


def test_without_the_file_everything_is_one_session_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSM_SESSIONS_FILE", raising=False)
    monkeypatch.delenv("WSM_PROVIDER", raising=False)
    settings = Settings.from_env()
    assert settings.provider == "waha"
    assert settings.for_session("default") is settings and settings.for_session("other") is settings
    assert session_where(settings, "meta_phone_number_id", "123", "default") == "default"


@pytest.mark.parametrize(
    ("sessions", "message"),
    [
        ({"a": {"provider": "twilio"}}, "provider must be one of"),
        ({"a": {"slot": 2}}, "unknown key"),
        ({"a": {"slots": 0}}, "positive integer"),
        ({"a{x}": {}}, "without braces"),
        ({"a": {"phone_number_id": "1"}, "b": {"phone_number_id": "1"}}, "share meta_phone_number_id"),
        ({"a": {"templates": ["x"]}}, "templates must be a mapping"),
        ({"a": ["provider"]}, "must be a mapping"),
    ],
)
def test_a_bad_sessions_file_fails_with_the_session_and_key_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sessions: dict, message: str
) -> None:
    path = write_sessions(tmp_path / "sessions.yaml", sessions)
    settings = settings_with(monkeypatch, path)
    with pytest.raises(SessionsFileError, match=message):
        settings.for_session("a")


def test_a_missing_or_empty_sessions_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty.yaml").write_text("sessions: {}\n")
    for path in (tmp_path / "missing.yaml", tmp_path / "empty.yaml"):
        load_sessions.cache_clear()
        with pytest.raises(SessionsFileError, match=str(path)):
            settings_with(monkeypatch, path).for_session("a")


# --- three numbers side by side ---------------------------------------------------------------

P1, P2 = "5511922220001@c.us", "5511922220002@c.us"  # the same two people write to all three numbers


def norte_flow(path: Path) -> Path:
    raw = yaml.safe_load(resources.files("wsm.conversation").joinpath("flows", "default.pt-BR.yaml").read_text())
    flow = copy.deepcopy(raw)
    flow["vars"]["business"] = "Clínica Norte"
    path.write_text(yaml.safe_dump(flow, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.slow
def test_three_sessions_side_by_side_share_nothing(tmp_path: Path) -> None:
    port = free_port()
    sims = {
        "centro": stand_in("waha", port, session="centro"),
        "sul": stand_in("cloud", port),
        "norte": stand_in("evolution", port, session="norte"),
    }
    bruno = booking_helpers.ALWAYS_OPEN["providers"][0] | {"id": "bruno", "name": "Dr. Bruno"}
    sessions = write_sessions(tmp_path / "sessions.yaml", {
        "centro": {"provider": "waha", "slots": 1},
        "sul": {"provider": "cloud", "slots": 2, "phone_number_id": PHONE_NUMBER_ID},
        "norte": {"provider": "evolution", "slots": 1, "flow_file": str(norte_flow(tmp_path / "norte.yaml")),
                  "schedule_file": str(booking_helpers.write(tmp_path / "norte-schedule.yaml", providers=[bruno]))},
    })  # fmt: skip
    s = ProviderSystem(tmp_path, sims, port, WSM_SESSIONS_FILE=str(sessions))
    try:
        for session in sims:
            s.say(P1, "oi", session)
        for session in sims:
            s.say(P2, "oi", session)
        assert "Clínica Exemplo" in s.wait_texts(P1, 1, "centro")[0]
        assert "Clínica Exemplo" in s.wait_texts(P1, 1, "sul")[0]
        assert "Clínica Norte" in s.wait_texts(P1, 1, "norte")[0]  # its own flow
        assert s.wait_texts(P2, 1, "centro")[0].startswith("Você é o 1º da fila")  # one slot
        assert "Como posso ajudar?" in s.wait_texts(P2, 1, "sul")[0]  # two slots: served at once
        assert s.wait_texts(P2, 1, "norte")[0].startswith("Você é o 1º da fila")

        s.say(P1, "sair", "centro")  # frees centro's slot only
        assert s.wait_text(P2, "É a sua vez!", "centro")
        r = get_redis(s.local.redis_url)
        norte_p2 = P2.replace("@c.us", "@s.whatsapp.net")
        assert r.zrank(keys.SessionKeys("norte").queue, norte_p2) == 0  # still first in norte's queue
        assert not any("É a sua vez" in t for t in s.texts(P2, "norte"))

        for text, expected in [("1", "nome completo"), ("Rita", "Horários livres"), ("amanhã às 10h", "às 10:00"),
                               ("1", "Confirma Consulta"), ("sim", "Agendado!")]:  # fmt: skip
            s.say(P2, text, "sul")
            s.wait_text(P2, expected, "sul")
        assert "com Dra. Ana" in s.texts(P2, "sul")[-1]
        s.say(P1, "1", "norte")
        s.wait_text(P1, "nome completo", "norte")
        s.say(P1, "Rui", "norte")
        assert "Dr. Bruno" in s.wait_text(P1, "Horários livres", "norte")[-1]  # its own schedule

        booked = {n: r.zcard(keys.ScheduleKeys(n).index) for n in sims}
        assert booked == {"centro": 0, "sul": 1, "norte": 0}
        assert [m["text"] for m in read_history(r, "centro", P1) if m["direction"] == "in"] == ["oi", "sair"]
        assert [m["text"] for m in read_history(r, "norte", P1.replace("@c.us", "@s.whatsapp.net"))
                if m["direction"] == "in"] == ["oi", "1", "Rui"]  # fmt: skip
        assert {c.json.get("session") for c in sims["centro"].calls if c.json} == {"centro"}
        assert sorted(r.smembers(keys.SESSIONS)) == ["centro", "norte", "sul"]
    finally:
        s.stop()
