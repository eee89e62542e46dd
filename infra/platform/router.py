"""The event router: the serverless platform's event delivery, emulated on one machine.

It turns wake-up events from Redis Pub/Sub into CloudEvents for the functions
subscribed to them (see :mod:`infra.platform.triggers`), adds a periodic tick, retries
failures with backoff and dead-letters what keeps failing (or what a target refused
outright, :class:`~infra.platform.triggers.DeliveryRejected`, at once). Events are only
doorbells (the Redis keys are the truth), which is what makes two shortcuts safe:

- **coalescing**: while a delivery for (target, type, session, chat) is under
  way, identical events only ask for one more run after it, since one run reads
  every pending key;
- **lossy reconnects**: events published while Redis was unreachable are lost,
  and the tick sent on every (re)subscription covers them.

HTTP deliveries (libcurl) run in the thread that listens: it waits on its Pub/Sub connection and on every delivery
under way at once (:class:`~wsm.core.http_client.Transfers`), so an event reaches its function with no hand-off
between threads, which was a third of the router's CPU per message (``bench.profile``). Other targets (AWS Lambda,
GCP Pub/Sub, HTTP without libcurl) are delivered from a pool of threads.

On a Redis Cluster (``WSM_REDIS_CLUSTER=1``) events travel on one shard channel per session
(:mod:`wsm.store.doorbells`): the router learns sessions from ``wsm:sessions``, SSUBSCRIBEs to each
new one (and ticks it, covering what came before), and sends ticks per session, so no single run
walks every session. A failover or slot move breaks the subscription: it is rebuilt from the new
slot map, with a tick, exactly like a reconnect.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import itertools
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import click
import redis
from cloudevents.http import CloudEvent
from redis.backoff import NoBackoff
from redis.retry import Retry

from infra.platform.pubsub import pubsub_triggers
from infra.platform.triggers import (
    NOTIFIER,
    TARGET_URLS,
    WORKER,
    DeliveryRejected,
    Target,
    Triggers,
    url_triggers,
)
from wsm.core.http_client import Transfers
from wsm.core.privacy import mask_chat
from wsm.core.settings import Settings
from wsm.delivery.deadletter import EVENT, write_dead_letter
from wsm.store import keys
from wsm.store.connection import get_redis, make_client
from wsm.store.events import TICK, WakeUp

log = logging.getLogger(__name__)

ROUTER_SOURCE = "/wsm/router"
POLL_S = 0.2  # how often the subscriber checks for stop() between messages
SHARD_POLL_S = 0.05  # per node on a cluster: the subscriber polls each master's connection in turn
SESSIONS_REFRESH_S = 1.0  # on a cluster, how often the router looks for new sessions to subscribe to


def to_cloudevent(event: WakeUp) -> CloudEvent:
    """The CloudEvent a function receives for ``event``: data is ``{"session", "chat"}``, subject the chat."""
    attributes = {
        "type": event.cloudevent_type,
        "source": f"/wsm/sessions/{event.session}" if event.session else ROUTER_SOURCE,
        "datacontenttype": "application/json",
    }
    if event.chat:
        attributes["subject"] = event.chat
    return CloudEvent(attributes, {"session": event.session, "chat": event.chat})


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Delay after failed attempt ``attempt`` (1-based): doubling, capped, half of it random."""
    delay = min(cap_s, base_s * 2 ** min(attempt - 1, 30))  # bounded exponent: a long outage counts high
    return delay / 2 + random.uniform(0, delay / 2)


@dataclasses.dataclass
class RouterCounters:
    """What the router did since start (a snapshot; read ``Router.counters``)."""

    delivered: int = 0  # deliveries a target accepted
    retried: int = 0  # failed attempts that were scheduled again
    deadlettered: int = 0  # deliveries given up after router_max_attempts
    coalesced: int = 0  # events folded into a delivery already under way
    invalid: int = 0  # Pub/Sub messages that were not wake-up events


_Key = tuple[str, str, str | None, str | None]


def _key(target: Target, event: WakeUp) -> _Key:
    """What makes two deliveries identical: one run of the target covers both."""
    return (target.name, event.type, event.session, event.chat)


