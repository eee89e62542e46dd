"""The console's Flask app on the private Redis, and logging in through its real form (CSRF token included)."""

from __future__ import annotations

import re
from typing import Any

import flask
import pytest
import redis
from flask.testing import FlaskClient

from wsm.attendance.operators import Operators
from wsm.console.app import create_app
from wsm.core.settings import Settings

SECRET = "console-test-secret-0123456789"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def console_app(monkeypatch: pytest.MonkeyPatch, **env: str) -> flask.Flask:
    for name, value in {"WSM_CONSOLE_SECRET": SECRET, "WSM_CONSOLE_SSE_S": "1", **env}.items():
        monkeypatch.setenv(name, value)
    return create_app(Settings.from_env())


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def login(client: FlaskClient, name: str, password: str) -> Any:
    form = client.get("/login").get_data(as_text=True)
    return client.post("/login", data={"name": name, "password": password, "csrf": csrf_of(form)})


def operator(r: redis.Redis, name: str = "ana") -> str:
    return Operators(r).add(name)


def logged_in(app: flask.Flask, r: redis.Redis, name: str = "ana") -> tuple[FlaskClient, str]:
    """A client logged in as a new operator ``name``, and the CSRF token of its session."""
    client = app.test_client()
    assert login(client, name, operator(r, name)).status_code == 302
    return client, csrf_of(client.get("/queues").get_data(as_text=True))
