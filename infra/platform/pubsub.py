"""Delivery through GCP Pub/Sub: the router publishes each wake-up once to a topic, push subscriptions fan it out.

With ``WSM_PUBSUB_TOPIC=projects/<project>/topics/<topic>`` the router's only target is
:class:`PubSubTarget`: every doorbell and tick is published to the topic (data: the wake-up JSON;
attributes ``type`` and ``session``), and Pub/Sub takes over what the router does locally: one
push subscription per function (``<topic>-worker``, ``<topic>-notifier``) POSTs it to the
function with its own retry (exponential backoff) and, after :data:`MAX_DELIVERY_ATTEMPTS`, moves
it to the dead-letter topic ``<topic>-dead`` (kept by the pull subscription ``<topic>-dead``).

A push request is the JSON envelope ``{"message": {"data", "attributes", "messageId",
"publishTime"}, "subscription"}`` without CloudEvent headers; the Functions Framework turns it
into a ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent, the same type Eventarc sends
in binary mode, and :meth:`wsm.store.events.WakeUp.from_cloudevent` unwraps both.

Each subscription filters on the ``type`` attribute by the router's trigger table, so a function
only gets its own events (the emulator ignores filters: there every function gets every event,
which is harmless, since a function reads what the keys say is pending).
The same :class:`Topology` is created on the emulator (``make local``, tests) and printed as
gcloud commands by ``infra/deploy/gcp.py``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent

from infra.platform.triggers import SUBSCRIPTIONS, DeliveryFailed, Triggers
from wsm.core.errors import BadEvent
from wsm.store import events
from wsm.store.events import WakeUp

PUBSUB = "pubsub"  # the router's single target in Pub/Sub mode
MAX_DELIVERY_ATTEMPTS = 5  # Pub/Sub's minimum: then the message goes to the dead-letter topic
ACK_DEADLINE_S = 60  # a push waits this long for the function's answer (the router's own timeout)
MIN_RETRY_S, MAX_RETRY_S = 1, 60  # Pub/Sub's exponential backoff between push attempts
TOPIC_PATH = re.compile(
    r"projects/(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])/topics/(?P<topic>[A-Za-z][\w.~+%-]{2,254})"
)


def parse_topic(path: str) -> tuple[str, str]:
    """``projects/P/topics/T`` -> (P, T); anything else is a ValueError naming the expected form."""
    match = TOPIC_PATH.fullmatch(path.strip())
    if not match:
        raise ValueError(f"WSM_PUBSUB_TOPIC must look like projects/<project>/topics/<topic>, got {path!r}")
    return match["project"], match["topic"]


def subscription_filter(target: str, subscriptions: Mapping[str, Iterable[str]] = SUBSCRIPTIONS) -> str:
    """The Pub/Sub filter that passes exactly the event types ``target`` is subscribed to."""
    types = sorted(t for t, names in subscriptions.items() if target in names)
    if not types:
        raise ValueError(f"no event triggers {target!r}")
    return " OR ".join(f'attributes.type = "{t}"' for t in types)


@dataclass(frozen=True)
class Topology:
    """The topic, its dead-letter topic and the subscriptions of one deployment, by name."""

    project: str
    topic: str

    @classmethod
    def from_path(cls, path: str) -> Topology:
        return cls(*parse_topic(path))

    @property
    def topic_path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}-dead"

    def subscription(self, target: str) -> str:
        return f"{self.topic}-{target}"

    def path(self, kind: str, name: str) -> str:
        return f"projects/{self.project}/{kind}/{name}"


class PubSubTarget:
    """Publishes each event to the topic and returns once Pub/Sub stored it (else :class:`DeliveryFailed`)."""

    name = PUBSUB

    def __init__(self, topic_path: str, timeout_s: float, publisher: Any = None) -> None:
        parse_topic(topic_path)
        self.topic_path = topic_path
        self.timeout_s = timeout_s
        self._publisher = publisher
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.topic_path

    def deliver(self, event: CloudEvent) -> None:
        from google.api_core.exceptions import DeadlineExceeded, GoogleAPICallError  # the router's extra

        try:
            wake = WakeUp.from_cloudevent(event["type"], event.data)
        except BadEvent as e:
            raise DeliveryFailed(str(e)) from e
        attributes = {"type": wake.type, **({"session": wake.session} if wake.session else {})}
        message = {"data": wake.to_json().encode(), "attributes": attributes}
        try:  # one synchronous call, no client-side retry: the router retries, with its backoff and dead letters
            self._client().publish(topic=self.topic_path, messages=[message], timeout=self.timeout_s, retry=None)
        except DeadlineExceeded as e:
            raise DeliveryFailed(f"publish timeout after {self.timeout_s:g}s") from e
        except GoogleAPICallError as e:
            raise DeliveryFailed(f"publish failed: {type(e).__name__}") from e

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.transport.close()

    def _client(self) -> Any:
        """The GAPIC publisher (``PUBSUB_EMULATOR_HOST`` honoured): synchronous, unlike the batching
        ``google.cloud.pubsub_v1.PublisherClient``, whose background threads would retry forever on their own."""
        with self._lock:
            if self._publisher is None:
                from google.pubsub_v1 import PublisherClient

                self._publisher = PublisherClient()
            return self._publisher


def pubsub_triggers(topic_path: str, timeout_s: float) -> Triggers:
    """Every event type to the one :class:`PubSubTarget`: the subscriptions' filters do the routing."""
    return Triggers({t: (PUBSUB,) for t in sorted(events.TYPES)}, [PubSubTarget(topic_path, timeout_s)])


def create_topology(
    topology: Topology, endpoints: Mapping[str, str], retry_s: tuple[int, int] = (MIN_RETRY_S, MAX_RETRY_S)
) -> None:
    """Create the topic, the dead-letter topic and its pull subscription, and a push subscription per
    ``target -> URL`` (replaced when it exists, so a restart on other ports points at the right place).

    ``retry_s`` is Pub/Sub's (minimum, maximum) backoff between push attempts. For the emulator and
    ``make local``; on GCP ``make deploy-gcp`` runs the same as gcloud commands.
    """
    from google.api_core.exceptions import AlreadyExists, NotFound
    from google.cloud import pubsub_v1
    from google.protobuf import duration_pb2

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    try:
        dead_topic = topology.path("topics", topology.dead_letter_topic)
        for topic in (topology.topic_path, dead_topic):
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(name=topic)
        with contextlib.suppress(AlreadyExists):
            subscriber.create_subscription(
                name=topology.path("subscriptions", topology.dead_letter_topic), topic=dead_topic
            )
        for target, url in endpoints.items():
            name = topology.path("subscriptions", topology.subscription(target))
            with contextlib.suppress(NotFound):
                subscriber.delete_subscription(subscription=name)
            subscriber.create_subscription(
                request={
                    "name": name,
                    "topic": topology.topic_path,
                    "push_config": {"push_endpoint": url},
                    "ack_deadline_seconds": ACK_DEADLINE_S,
                    "filter": subscription_filter(target),
                    "dead_letter_policy": {
                        "dead_letter_topic": dead_topic,
                        "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                    },
                    "retry_policy": {
                        "minimum_backoff": duration_pb2.Duration(seconds=retry_s[0]),
                        "maximum_backoff": duration_pb2.Duration(seconds=retry_s[1]),
                    },
                }
            )
    finally:
        publisher.transport.close()
        subscriber.close()
