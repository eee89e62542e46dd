"""``wsm operator add|list|remove`` as an administrator runs them: a real process against the private Redis."""

from __future__ import annotations

import redis

from infra.platform.redis_server import free_port
from tests.test_cli_history import run_wsm
from wsm.attendance.operators import Operators
from wsm.store import keys


def test_add_prints_a_password_that_logs_in_and_list_and_remove_follow(redis_url: str, r: redis.Redis) -> None:
    added = run_wsm(redis_url, "operator", "add", "ana")
    assert added.returncode == 0, added.stderr
    password = added.stdout.rsplit(":", 1)[1].strip()
    assert Operators(r).verify("ana", password) and not Operators(r).verify("ana", password + "x")
    assert run_wsm(redis_url, "operator", "list").stdout.split() == ["ana"]
    assert run_wsm(redis_url, "operator", "remove", "ana").returncode == 0
    assert run_wsm(redis_url, "operator", "list").stdout.split() == []


def test_refusals_are_one_line_errors_that_change_nothing(redis_url: str, r: redis.Redis) -> None:
    assert run_wsm(redis_url, "operator", "add", "ana").returncode == 0
    before = r.hgetall(keys.OPERATORS)
    for args in (("add", "ana"), ("add", "Ana Maria!"), ("remove", "bruno")):
        refused = run_wsm(redis_url, "operator", *args)
        assert refused.returncode == 1 and refused.stderr.startswith("Error: "), refused.stderr
        assert "Traceback" not in refused.stderr
    assert r.hgetall(keys.OPERATORS) == before


def test_redis_down_is_a_clear_error() -> None:
    refused = run_wsm(f"redis://127.0.0.1:{free_port()}/0", "operator", "list")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("Error: "), refused.stderr
