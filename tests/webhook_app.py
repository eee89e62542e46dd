"""The webhook function in-process: its ASGI app, as the Functions Framework builds it, behind Starlette's TestClient.

The client is entered (``with TestClient(app)``), so one event loop serves every request it sends, as in a
uvicorn worker; ``get_async_redis`` keeps one asyncio Redis client per loop. Each client is closed, and its
loop ended, when the test that opened it ends.
"""

from __future__ import annotations

from typing import Any

import pytest
from functions_framework import create_app
from starlette.testclient import TestClient

SOURCE = "functions/webhook/main.py"


def webhook_app() -> Any:
    """The webhook's ASGI (Starlette) app, built now: its settings are read from the environment of the moment."""
    return create_app("webhook", SOURCE)


def webhook_client(request: pytest.FixtureRequest, app: Any = None) -> TestClient:
    """A TestClient on ``app`` (by default a fresh :func:`webhook_app`), entered now and closed at the end of the
    test (or of the fixture) whose ``request`` this is."""
    client = TestClient(webhook_app() if app is None else app)
    client.__enter__()
    request.addfinalizer(lambda: client.__exit__(None, None, None))
    return client
