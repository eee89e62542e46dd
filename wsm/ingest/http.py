"""The webhook function's HTTP handling: method, size, type and signature checks, then ingest.

Checks run cheapest-first and before any parsing, so hostile input costs little and
changes nothing: 405, 413, 415, 408 (body not in by the read deadline), 401 (HMAC over
the raw bytes), 400, then Redis. The request API is described in ``docs/openapi.yaml``.
"""

from __future__ import annotations

import logging
from typing import Any

import flask
from werkzeug.exceptions import ClientDisconnected

from wsm.core.errors import BadRequest, RedisUnavailable
from wsm.core.privacy import mask_chat
from wsm.core.settings import Settings, get_settings
from wsm.ingest.ingestor import Ingestor, Outcome
from wsm.ingest.read_deadline import read_deadlines
from wsm.metrics import record
from wsm.metrics.endpoint import is_metrics_path, metrics_response
from wsm.providers import inbound
from wsm.store.connection import get_redis, redis_errors
from wsm.waha.event import Ignored, Message, parse_body, parse_event
from wsm.waha.signature import verify_hmac, verify_timestamp

log = logging.getLogger(__name__)
Response = flask.Response | tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]

_ingestors: dict[int, Ingestor] = {}


def handle(request: flask.Request) -> Response:
    """Answer one HTTP request to the webhook function."""
    settings = get_settings()
    name = "unknown"  # WAHA's event name, once the body could be read
    try:
        if is_metrics_path(request.path):
            return metrics_response(request, settings)
        if request.path.rstrip("/").endswith("/healthz"):
            if request.method != "GET":
                return {"error": "method not allowed; /healthz answers GET"}, 405, {"Allow": "GET"}
            return healthz(settings)
        provider = inbound.provider_for_path(request.path, settings)
        if provider != inbound.WAHA or not inbound.served(provider, settings):  # the Cloud API and Evolution
            raw = read_body(request, settings) if request.method == "POST" else b""
            status, headers, body = inbound.handle(
                provider, request.method, request.args, request.headers, raw, settings
            )
            return flask.Response(body, status, headers)
        if request.method != "POST":
            return {"error": "method not allowed; WAHA webhooks are POSTed"}, 405, {"Allow": "POST"}
        raw = read_body(request, settings)
        if settings.webhook_hmac_key:
            verify_hmac(raw, request.headers.get("X-Webhook-Hmac"), settings.webhook_hmac_key)
        if settings.webhook_max_skew_s:
            verify_timestamp(request.headers.get("X-Webhook-Timestamp"), settings.webhook_max_skew_s)
        body = parse_body(raw)
        name = str(body.get("event"))
        if settings.webhook_max_skew_s and str(body.get("timestamp")) != request.headers.get("X-Webhook-Timestamp"):
            raise BadRequest("X-Webhook-Timestamp does not match the signed body timestamp", status=401)
        event = parse_event(body)
        session_settings = settings if isinstance(event, Ignored) else settings.for_session(event.session)
        outcome = ingestor(session_settings).ingest(event)
    except BadRequest as e:
        log.info("refused %s: %s", e.status, e)
        record.webhook_event(name, f"refused_{e.status}")
        return {"error": str(e)}, e.status
    except RedisUnavailable as e:
        log.warning("redis unavailable, asking WAHA to retry: %s", e)
        record.webhook_event(name, "unavailable")
        return {"error": "storage unavailable, retry later"}, 503, {"Retry-After": "2"}
    record.webhook_event(name, outcome.status)
    _log_outcome(event, outcome, settings)
    return outcome.as_response()


def read_body(request: flask.Request, settings: Settings) -> bytes:
    """The raw body, refused before reading when too large or not JSON, and cut off when it comes too slowly."""
    limit, expected = settings.webhook_max_body_bytes, request.content_length
    if expected is not None and expected > limit:
        raise BadRequest(f"body larger than {limit} bytes", status=413)
    if request.mimetype != "application/json":
        raise BadRequest("Content-Type must be application/json", status=415)
    timeout_s = settings.webhook_read_timeout_s
    with read_deadlines.watch(request.environ.get("gunicorn.socket"), timeout_s) as expired:
        try:
            raw = request.stream.read(limit + 1)
        except ClientDisconnected:
            raw = b""
    if len(raw) > limit:
        raise BadRequest(f"body larger than {limit} bytes", status=413)
    if (expected is None or len(raw) < expected) and expired():
        raise BadRequest(f"body not received within {timeout_s:g} s", status=408)
    if expected is not None and len(raw) < expected:
        raise BadRequest("body shorter than its Content-Length (the client went away?)")
    return raw


def healthz(settings: Settings) -> Response:
    try:
        with redis_errors():
            get_redis(settings.redis_url).ping()
    except RedisUnavailable:
        return {"status": "unhealthy", "redis": "unreachable"}, 503
    return {"status": "ok", "redis": "ok"}, 200


def ingestor(settings: Settings) -> Ingestor:
    """One Ingestor per settings object (tests rebuild settings per test)."""
    key = id(settings)
    found = _ingestors.get(key)
    if found is None:
        if not settings.sessions_file or len(_ingestors) > 256:  # per-session settings live beside each other
            _ingestors.clear()
        found = _ingestors[key] = Ingestor(get_redis(settings.redis_url), settings)
    return found


def _log_outcome(event: object, outcome: Outcome, settings: Settings) -> None:
    if isinstance(event, Message) and log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s %s chat=%s", outcome.status, event.direction, event.message_id[-8:],
            mask_chat(event.chat_id, settings.mask_phones),
        )  # fmt: skip
