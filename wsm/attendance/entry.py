"""How a wake-up reaches the worker and the notifier over HTTP (ASGI): a CloudEvent, a Pub/Sub push, or a scrape.

Both functions are ``functions_framework.aio.http`` functions served by uvicorn workers: their HTTP parsing and
routing cost a third of what the Functions Framework's Flask CloudEvent path did per event (``bench.profile``).
The handler itself is synchronous (Redis, the provider's API, a typing pause, a model call): it runs in a thread,
at most ``THREADS`` at once per process (default 40; the Flask path read it for its thread pool).
What a POST may be, as the Flask path read it:

* a CloudEvent in binary or structured mode: our router, or Eventarc;
* a raw Pub/Sub push envelope ``{"message": {"data", "messageId", …}, "subscription"}``: the push subscriptions
  of ``WSM_PUBSUB_TOPIC``, read as a ``google.cloud.pubsub.topic.v1.messagePublished`` event.

Answers: 200 once handled, and for a malformed wake-up (acknowledged: retrying cannot fix it); 400 for a body
that is neither; 500 on Redis trouble, so the router or Pub/Sub retries; ``GET /metrics`` as every function.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import anyio
from cloudevents.exceptions import GenericException
from cloudevents.http import from_http
from starlette.requests import Request
from starlette.responses import Response

from wsm.core.errors import RedisUnavailable
from wsm.core.settings import get_settings
from wsm.metrics import endpoint
from wsm.store.events import PUBSUB_PUBLISHED

log = logging.getLogger(__name__)
THREADS = int(os.environ.get("THREADS") or 40)  # handlers at once per process: each may wait on a typing pause

WakeUpHandler = Callable[[str, object], None]  # (CloudEvent type, data): Handler.handle_cloudevent


class NotAnEvent(ValueError):
    """A POST that is neither a CloudEvent nor a Pub/Sub push: 400."""


def read_event(headers: dict[str, str], body: bytes) -> tuple[str, object]:
    """(type, data) of a POSTed CloudEvent or Pub/Sub push envelope; raises :class:`NotAnEvent` for anything else."""
    found = _binary_json(headers, body)
    if found is not None:
        return found
    try:
        event = from_http(headers, body)
    except GenericException as e:
        envelope = _json_or_none(body)
        if isinstance(envelope, dict) and "subscription" in envelope and isinstance(envelope.get("message"), dict):
            return PUBSUB_PUBLISHED, {"message": envelope["message"], "subscription": envelope["subscription"]}
        raise NotAnEvent(f"neither a CloudEvent nor a Pub/Sub push ({type(e).__name__})") from None
    return event["type"], event.data


BINARY_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")


def _binary_json(headers: dict[str, str], body: bytes) -> tuple[str, object] | None:
    """The router's own shape (binary mode, JSON data) read directly: the SDK's ``from_http`` was a twentieth of
    the worker's CPU per message. Anything else, or anything odd about it, is left to the SDK."""
    if headers.get("content-type") != "application/json" or headers.get("ce-specversion") != "1.0":
        return None
    if not all(headers.get(h) for h in BINARY_REQUIRED):
        return None
    data = _json_or_none(body)
    return (headers["ce-type"], data) if data is not None else None


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


async def serve(request: Request, handle: WakeUpHandler) -> Response:
    """Answer one HTTP request to the worker or the notifier function."""
    method = request.method
    if endpoint.is_metrics_path(request.scope["path"]):
        status, headers, body = await anyio.to_thread.run_sync(
            endpoint.answer, method, request.headers.get("authorization"), get_settings()
        )
        return Response(body, status, headers)
    if method != "POST":
        return _error("method not allowed; events are POSTed", 405, {"Allow": "POST"})
    raw = await request.body()
    try:
        ce_type, data = read_event(dict(request.headers), raw)
    except NotAnEvent as e:
        log.warning("refused a POST of %d bytes: %s", len(raw), e)
        return _error(str(e), 400)
    try:
        await anyio.to_thread.run_sync(handle, ce_type, data, limiter=threads())
    except RedisUnavailable as e:
        log.warning("%s (%s): answered 500, the event will be retried", type(e).__name__, e)
        return _error("redis unavailable; retry", 500)
    except Exception:
        log.exception("handling a %s event failed; it will be retried", ce_type[:100])
        return _error("internal error", 500)
    return Response(b"OK", 200, media_type="text/plain")


def threads() -> anyio.CapacityLimiter:
    """The running loop's thread limiter, sized to ``THREADS``."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    if limiter.total_tokens != THREADS:
        limiter.total_tokens = THREADS
    return limiter


def _error(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"error": text}).encode(), status, headers, media_type="application/json")
