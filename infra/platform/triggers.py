"""Who gets which event: the router's trigger table and the targets it delivers to.

The table is plain data (event type -> target names), checked once when a
:class:`Triggers` is built, so a typo fails at start instead of routing nothing.
A target is anything with ``name``, ``endpoint``, ``deliver(event)`` and
``close()``: an HTTP POST of a binary-mode CloudEvent (what the Functions
Framework and Cloud Run expect), or an AWS Lambda invoke with a structured one
(a target URL ``lambda:<function name>``, see :func:`make_target`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from wsm.core.errors import WsmError
from wsm.core.http_client import Answer, CurlClient, HttpClient, Transfers, TransportError
from wsm.store import events

WORKER = "worker"
NOTIFIER = "notifier"

LAMBDA_SCHEME = "lambda:"
DEFAULT_REGION = "us-east-1"  # a Lambda target's region when AWS_DEFAULT_REGION / AWS_REGION are unset

# target name -> (environment variable, default URL)
TARGET_URLS: Mapping[str, tuple[str, str]] = {
    WORKER: ("WSM_WORKER_URL", "http://127.0.0.1:8081/"),
    NOTIFIER: ("WSM_NOTIFIER_URL", "http://127.0.0.1:8082/"),
}

# event type -> names of the targets it triggers
SUBSCRIPTIONS: Mapping[str, tuple[str, ...]] = {
    events.MESSAGE_RECEIVED: (WORKER,),
    events.CHAT_ADMITTED: (WORKER,),
    events.QUEUE_CHANGED: (NOTIFIER,),
    events.SLOT_FREED: (WORKER, NOTIFIER),  # the worker admits the queue's head, the notifier tells who moved up
    events.TICK: (WORKER, NOTIFIER),
}


class DeliveryFailed(WsmError):
    """A target did not accept an event (5xx, timeout, connection error); the router retries."""


class DeliveryRejected(DeliveryFailed):
    """The target refused the event itself (a 4xx other than 408/429): the same event would be refused
    again, so the router dead-letters it at once instead of retrying."""


RETRYABLE_4XX = frozenset({408, 429})  # timeout, too many requests: the event was fine, try again later


class Target(Protocol):
    """A named function the router can deliver CloudEvents to."""

    name: str

    @property
    def endpoint(self) -> str:
        """Where it lives, safe to print (no credentials)."""
        ...

    def deliver(self, event: CloudEvent) -> None:
        """Hand over one event; return only once it was accepted, else raise :class:`DeliveryFailed`."""
        ...

    def close(self) -> None:
        """Release connections (the router calls it on stop)."""
        ...


class HttpTarget:
    """POSTs the event in CloudEvents binary mode over keep-alive connections (:mod:`wsm.core.http_client`).

    One delivery per message: urllib3 and the SDK's ``to_binary`` were two thirds of the router's CPU in
    ``python -m bench.profile``; the headers are written here as the SDK writes them (:func:`binary_mode`).
    """

    def __init__(self, name: str, url: str, timeout_s: float) -> None:
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self._http = HttpClient(url, {}, timeout_s, connect_retries=0)  # the router has its own retries

    @property
    def endpoint(self) -> str:
        return public_url(self.url)

    def deliver(self, event: CloudEvent) -> None:
        headers, body = binary_mode(event)
        try:
            answer: Answer | TransportError = self._http.request("POST", "", body, headers)
        except TransportError as e:
            answer = e
        failure = self._failure(answer)
        if failure is not None:
            raise failure

    @property
    def can_start(self) -> bool:
        """Whether :meth:`start` works: it needs libcurl (the urllib3 fallback only delivers with :meth:`deliver`)."""
        return isinstance(self._http, CurlClient)

    def start(self, event: CloudEvent, transfers: Transfers, done: Callable[[DeliveryFailed | None], None]) -> None:
        """Begin delivering ``event`` among ``transfers``; ``done`` gets None once accepted, else what :meth:`deliver`
        would raise. A line break in an attribute raises :class:`DeliveryRejected` here, before anything is sent."""
        headers, body = binary_mode(event)
        transfers.start(self._http, "POST", "", body, headers, lambda answer: done(self._failure(answer)))  # type: ignore[arg-type]

    def _failure(self, answer: Answer | TransportError) -> DeliveryFailed | None:
        if isinstance(answer, TransportError):  # its text never holds the URL
            return DeliveryFailed(f"timeout after {self.timeout_s:g}s" if answer.timed_out else str(answer))
        if 400 <= answer.status < 500 and answer.status not in RETRYABLE_4XX:
            return DeliveryRejected(f"HTTP {answer.status}")
        if not 200 <= answer.status < 300:
            return DeliveryFailed(f"HTTP {answer.status}")
        return None

    def close(self) -> None:
        self._http.close()


def binary_mode(event: CloudEvent) -> tuple[list[str], bytes]:
    """The HTTP headers and body of ``event`` in binary mode, as ``cloudevents.conversion.to_binary`` makes them
    (``ce-`` + each attribute; ``datacontenttype`` is the Content-Type; the data as JSON)."""
    headers = []
    for name, value in event.get_attributes().items():
        text = str(value)
        if "\r" in text or "\n" in text:
            raise DeliveryRejected(f"attribute {name!r} holds a line break")
        headers.append(f"Content-Type: {text}" if name == "datacontenttype" else f"ce-{name}: {text}")
    return headers, json.dumps(event.get_data()).encode()


class LambdaTarget:
    """Invokes an AWS Lambda function (on AWS or LocalStack) with a structured CloudEvent.

    The invoke is synchronous (``RequestResponse``) so the router learns the outcome: a function
    that raised (``FunctionError``) or an API failure is :class:`DeliveryFailed`, retried like a
    5xx from :class:`HttpTarget`. botocore's own retries are off: the router has its own.
    ``client`` is a boto3 Lambda client; by default one from boto3's own configuration
    (credentials, ``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL`` for LocalStack, e.g. http://localhost:4566).
    """

    MAX_POOL_CONNECTIONS = 64  # the router's default concurrency; boto3 clients are thread-safe

    def __init__(self, name: str, function_name: str, timeout_s: float, client: Any = None) -> None:
        if not function_name:
            raise ValueError(f"target {name!r}: a Lambda target needs a function name ({LAMBDA_SCHEME}NAME)")
        self.name = name
        self.function_name = function_name
        self.timeout_s = timeout_s
        self._client = client
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return LAMBDA_SCHEME + self.function_name

    def deliver(self, event: CloudEvent) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # only Lambda targets need boto3 (in the image)

        _, payload = to_structured(event)
        try:
            response = self._lambda().invoke(
                FunctionName=self.function_name, InvocationType="RequestResponse", Payload=payload
            )
            body = response["Payload"].read()
        except ClientError as e:
            raise DeliveryFailed(f"lambda {e.response.get('Error', {}).get('Code', 'error')}") from e
        except BotoCoreError as e:  # connection errors, timeouts
            raise DeliveryFailed(type(e).__name__) from e
        if response.get("FunctionError"):  # the message may hold user data: keep the error type only
            raise DeliveryFailed(f"lambda FunctionError {response['FunctionError']}: {_error_type(body)}")
        if response.get("StatusCode") != 200:
            raise DeliveryFailed(f"lambda invoke status {response.get('StatusCode')}")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _lambda(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=min(5.0, self.timeout_s),
                    read_timeout=self.timeout_s,
                    retries={"total_max_attempts": 1},
                    max_pool_connections=self.MAX_POOL_CONNECTIONS,
                )
                region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or DEFAULT_REGION
                self._client = boto3.session.Session(region_name=region).client("lambda", config=config)
            return self._client


def _error_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("errorType") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"


class Triggers:
    """The checked trigger table: event type -> the targets it triggers."""

    def __init__(self, subscriptions: Mapping[str, Iterable[str]], targets: Iterable[Target]) -> None:
        by_name: dict[str, Target] = {}
        for target in targets:
            if target.name in by_name:
                raise ValueError(f"two targets named {target.name!r}")
            by_name[target.name] = target
        routes: dict[str, tuple[Target, ...]] = {}
        for event_type, names in subscriptions.items():
            if event_type not in events.TYPES:
                raise ValueError(f"unknown event type in trigger table: {event_type!r}")
            unknown = [name for name in names if name not in by_name]
            if unknown:
                raise ValueError(f"{event_type!r} triggers unknown targets {unknown}")
            routes[event_type] = tuple(by_name[name] for name in names)
        self.targets: tuple[Target, ...] = tuple(by_name.values())
        self._routes = routes

    def targets_for(self, event_type: str) -> tuple[Target, ...]:
        """Targets subscribed to ``event_type`` (maybe none); an unknown type is an error."""
        if event_type not in events.TYPES:
            raise ValueError(f"unknown event type: {event_type!r}")
        return self._routes.get(event_type, ())

    def describe(self) -> list[str]:
        """One line per route, for the start-up banner."""
        return [
            f"{event_type} -> " + ", ".join(f"{t.name} ({t.endpoint})" for t in targets)
            for event_type, targets in self._routes.items()
        ]

    def close(self) -> None:
        for target in self.targets:
            target.close()


def make_target(name: str, url: str, timeout_s: float) -> Target:
    """``lambda:<function name>`` is a :class:`LambdaTarget`, anything else an :class:`HttpTarget`."""
    if url.startswith(LAMBDA_SCHEME):
        return LambdaTarget(name, url.removeprefix(LAMBDA_SCHEME), timeout_s)
    return HttpTarget(name, url, timeout_s)


def url_triggers(
    urls: Mapping[str, str],
    timeout_s: float,
    subscriptions: Mapping[str, Iterable[str]] = SUBSCRIPTIONS,
) -> Triggers:
    """The trigger table with a target per ``name -> url`` (HTTP, or ``lambda:NAME``; see :func:`make_target`)."""
    return Triggers(subscriptions, [make_target(name, url, timeout_s) for name, url in urls.items()])


def public_url(url: str) -> str:
    """``url`` without user info or query, which may carry secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
