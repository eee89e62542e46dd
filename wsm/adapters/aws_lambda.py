"""Run the Functions Framework functions on AWS Lambda: the same function code, Lambda events in and out.

Each bundle's ``lambda_handler.py`` (written by ``infra/deploy/bundle.py``) wraps its function with one of:

- :func:`http_handler` (webhook): a Lambda Function URL or HTTP API event (payload format 2.0) or an
  API Gateway REST event (1.0) becomes a WSGI environ, so the function gets a real ``flask.Request``
  (method, path, query, headers, raw body); its return value becomes ``{statusCode, headers, body}``.
- :func:`cloudevent_handler` (worker, notifier): a direct invoke whose payload is a structured-mode
  CloudEvent (JSON with ``specversion``, ``type``, ``source``, ``id``, ``data``) becomes a cloudevents
  ``CloudEvent``. Errors propagate: Lambda reports a FunctionError and the router retries, as it does
  for a 5xx from the Functions Framework.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import flask
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_json
from werkzeug.test import EnvironBuilder

from wsm.core.errors import WsmError

log = logging.getLogger(__name__)

LambdaEvent = dict[str, Any]
LambdaHandler = Callable[[LambdaEvent, Any], dict[str, Any]]
REQUIRED_CLOUDEVENT_KEYS = ("specversion", "type", "source", "id")
TEXT_MIMETYPES = frozenset({"application/json", "application/xml", "application/javascript"})


class BadLambdaEvent(WsmError):
    """The invoke payload is not the kind of event this function takes."""


def http_handler(function: Callable[[flask.Request], Any]) -> LambdaHandler:
    """A Lambda handler answering HTTP events with ``function``, as the Functions Framework would."""
    app = flask.Flask(__name__)  # gives the request context and turns return values into responses

    def handler(event: LambdaEvent, context: Any = None) -> dict[str, Any]:
        v2 = event.get("version") == "2.0"
        with app.request_context(wsgi_environ(event)):
            try:
                response = app.make_response(function(flask.request))
            except Exception:  # the Functions Framework answers 500 too; the traceback goes to the log
                log.exception("%s raised", getattr(function, "__name__", "function"))
                response = app.make_response(({"error": "internal error"}, 500))
        return lambda_response(response, v2)

    return handler


def cloudevent_handler(function: Callable[[CloudEvent], Any]) -> LambdaHandler:
    """A Lambda handler passing a directly invoked structured CloudEvent to ``function``."""

    def handler(event: LambdaEvent, context: Any = None) -> dict[str, Any]:
        cloudevent = parse_cloudevent(event)
        function(cloudevent)
        return {"status": "ok", "id": cloudevent["id"]}

    return handler


def wsgi_environ(event: LambdaEvent) -> dict[str, Any]:
    """The WSGI environ of an HTTP event, in payload format 2.0 (``version: "2.0"``) or 1.0 (``httpMethod``)."""
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
    builder = EnvironBuilder(
        method=method,
        path=path,
        query_string=query,
        headers=headers,
        data=raw,
        environ_base={"REMOTE_ADDR": source_ip or ""},
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def lambda_response(response: flask.Response, v2: bool) -> dict[str, Any]:
    """A Flask response as Lambda's HTTP answer; non-text bodies travel base64-encoded."""
    body = response.get_data()
    textual = response.mimetype.startswith("text/") or response.mimetype in TEXT_MIMETYPES
    textual = textual or response.mimetype.endswith("+json")
    cookies = response.headers.getlist("Set-Cookie")
    headers = {k: v for k, v in response.headers.items() if k.lower() != "set-cookie"}
    out: dict[str, Any] = {
        "statusCode": response.status_code,
        "headers": headers,
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
