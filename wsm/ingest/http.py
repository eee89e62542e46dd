"""The webhook function's HTTP handling (ASGI): method, size, type and signature checks, then ingest.

Served by the Functions Framework's ASGI server (uvicorn workers under gunicorn, ``functions_framework.aio``):
one event loop per process answers every request, and concurrent messages share one Redis round trip
(:class:`wsm.store.group_commit.AsyncGroupCommit`). Checks run cheapest-first and before any parsing, so
hostile input costs little and changes nothing: 405, 413, 415, 408 (body not in by the read deadline), 401
(HMAC over the raw bytes), 400, then Redis. What blocks (the providers' routes, ``/metrics``, a session status)
runs in a thread. The request API is described in ``docs/openapi.yaml``.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from wsm.core.errors import BadRequest, RedisUnavailable
from wsm.core.privacy import mask_chat
from wsm.core.settings import Settings, get_settings
from wsm.ingest.ingestor import Ingestor, Outcome, json_body
from wsm.metrics import endpoint, record
from wsm.providers import inbound
from wsm.store.connection import get_async_redis, get_redis, redis_errors
from wsm.waha.event import Ignored, Message, parse_body, parse_event
from wsm.waha.signature import verify_hmac, verify_timestamp

log = logging.getLogger(__name__)
JSON = "application/json"

_ingestors: dict[int, Ingestor] = {}


async def handle(request: Request) -> Response:
    """Answer one HTTP request to the webhook function."""
    settings = get_settings()
    name = "unknown"  # WAHA's event name, once the body could be read
    method, path, headers = request.method, request.scope["path"], joined(request.headers)
    try:
        if endpoint.is_metrics_path(path):
            status, out_headers, body = await asyncio.to_thread(
                endpoint.answer, method, headers.get("Authorization"), settings
            )
            return Response(body, status, out_headers)
        if path.rstrip("/").endswith("/healthz"):
            if method != "GET":
                return _error("method not allowed; /healthz answers GET", 405, {"Allow": "GET"})
            return await healthz(settings)
        provider = inbound.provider_for_path(path, settings)
        if provider != inbound.WAHA or not inbound.served(provider, settings):  # the Cloud API and Evolution
            raw = await read_body(request, settings) if method == "POST" else b""
            query = request.query_params
            status, out_headers, body = await asyncio.to_thread(
                inbound.handle, provider, method, query, headers, raw, settings
            )
            return Response(body, status, out_headers)
        if method != "POST":
            return _error("method not allowed; WAHA webhooks are POSTed", 405, {"Allow": "POST"})
        raw = await read_body(request, settings)
        if settings.webhook_hmac_key:
            verify_hmac(raw, headers.get("X-Webhook-Hmac"), settings.webhook_hmac_key)
        if settings.webhook_max_skew_s:
            verify_timestamp(headers.get("X-Webhook-Timestamp"), settings.webhook_max_skew_s)
        body = parse_body(raw)
        name = str(body.get("event"))
        if settings.webhook_max_skew_s and str(body.get("timestamp")) != headers.get("X-Webhook-Timestamp"):
            raise BadRequest("X-Webhook-Timestamp does not match the signed body timestamp", status=401)
        event = parse_event(body)
        session_settings = settings if isinstance(event, Ignored) else settings.for_session(event.session)
        client = get_async_redis(session_settings.redis_url)
        outcome = await ingestor(session_settings).ingest_async(event, client)
    except BadRequest as e:
        log.info("refused %s: %s", e.status, e)
        record.webhook_event(name, f"refused_{e.status}")
        return _error(str(e), e.status)
    except RedisUnavailable as e:
        log.warning("redis unavailable, asking WAHA to retry: %s", e)
        record.webhook_event(name, "unavailable")
        return _error("storage unavailable, retry later", 503, {"Retry-After": "2"})
    record.webhook_event(name, outcome.status)
    _log_outcome(event, outcome, settings)
    return Response(outcome.body(), 200, media_type=JSON)


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused before reading when too large or not JSON, and cut off when it comes too slowly
    (uvicorn bounds neither a body's size nor how long it takes)."""
    limit, length = settings.webhook_max_body_bytes, request.headers.get("Content-Length")
    expected = int(length) if length is not None and length.isdigit() else None
    if expected is not None and expected > limit:
        raise BadRequest(f"body larger than {limit} bytes", status=413)
    if request.headers.get("Content-Type", "").partition(";")[0].strip().lower() != JSON:
        raise BadRequest("Content-Type must be application/json", status=415)
    timeout_s = settings.webhook_read_timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BadRequest(f"body larger than {limit} bytes", status=413)
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(f"body not received within {timeout_s:g} s", status=408) from None
    except ClientDisconnect:
        pass
    raw = b"".join(chunks)
    if expected is not None and len(raw) < expected:
        raise BadRequest("body shorter than its Content-Length (the client went away?)")
    return raw


def joined(headers: Headers) -> Headers:
    """The headers with a repeated one's values joined by "," (RFC 9110 5.3), as WSGI servers join them: two
    X-Webhook-Hmac (or X-Webhook-Timestamp, X-Hub-Signature-256) headers make one invalid value, never a choice
    of the first or the last, whichever a proxy before us checked."""
    names = [name.lower() for name, _ in headers.raw]  # bytes: no decoding in the common case, no repeats
    if len(set(names)) == len(names):
        return headers
    values: dict[str, str] = {}
    for name, value in headers.items():
        values[name] = f"{values[name]},{value}" if name in values else value
    return Headers(values)


async def healthz(settings: Settings) -> Response:
    try:
        with redis_errors():
            await get_async_redis(settings.redis_url).ping()
    except RedisUnavailable:
        return Response(json_body({"status": "unhealthy", "redis": "unreachable"}), 503, media_type=JSON)
    return Response(json_body({"status": "ok", "redis": "ok"}), 200, media_type=JSON)


def ingestor(settings: Settings) -> Ingestor:
    """One Ingestor per settings object (tests rebuild settings per test)."""
    key = id(settings)
    found = _ingestors.get(key)
    if found is None:
        if not settings.sessions_file or len(_ingestors) > 256:  # per-session settings live beside each other
            _ingestors.clear()
        found = _ingestors[key] = Ingestor(get_redis(settings.redis_url), settings)
    return found


def _error(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json_body({"error": text}), status, headers, media_type=JSON)


def _log_outcome(event: object, outcome: Outcome, settings: Settings) -> None:
    if isinstance(event, Message) and log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s %s chat=%s", outcome.status, event.direction, event.message_id[-8:],
            mask_chat(event.chat_id, settings.mask_phones),
        )  # fmt: skip
