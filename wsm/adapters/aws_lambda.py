"""Run the Functions Framework functions on AWS Lambda: the same function code, Lambda events in and out.

Each bundle's ``lambda_handler.py`` (written by ``infra/deploy/bundle.py``) wraps its function with one of:

- :func:`http_handler` (webhook, console): a Lambda Function URL or HTTP API event (payload format 2.0) or
  an API Gateway REST event (1.0) becomes the request the function takes — a ``starlette.requests.Request``
  for an async (ASGI) function such as the webhook, run on one event loop kept for the container's life,
  or a real ``flask.Request`` (a WSGI environ) otherwise; its answer becomes ``{statusCode, headers, body}``.
- :func:`cloudevent_handler` (worker, notifier): a direct invoke whose payload is a structured-mode
  CloudEvent (JSON with ``specversion``, ``type``, ``source``, ``id``, ``data``) becomes a cloudevents
  ``CloudEvent``. Errors propagate: Lambda reports a FunctionError and the router retries, as it does
  for a 5xx from the Functions Framework.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import flask
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_json
from starlette.requests import Request
from starlette.responses import Response
from werkzeug.test import EnvironBuilder

from wsm.core.errors import WsmError

log = logging.getLogger(__name__)

LambdaEvent = dict[str, Any]
LambdaHandler = Callable[[LambdaEvent, Any], dict[str, Any]]
REQUIRED_CLOUDEVENT_KEYS = ("specversion", "type", "source", "id")
TEXT_MIMETYPES = frozenset({"application/json", "application/xml", "application/javascript"})


class BadLambdaEvent(WsmError):
    """The invoke payload is not the kind of event this function takes."""


def http_handler(function: Callable[..., Any]) -> LambdaHandler:
    """A Lambda handler answering HTTP events with ``function``, as the Functions Framework would."""
    if inspect.iscoroutinefunction(function):
        return _asgi_handler(function)
    app = flask.Flask(__name__)  # gives the request context and turns return values into responses

    def handler(event: LambdaEvent, context: Any = None) -> dict[str, Any]:
        v2 = event.get("version") == "2.0"
        with app.request_context(wsgi_environ(event)):
            try:
                response = app.make_response(function(flask.request))
            except Exception:  # the Functions Framework answers 500 too; the traceback goes to the log
                log.exception("%s raised", getattr(function, "__name__", "function"))
                response = app.make_response(({"error": "internal error"}, 500))
        headers = list(response.headers.items())
        return lambda_response(response.status_code, headers, response.get_data(), response.mimetype, v2)

    return handler


_loop: asyncio.AbstractEventLoop | None = None  # the process's, kept: its asyncio Redis clients belong to it


def _asgi_handler(function: Callable[[Request], Any]) -> LambdaHandler:
    def handler(event: LambdaEvent, context: Any = None) -> dict[str, Any]:
        global _loop
        if _loop is None:
            _loop = asyncio.new_event_loop()
        request = starlette_request(event)
        try:
            response: Response = _loop.run_until_complete(function(request))
        except Exception:
            log.exception("%s raised", getattr(function, "__name__", "function"))
            response = Response(b'{"error":"internal error"}', 500, media_type="application/json")
        mimetype = response.headers.get("content-type", "").partition(";")[0].strip()
        v2 = event.get("version") == "2.0"
        return lambda_response(response.status_code, response.headers.items(), response.body, mimetype, v2)

    return handler


def cloudevent_handler(function: Callable[[CloudEvent], Any]) -> LambdaHandler:
    """A Lambda handler passing a directly invoked structured CloudEvent to ``function``."""

    def handler(event: LambdaEvent, context: Any = None) -> dict[str, Any]:
        cloudevent = parse_cloudevent(event)
        function(cloudevent)
        return {"status": "ok", "id": cloudevent["id"]}

    return handler


def http_parts(event: LambdaEvent) -> tuple[str, str, str, dict[str, str], bytes, str]:
    """Method, path, query string, headers, raw body and source IP of an HTTP event, in payload format 2.0
    (``version: "2.0"``) or 1.0 (``httpMethod``)."""
    if event.get("version") == "2.0":
        http = event.get("requestContext", {}).get("http", {})
        method, path, query = http.get("method"), event.get("rawPath", "/"), event.get("rawQueryString", "")
        headers = dict(event.get("headers") or {})
        if event.get("cookies"):
            headers["cookie"] = "; ".join(event["cookies"])
        source_ip = http.get("sourceIp")
    elif "httpMethod" in event:
        method, path = event["httpMethod"], event.get("path") or "/"
        multi_query = event.get("multiValueQueryStringParameters")
        query = (
            urlencode(multi_query, doseq=True) if multi_query else urlencode(event.get("queryStringParameters") or {})
        )
        multi = event.get("multiValueHeaders") or {}
        headers = {k: ", ".join(v) for k, v in multi.items()} if multi else dict(event.get("headers") or {})
        source_ip = event.get("requestContext", {}).get("identity", {}).get("sourceIp")
    else:
        raise BadLambdaEvent("not an HTTP event: expected payload format 2.0 (version) or 1.0 (httpMethod)")
    if not method:
        raise BadLambdaEvent("HTTP event without a method")
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    return method, path, query, headers, raw, source_ip or ""


def wsgi_environ(event: LambdaEvent) -> dict[str, Any]:
    """The WSGI environ of an HTTP event."""
    method, path, query, headers, raw, source_ip = http_parts(event)
    builder = EnvironBuilder(
        method=method, path=path, query_string=query, headers=headers, data=raw, environ_base={"REMOTE_ADDR": source_ip}
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def starlette_request(event: LambdaEvent) -> Request:
    """The ASGI request of an HTTP event: its scope, and a receive that hands over the whole body at once."""
    method, path, query, headers, raw, source_ip = http_parts(event)
    if "content-length" not in {k.lower() for k in headers}:
        headers = {**headers, "content-length": str(len(raw))}
    scope = {
        "type": "http", "http_version": "1.1", "method": method.upper(), "scheme": "https",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()],
        "client": (source_ip, 0), "server": ("lambda", 443),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(scope, receive)


def lambda_response(status: int, headers: Any, body: bytes, mimetype: str, v2: bool) -> dict[str, Any]:
    """An HTTP answer as Lambda's; non-text bodies travel base64-encoded. ``headers``: (name, value) pairs."""
    textual = mimetype.startswith("text/") or mimetype in TEXT_MIMETYPES or mimetype.endswith("+json")
    cookies = [v for k, v in headers if k.lower() == "set-cookie"]
    out: dict[str, Any] = {
        "statusCode": status,
        "headers": {k: v for k, v in headers if k.lower() != "set-cookie"},
        "body": body.decode() if textual else base64.b64encode(body).decode(),
        "isBase64Encoded": not textual,
    }
    if cookies:
        out.update({"cookies": cookies} if v2 else {"multiValueHeaders": {"Set-Cookie": cookies}})
    return out


def parse_cloudevent(event: LambdaEvent) -> CloudEvent:
    """A structured-mode CloudEvent (``data`` as JSON or ``data_base64``); anything else is :class:`BadLambdaEvent`."""
    if not isinstance(event, dict):
        raise BadLambdaEvent(f"expected a CloudEvent object, got {type(event).__name__}")
    missing = [key for key in REQUIRED_CLOUDEVENT_KEYS if not event.get(key)]
    if missing:
        raise BadLambdaEvent(f"not a structured CloudEvent: missing {', '.join(missing)}")
    try:
        return from_json(json.dumps(event))
    except GenericException as e:
        raise BadLambdaEvent(f"invalid CloudEvent: {e}") from e
