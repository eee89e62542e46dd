"""``GET /metrics`` in Prometheus' text format, for any function: the counters of every process writing to this
machine's multiprocess directory, plus the Redis gauges read now.

Protected by ``WSM_METRICS_TOKEN``: Prometheus sends it as ``Authorization: Bearer <token>``. Unset, the endpoint
is off (403); a missing or wrong token gets 401. A Flask function (the console) calls :func:`metrics_response`
for the path ``/metrics``; the ASGI ones (webhook, worker, notifier) and AWS Lambda call :func:`answer`.
"""

from __future__ import annotations

import hmac
import json
import logging

import flask
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from wsm.core.settings import Settings, get_settings
from wsm.metrics import multiproc_dir
from wsm.metrics.gauges import RedisGauges
from wsm.store.connection import get_redis

log = logging.getLogger(__name__)
PATH = "/metrics"


def is_metrics_path(path: str) -> bool:
    return path.rstrip("/").endswith(PATH)


def answer(method: str, authorization: str | None, settings: Settings) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body for a request to ``/metrics``, whatever serves it (Flask, ASGI, Lambda)."""
    if method != "GET":
        return _error("method not allowed; /metrics answers GET", 405, {"Allow": "GET"})
    if not settings.metrics_token:
        return _error("metrics are off: set WSM_METRICS_TOKEN", 403)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.metrics_token.encode()):
        return _error(
            "a valid Authorization: Bearer <WSM_METRICS_TOKEN> is required", 401, {"WWW-Authenticate": "Bearer"}
        )
    return 200, {"Content-Type": CONTENT_TYPE_LATEST}, render(settings)


def metrics_response(request: flask.Request, settings: Settings | None = None) -> flask.Response:
    """Answer a Flask request for ``/metrics``: refused (405/403/401 with a JSON error) or the figures."""
    status, headers, body = answer(request.method, request.headers.get("Authorization"), settings or get_settings())
    return flask.Response(body, status, headers=headers)


def render(settings: Settings) -> bytes:
    """Every counter of this machine's processes and the Redis gauges, as Prometheus text."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir.ensure())
    registry.register(RedisGauges(get_redis(settings.redis_url), settings))
    return generate_latest(registry)


def _error(text: str, status: int, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps({"error": text}).encode()