@dataclasses.dataclass(frozen=True)
class _Delivery:
    target: Target
    event: WakeUp
    cloudevent: CloudEvent
    attempt: int = 1

    @property
    def key(self) -> _Key:
        return _key(self.target, self.event)


class _Timers:
    """Runs callbacks after a delay on one thread, so a retry waiting out its backoff holds no pool worker."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="wsm-router-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        with self._cv:
            if not self._stopped:
                heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._seq), callback))
                self._cv.notify()

    def stop(self) -> None:
        """Stop; callbacks not yet due are dropped."""
        with self._cv:
            self._stopped = True
            self._heap.clear()
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._heap)
            callback()


class Router:
    """Subscribes to ``wsm:events`` and delivers each event to its targets; see the module docstring.

    ``backoff_base_s``/``backoff_cap_s`` shape both delivery retries and Redis
    reconnects (tests make them small).
    """

    def __init__(
        self,
        settings: Settings,
        triggers: Triggers,
        *,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.triggers = triggers
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._lock = threading.Lock()
        self._counters = RouterCounters()
        self._in_flight: dict[_Key, bool] = {}  # key -> run once more
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._timers = _Timers()
        self._pool = ThreadPoolExecutor(settings.router_concurrency, thread_name_prefix="wsm-router")
        self._listener = threading.Thread(target=self._listen, name="wsm-router-pubsub", daemon=True)
        # HTTP deliveries: queued by any thread, started and moved on by one (the listener; on a cluster its own)
        startable = any(getattr(t, "can_start", False) for t in triggers.targets)
        self._transfers = Transfers() if startable else None
        self._queued: collections.deque[_Delivery] = collections.deque()
        self._wake_read, self._wake_write = os.pipe()  # another thread queued a delivery
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._pumper = self._listener
        if settings.redis_cluster and self._transfers is not None:  # the sharded listener polls node by node
            self._pumper = threading.Thread(target=self._pump_until_stopped, name="wsm-router-http", daemon=True)
        # Our own client without redis-py's silent retries: the listener notices every outage,
        # reconnects on its own schedule and ticks after each resubscription. On a cluster, the cluster
        # client (its retries are how it follows a failover's new slot map).
        if settings.redis_cluster:
            self._pubsub_redis = make_client(settings.redis_url, cluster=True)
        else:
            self._pubsub_redis = redis.Redis.from_url(
                settings.redis_url,
                decode_responses=True,
                socket_connect_timeout=2,
                socket_keepalive=True,
                health_check_interval=30,
                retry=Retry(NoBackoff(), 0),
            )
        self._sessions: set[str] = set()  # on a cluster: sessions whose shard channel we subscribed to

    # -- lifecycle

    def start(self) -> Router:
        self._timers.start()
        if self._pumper is not self._listener:
            self._pumper.start()
        self._listener.start()
        self._timers.call_later(self.settings.tick_s, self._periodic_tick)
        return self

    def stop(self) -> None:
        """Stop listening and ticking, let running deliveries finish, drop queued ones and pending retries.

        A router runs once: start a new one to route again.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        for thread in {self._listener, self._pumper}:
            if thread.is_alive():
                thread.join()
        while self._transfers is not None and len(self._transfers):  # what is under way finishes (or times out)
            self._transfers.wait([], POLL_S)
        self._timers.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._transfers is not None:
            self._transfers.close()
        self.triggers.close()
        self._pubsub_redis.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        log.info(
            "router stopped: %s; %d deliveries abandoned (the next tick covers them)", self.counters, self.in_flight
        )

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Block until the router listens on the events channel; False on timeout."""
        return self._subscribed.wait(timeout_s)

    @property
    def counters(self) -> RouterCounters:
        with self._lock:
            return dataclasses.replace(self._counters)

    @property
    def in_flight(self) -> int:
        """Deliveries under way or waiting for a retry."""
        with self._lock:
            return len(self._in_flight)

    # -- routing

    def route(self, event: WakeUp) -> None:
        """Deliver ``event`` to every target subscribed to its type."""
        for target in self.triggers.targets_for(event.type):
            self._offer(target, event)

    def tick(self) -> None:
        """Send a tick to its subscribers now (not through Redis); on a cluster one per known session."""
        if not self.settings.redis_cluster:
            self.route(WakeUp(TICK))
            return
        with self._lock:
            sessions = sorted(self._sessions)
        for session in sessions:
            self.route(WakeUp(TICK, session))

    def _periodic_tick(self) -> None:
        self.tick()
        self._timers.call_later(self.settings.tick_s, self._periodic_tick)

    def _offer(self, target: Target, event: WakeUp) -> None:
        key = _key(target, event)
        with self._lock:
            if key in self._in_flight:
                self._in_flight[key] = True
                self._counters.coalesced += 1
                return
            self._in_flight[key] = False
        self._submit(_Delivery(target, event, to_cloudevent(event)))

    def _submit(self, delivery: _Delivery) -> None:
        if self._stopping.is_set():
            return
        if self._transfers is not None and getattr(delivery.target, "can_start", False):
            self._queued.append(delivery)
            if threading.current_thread() is not self._pumper:
                with contextlib.suppress(BlockingIOError):  # the pipe is full: the pumper is woken already
                    os.write(self._wake_write, b"\0")
            return
        with contextlib.suppress(RuntimeError):  # the pool shut down between the check and the submit
            self._pool.submit(self._attempt, delivery)

    def _attempt(self, delivery: _Delivery) -> None:
        """One delivery from a pool thread (a target without :meth:`~infra.platform.triggers.HttpTarget.start`)."""
        started = self._attempt_starts(delivery)
        try:
            delivery.target.deliver(delivery.cloudevent)
        except Exception as e:
            self._ended(delivery, e, started)
            return
        self._ended(delivery, None, started)

    def _begin(self, delivery: _Delivery) -> None:
        """Start one HTTP delivery among the transfers (on the pumping thread); :meth:`_ended` is called back."""
        started = self._attempt_starts(delivery)
        try:
            delivery.target.start(delivery.cloudevent, self._transfers, lambda e: self._settle(delivery, e, started))  # type: ignore[attr-defined]
        except Exception as e:  # refused before anything was sent (an attribute with a line break)
            self._settle(delivery, e, started)

    def _settle(self, delivery: _Delivery, error: Exception | None, started: float) -> None:
        """:meth:`_ended` on the listening thread, which must outlive any surprise in it (a pool thread would)."""
        try:
            self._ended(delivery, error, started)
        except Exception:
            log.exception("handling the outcome of a %s delivery failed", delivery.event.type)

    def _attempt_starts(self, delivery: _Delivery) -> float:
        with self._lock:  # this attempt starts after, so it covers, every identical event so far
            self._in_flight[delivery.key] = False
        return time.perf_counter()

    def _pump(self, readable: list[int], timeout_s: float) -> set[int]:
        """Start queued HTTP deliveries, wait at most ``timeout_s`` for ``readable`` or a delivery's socket, move the
        deliveries on (their outcomes are handled here); returns which of ``readable`` can be read."""
        transfers: Transfers = self._transfers  # type: ignore[assignment]
        self._start_queued(transfers)
        ready = transfers.wait([*readable, self._wake_read], timeout_s)
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)
        self._start_queued(transfers)
        return ready

    def _start_queued(self, transfers: Transfers) -> None:
        while self._queued and len(transfers) < self.settings.router_concurrency:
            self._begin(self._queued.popleft())

    def _pump_until_stopped(self) -> None:
        """The pumping thread beside a cluster's listener."""
        while not self._stopping.is_set():
            self._pump([], POLL_S)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (or until stop()); a pumping listener keeps its deliveries moving meanwhile."""
        if self._transfers is None or threading.current_thread() is not self._pumper:
            self._stopping.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            self._pump([], min(left, POLL_S))

    def _ended(self, delivery: _Delivery, error: Exception | None, started: float) -> None:
        """An attempt's outcome: a retry or a dead letter if it failed, else counted and finished."""
        if error is not None:
            self._failed(delivery, error, (time.perf_counter() - started) * 1000)
            return
        if log.isEnabledFor(logging.DEBUG):  # a line per delivery was a tenth of the router's CPU (bench.profile)
            self._log_outcome(logging.DEBUG, delivery, "ok", (time.perf_counter() - started) * 1000)
        with self._lock:
            self._counters.delivered += 1
        self._finish(delivery)

    def _failed(self, delivery: _Delivery, error: Exception, elapsed_ms: float) -> None:
        reason = str(error) or type(error).__name__
        self._log_outcome(logging.WARNING, delivery, reason, elapsed_ms)
        if delivery.attempt < self.settings.router_max_attempts and not isinstance(error, DeliveryRejected):
            with self._lock:
                self._counters.retried += 1
            retry = dataclasses.replace(delivery, attempt=delivery.attempt + 1)
            delay_s = backoff_s(delivery.attempt, self.backoff_base_s, self.backoff_cap_s)
            self._timers.call_later(delay_s, lambda: self._submit(retry))
            return
        self._deadletter(delivery, reason)
        self._finish(delivery)

    def _finish(self, delivery: _Delivery) -> None:
        """End a delivery; start a fresh one if an identical event came in during its last attempt."""
        with self._lock:
            again = self._in_flight.pop(delivery.key, False)
            if again:
                self._in_flight[delivery.key] = False
        if again:
            event = delivery.event
            self._submit(_Delivery(delivery.target, event, to_cloudevent(event)))

    def _deadletter(self, delivery: _Delivery, reason: str) -> None:
        event = delivery.event
        try:
            write_dead_letter(
                get_redis(self.settings.redis_url, self.settings.redis_cluster), EVENT, reason,
                self.settings.deadletter_max,
                type=event.type, session=event.session, chat=event.chat, target=delivery.target.name,
                attempts=delivery.attempt,
            )  # fmt: skip
        except redis.RedisError as e:
            log.error("could not dead-letter %s for %s: %s", delivery.event.type, delivery.target.name, e)
        with self._lock:  # counted after the write, so a reader of the counter finds the entry
            self._counters.deadlettered += 1

    def _log_outcome(self, level: int, delivery: _Delivery, outcome: str, elapsed_ms: float) -> None:
        event = delivery.event
        log.log(
            level,
            "deliver type=%s target=%s session=%s chat=%s attempt=%d/%d outcome=%s elapsed_ms=%.1f",
            event.type,
            delivery.target.name,
            event.session or "-",
            mask_chat(event.chat, self.settings.mask_phones),
            delivery.attempt,
            self.settings.router_max_attempts,
            outcome,
            elapsed_ms,
        )

    # -- subscription

    def _listen(self) -> None:
        """Subscribe, route messages, and on connection loss retry with backoff until stop()."""
        outage_started: float | None = None
        failures = 0

        def recovered() -> None:
            nonlocal outage_started, failures
            if outage_started is not None:
                log.warning("redis back after %.1f s; resubscribed", time.monotonic() - outage_started)
            outage_started, failures = None, 0
            self._subscribed.set()

        while not self._stopping.is_set():
            pubsub = self._pubsub_redis.pubsub()
            try:
                if self.settings.redis_cluster:
                    self._listen_sharded(pubsub, recovered, refresh=failures > 0)
                    continue
                pubsub.subscribe(keys.EVENTS_CHANNEL)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=POLL_S if self._transfers is None else 0)
                    if message is None:
                        if self._transfers is not None:  # wait for the next message and the deliveries together
                            self._pump([_socket_of(pubsub)], POLL_S)
                        continue
                    if message["type"] == "subscribe":
                        recovered()
                        self.tick()  # covers whatever was published while we did not listen
                    elif message["type"] == "message":
                        self._on_message(message["data"])
            except redis.RedisError as e:
                self._subscribed.clear()
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.warning("redis unreachable (%s); reconnecting with backoff", type(e).__name__)
                failures += 1
                self._pause(backoff_s(failures, self.backoff_base_s, self.backoff_cap_s))
            finally:
                pubsub.close()
        self._subscribed.clear()

    def _listen_sharded(self, pubsub: redis.client.PubSub, recovered: Callable[[], None], refresh: bool) -> None:
        """The cluster's loop: SSUBSCRIBE each session's channel as sessions appear; raises on any breakage."""
        cluster: redis.RedisCluster = self._pubsub_redis  # type: ignore[assignment]
        if refresh:
            cluster.nodes_manager.initialize()  # a failover may have moved slots: read the new map
        subscribed: set[str] = set()
        next_refresh = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_refresh:
                new = set(cluster.smembers(keys.SESSIONS)) - subscribed
                if new:
                    pubsub.ssubscribe(*(keys.SessionKeys(s).events for s in sorted(new)))  # type: ignore[attr-defined]
                    subscribed |= new
                    with self._lock:
                        self._sessions |= new
                    for session in sorted(new):  # covers what was published before we listened
                        self.route(WakeUp(TICK, session))
                if not self._subscribed.is_set():
                    recovered()
                next_refresh = time.monotonic() + SESSIONS_REFRESH_S
            if not subscribed:
                self._stopping.wait(POLL_S)
                continue
            message = pubsub.get_sharded_message(timeout=SHARD_POLL_S)  # type: ignore[attr-defined]
            if message is None:
                continue
            if message["type"] == "smessage":
                self._on_message(message["data"])
            elif message["type"] == "sunsubscribe":  # the node gave the slot away (failover, resharding)
                raise redis.ConnectionError("shard channel moved")

    def _on_message(self, raw: str) -> None:
        try:
            event = WakeUp.from_json(raw)  # checks the type and that session and chat are strings or null
        except ValueError:  # the text may hold a phone number: log its size only
            with self._lock:
                self._counters.invalid += 1
            log.warning(
                "skipping a message on %s that is not a wake-up event (%d chars)", keys.EVENTS_CHANNEL, len(raw)
            )
            return
        self.route(event)


