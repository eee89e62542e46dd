"""What processes count: every counter and histogram of the system, and the one function that feeds each.

Cheap by design (a few microseconds each: prometheus_client's multiprocess mode writes the value into this
process's memory-mapped file), so the hot path never waits on Redis for a metric. Label values are bounded sets
named here — never a phone number, chat id, session name or free text — so a hostile webhook cannot grow the
number of series. Callers in other areas use these functions, never the metric objects.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from wsm.core.settings import get_settings

# Label values (bounded): anything else is counted as "other".
EVENTS = frozenset({"message", "message.any", "message.ack", "session.status"})
SENDERS = frozenset({"customer", "bot", "phone", "operator"})
WAHA_ENDPOINTS = frozenset({"sendText", "sendSeen", "startTyping", "stopTyping", "sessions", "lids"})
QUEUES = frozenset({"bot", "human"})
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


def _with_sla(buckets: tuple[float, ...]) -> tuple[float, ...]:
    """The buckets plus ``WSM_SLA_S``, so "answered within the SLA" is one bucket, not an estimate."""
    return tuple(sorted({*buckets, float(get_settings().sla_s)}))


WEBHOOK_EVENTS = Counter(
    "wsm_webhook_events", "Webhook requests by WAHA event and what the webhook did with them.", ["event", "outcome"]
)
MESSAGES = Counter(
    "wsm_messages", "Messages: in from customers; out from the bot, the phone or an operator.", ["direction", "sender"]
)
WAHA_REQUESTS = Counter("wsm_waha_requests", "Calls to WAHA's REST API by endpoint and answer.", ["endpoint", "code"])
WAHA_DURATION = Histogram(
    "wsm_waha_request_duration_seconds", "Time WAHA took to answer, by endpoint.", ["endpoint"],
    buckets=LATENCY_BUCKETS_S,
)  # fmt: skip
QUEUE_WAIT = Histogram(
    "wsm_queue_wait_seconds", "Time from joining a queue to being served (WSM_SLA_S is a bucket).", ["queue"],
    buckets=_with_sla(WAIT_BUCKETS_S),
)  # fmt: skip
FIRST_RESPONSE = Histogram(
    "wsm_first_response_seconds",
    "Time from a person's first message of a conversation to the first conversation reply WAHA accepted.",
    buckets=_with_sla(LATENCY_BUCKETS_S + WAIT_BUCKETS_S),
)
APPOINTMENTS = Counter("wsm_appointments", "Appointment changes by the status they led to.", ["status"])
LLM_TOKENS = Counter("wsm_llm_tokens", "Tokens used by the LLM agent.", ["kind"])


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


def webhook_event(event: str, outcome: str) -> None:
    """One webhook request: ``event`` is WAHA's event name ("unknown" before it could be read), ``outcome`` the
    webhook's answer status (accepted, duplicate, ...) or ``refused_<http status>`` / ``unavailable``."""
    WEBHOOK_EVENTS.labels(_bounded(event, EVENTS | {"unknown"}), outcome).inc()


def message(direction: str, sender: str) -> None:
    """A message stored (``in``, customer) or sent/typed (``out``: bot, phone, operator)."""
    MESSAGES.labels("in" if direction == "in" else "out", _bounded(sender, SENDERS)).inc()


def waha_request(endpoint: str, code: str, seconds: float) -> None:
    """One WAHA call: ``code`` is the HTTP status, or ``error`` when no answer came (timeout, refused)."""
    name = _bounded(endpoint, WAHA_ENDPOINTS)
    WAHA_REQUESTS.labels(name, code).inc()
    WAHA_DURATION.labels(name).observe(seconds)


def queue_wait(queue: str, seconds: float) -> None:
    """A chat left ``queue`` (bot | human) to be served after waiting ``seconds``."""
    QUEUE_WAIT.labels(_bounded(queue, QUEUES)).observe(max(0.0, seconds))


def first_response(seconds: float) -> None:
    FIRST_RESPONSE.observe(max(0.0, seconds))


def appointment(status: str) -> None:
    """An appointment was held, booked, cancelled or rescheduled (a status of wsm.schedule.model or "rescheduled")."""
    APPOINTMENTS.labels(status).inc()


def llm_tokens(prompt: int = 0, completion: int = 0) -> None:
    """Tokens of one LLM call, as the provider reported them (for the agent)."""
    if prompt > 0:
        LLM_TOKENS.labels("prompt").inc(prompt)
    if completion > 0:
        LLM_TOKENS.labels("completion").inc(completion)