def _socket_of(pubsub: redis.client.PubSub) -> int:
    """The file descriptor of the subscription's connection (redis-py keeps the socket private: no public way);
    a connection already closed is a lost subscription, which the listener rebuilds."""
    sock = getattr(pubsub.connection, "_sock", None)
    if sock is None:
        raise redis.ConnectionError("the subscription's connection is closed")
    return sock.fileno()


@click.command()
@click.option(
    "--worker-url", envvar=TARGET_URLS[WORKER][0], default=TARGET_URLS[WORKER][1], show_default=True, show_envvar=True
)
@click.option(
    "--notifier-url",
    envvar=TARGET_URLS[NOTIFIER][0],
    default=TARGET_URLS[NOTIFIER][1],
    show_default=True,
    show_envvar=True,
)
def main(worker_url: str, notifier_url: str) -> None:
    """Route wake-up events from Redis to the worker and notifier functions as CloudEvents.

    A URL is an HTTP endpoint, or lambda:FUNCTION_NAME to invoke an AWS Lambda function (boto3's configuration:
    AWS_ENDPOINT_URL=http://localhost:4566 for LocalStack, credentials, AWS_DEFAULT_REGION).
    With WSM_PUBSUB_TOPIC=projects/P/topics/T every event is published to that GCP Pub/Sub topic instead
    (PUBSUB_EMULATOR_HOST for the emulator) and its push subscriptions deliver it; the URLs are unused.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    try:
        triggers = (
            pubsub_triggers(settings.pubsub_topic, settings.router_timeout_s)
            if settings.pubsub_topic
            else url_triggers({WORKER: worker_url, NOTIFIER: notifier_url}, settings.router_timeout_s)
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    channel = "a shard channel per session (Redis Cluster)" if settings.redis_cluster else keys.EVENTS_CHANNEL
    click.echo(
        f"wsm-router: {settings.redacted()['redis_url']} channel {channel}, "
        f"tick every {settings.tick_s:g} s, {settings.router_concurrency} concurrent deliveries"
    )
    for line in triggers.describe():
        click.echo(f"  {line}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    router = Router(settings, triggers).start()
    try:
        stop.wait()
    finally:
        router.stop()
