"""The Redis key schema: the only place that builds a key or channel name.

Every key of a WAHA session carries the hash tag ``{<session>}`` so that one
atomic script can touch a chat's keys *and* the session's queue on Redis
Cluster (all of a session lives in one slot; sessions spread across slots).
Chat ids are put in keys as WAHA sends them (``5511...@c.us``).

Per session ``S`` (prefix ``wsm:{S}:``):

| key | type | holds | written by | bound / expiry |
| --- | --- | --- | --- | --- |
| ``chat:<C>:history`` | list | the chat's messages, oldest first: compact id, then compact body (:mod:`wsm.store.record_codec`) | ingest, worker, ack, outbox | ``WSM_HISTORY_MAX`` (LTRIM); ``WSM_STATE_RETENTION_S`` |
| ``chat:<C>:seen`` | list | ids that left the history's dedupe window (the last ``WSM_DEDUPE_WINDOW`` records) | ingest, worker, outbox | ``WSM_DEDUPE_MAX`` ids; ``WSM_DEDUPE_TTL_S`` after the last one |
| ``chat:<C>:inbox`` | list | ``[id, *body]`` of inbound messages not yet handled, arrival order | ingest (RPUSH), worker (LTRIM) | drained by the worker; ``WSM_INBOX_MAX`` |
| ``chat:<C>:state`` | hash | see below | ingest, worker, notifier, outbox | ``WSM_STATE_RETENTION_S`` after last activity |
| ``chat:<C>:outbox`` | list | JSON replies not yet confirmed sent, in order | worker, notifier | drained by the sender |
| ``chat:<C>:lease`` | string | fencing token of the process holding the chat | worker, notifier | ``WSM_LEASE_MS`` |
| ``chat:<C>:notify`` | hash | last told position, send times in the last hour | notifier | deleted when the chat leaves the queue |
| ``ready`` | set | chats with unhandled inbox or outbox | ingest, worker | members removed when drained |
| ``active`` | zset | chats holding an attendant slot, score = last activity ms | ingest, worker | ``WSM_MAX_ACTIVE`` members |
| ``queue`` | zset | waiting chats, score = ticket number (FIFO) | ingest, worker | one member per chat |
| ``queue:seq`` | string | last ticket number given | ingest | counter |
| ``notify:due`` | zset | waiting chats, score = ms when they may be told again | ingest, notifier | one member per waiting chat |
| ``stats:handle_ms`` | list | recent conversation durations (ms) | worker | last 50 |
| ``waitlist:sent`` | zset | JSON ``{chat, apt}`` of waitlist offers sent, score = ms to pass it on if unanswered | notifier | removed when answered or passed on |
| ``sweep:cursor`` | string | SSCAN cursor of the tick's walk through ``ready`` (0: start again) | worker | 1 per session |
| ``session`` | hash | WAHA session ``status``, ``updated_ms``, ``event_ms``, ``changed_ms``; ``held_ms`` while sends are held (422) | webhook (status), outbox (``held_ms``) | 1 hash |
| ``ack:<payload.id>`` | string | an ack that arrived before its message | webhook | 1 h |
| ``lid:<L>`` | string | the phone chat (``…@c.us``) of the ``…@lid`` chat ``L``; "" = WAHA did not know it | worker (WAHA lookup), webhook (payload hint), ``merge_chat`` | ``WSM_LID_CACHE_TTL_S``; "" for ``WSM_LID_NEGATIVE_TTL_S`` |

Dedupe: a message id is known when it is in the last ``WSM_DEDUPE_WINDOW`` records of the chat's history
or in its ``seen`` list (see README, "Redis data layout"). The old layout (``chat:<C>:log`` ids +
``chat:<C>:msgs`` id -> JSON, one ``seen:<id>`` string per message) is read by ``wsm migrate``
(:mod:`wsm.store.migrate`), which folds it into ``history``; until it expires, a ``seen:<id>`` marker
still counts as known.

Fields of ``chat:<C>:state`` (all strings; times in ms since the epoch):

- attendance: ``status`` (:class:`wsm.core.status.ChatStatus`), ``since_ms`` (got its slot), ``queued_ms``,
  ``admitted_from_queue``, ``inbox_seen`` (inbox length a waiting chat's handler has examined);
- conversation: ``conv`` ("1" while one is open), ``step``, ``fields`` (JSON), ``last_result`` (JSON),
  ``closed_reason`` (:class:`wsm.core.status.EndReason`), ``closed_ms``, ``last_turn`` (id of the last commit);
- activity: ``last_seen_ms``, ``last_out_ms``, ``human_reply_ms``, ``handoff_until_ms``;
- sending: ``send_attempts``, ``send_retry_at_ms`` (the outbox's backoff after a WAHA failure).
- human attendance: ``owner`` (:class:`wsm.core.status.Owner`, absent = bot), ``operator`` (who has it),
  ``owner_ms`` (when it changed), ``human_queued_ms``, ``leave_message`` ("1": the next message is a message
  left for the operators).

Human attendance and the console (per session, written by the ``owner_*`` scripts and the console):

| key | type | holds | written by | bound / expiry |
| --- | --- | --- | --- | --- |
| ``human:queue`` | zset | chats waiting for a person, score = when each joined (ms) | owner scripts | one member per chat |
| ``human:notify:due`` | zset | those chats, score = ms when they may be told their position again | owner scripts, notifier | one member per waiting chat |
| ``human:handle_ms`` | list | recent human attendance durations (ms), for the queue's ETA | owner scripts | last 50 |
| ``human:left`` | list | JSON messages left for the operators while nobody could answer, newest first | worker | ``LEFT_MAX`` |
| ``operators:online`` | zset | operators online, score = capacity (chats at once) | console | one member per operator |
| ``operators:load`` | hash | operator -> chats they hold now | owner scripts | one field per operator |
| ``events:stream`` | stream | console events (message in/out, queue, ownership, operators, left message, dead letter) | owner scripts, event_stream | ``EVENTS_STREAM_MAX`` (XADD MAXLEN ~) |

Global: ``wsm:operators`` (hash, operator name -> JSON with the scrypt hash of the password) and
``wsm:console:login:<name>`` (string, failed logins in the current window; expires after the window) and
``wsm:console:session:<id>`` (string, the operator of a logged-in console session; ``WSM_CONSOLE_SESSION_S``).

Scheduling (:class:`ScheduleKeys`, prefix ``wsm:{S}:sched:`` unless noted):

| key | type | holds | written by | bound / expiry |
| --- | --- | --- | --- | --- |
| ``sched:apt:<id>`` | hash | one appointment: service, provider, start/end (ISO + ms), chat, status, hold expiry | schedule scripts | ``RETENTION_MS`` (90 days) after its end |
| ``sched:busy:<provider>`` | zset | busy intervals ``"<start>-<end>|<apt or block id>"`` (epoch minutes, end + buffer), score = start minute | schedule scripts | past members trimmed on each write |
| ``sched:busy:<provider>:span`` | string | the longest interval ever stored there (minutes), to bound overlap queries | schedule scripts | 1 per provider |
| ``sched:chat:<C>`` | set | the chat's appointment ids | schedule scripts | ids whose hash expired are dropped lazily; erased with the chat |
| ``sched:holds`` | zset | held appointment ids, score = hold expiry ms | hold / confirm / cancel | an id leaves on confirm, cancel or expiry |
| ``sched:index`` | zset | every appointment id, score = start ms (agenda, export) | schedule scripts | trimmed ``RETENTION_MS`` after start |
| ``sched:req:<request id>`` | string | the JSON answer of a request (idempotency) | schedule scripts | ``REQUEST_TTL_S`` (7 days) |
| ``sched:waitlist`` | list | JSON ``{chat, service, provider, day}`` waiting for a freed slot, oldest first | waitlist / cancel / reschedule | ``WAITLIST_MAX`` |
| ``reminders:due`` (``wsm:{S}:``) | zset | ``"<apt id>|<minutes before>"``, score = due ms | confirm / cancel / reschedule | removed by the reminder sender or on cancel |
| ``calendar:outbox`` (``wsm:{S}:``) | list | JSON of an appointment after each booked change, for CalDAV | confirm / cancel / reschedule | ``CALENDAR_OUTBOX_MAX`` (LTRIM) |
| ``waitlist:offers`` (``wsm:{S}:``) | zset | JSON offer (a hold made for a waiting chat), score = ms made | cancel / reschedule | removed by the sender; ``WAITLIST_MAX`` |

The schedule scripts reach per-appointment, per-provider and per-chat keys from the prefix they are given
(``ARGV[1]``) with the suffixes above (``apt:``, ``busy:``, ``chat:``): all inside the session's hash slot.

Global:

| key | type | holds | bound |
| --- | --- | --- | --- |
| ``wsm:sessions`` | set | WAHA session names seen | one per session |
| ``wsm:deadletter`` | list | events / sends that failed for good, with the last error | ``WSM_DEADLETTER_MAX`` |

The CalDAV push (:class:`CalendarKeys`, prefix ``wsm:{S}:calendar:``; it drains ``calendar:outbox``):

| key | type | holds | written by | bound / expiry |
| --- | --- | --- | --- | --- |
| ``calendar:pushing`` | list | the outbox entry being pushed now (moved there first, so a crash re-pushes it) | CalDAV push | 1 entry |
| ``calendar:push`` | hash | failures of that entry: attempts, rejections, retry_at_ms, error | CalDAV push | deleted on success |
| ``calendar:lock`` | string | token of the one process pushing this session | CalDAV push | 60 s (``LOCK_MS`` in caldav_push.py) |

Pub/Sub channel ``wsm:events`` carries small JSON wake-up events
(see :mod:`wsm.store.events`); the keys above stay the truth. On a Redis Cluster each session has
its own shard channel ``wsm:{S}:events`` instead (SPUBLISH, in the session's slot; see
:mod:`wsm.store.doorbells`).
"""

from __future__ import annotations

PREFIX = "wsm"
EVENTS_CHANNEL = f"{PREFIX}:events"
SESSIONS = f"{PREFIX}:sessions"
DEADLETTER = f"{PREFIX}:deadletter"
OPERATORS = f"{PREFIX}:operators"  # console: operator name -> JSON (scrypt hash of the password)


def console_login_failures(name: str) -> str:
    """Failed console logins of one name or client address (rate limit window)."""
    return f"{PREFIX}:console:login:{name}"


def console_session(session_id: str) -> str:
    """One logged-in console session (string: operator name; expires with ``WSM_CONSOLE_SESSION_S``)."""
    return f"{PREFIX}:console:session:{session_id}"


def chat_state_pattern(session: str) -> str:
    """SCAN pattern of every chat state hash of a session (the console's conversation list)."""
    return f"{session_tag(session)}:chat:*:state"


def chat_from_state_key(session: str, key: str) -> str:
    return key.removeprefix(f"{session_tag(session)}:chat:").removesuffix(":state")


def session_tag(session: str) -> str:
    """Return the key prefix of one WAHA session (its Redis Cluster hash tag)."""
    if not session or "{" in session or "}" in session:
        raise ValueError(f"invalid session name: {session!r}")
    return f"{PREFIX}:{{{session}}}"


class SessionKeys:
    """Key names of one WAHA session; chat keys come from :meth:`chat`."""

    EVENTS_STREAM_MAX = 10000  # console events kept (approximately: XADD MAXLEN ~)
    LEFT_MAX = 1000  # messages left for the operators

    def __init__(self, session: str) -> None:
        self.session = session
        tag = session_tag(session)
        self.tag = tag
        self.ready = f"{tag}:ready"
        self.active = f"{tag}:active"
        self.queue = f"{tag}:queue"
        self.queue_seq = f"{tag}:queue:seq"
        self.notify_due = f"{tag}:notify:due"
        self.handle_stats = f"{tag}:stats:handle_ms"
        self.sweep_cursor = f"{tag}:sweep:cursor"
        self.status = f"{tag}:session"
        self.offers_sent = f"{tag}:waitlist:sent"  # waitlist offers sent, awaiting an answer (see reminders)
        self.events = f"{tag}:events"  # shard channel of the session's wake-up events on a Redis Cluster
        # human attendance and the console (see the table above)
        self.human_notify_due = f"{tag}:human:notify:due"
        self.human_handle_stats = f"{tag}:human:handle_ms"
        self.human_left = f"{tag}:human:left"
        self.operators_load = f"{tag}:operators:load"
        self.events_stream = f"{tag}:events:stream"

    @property
    def human_queue(self) -> str:  # properties, so a test can point every session's at one key
        return f"{self.tag}:human:queue"

    @property
    def operators_online(self) -> str:
        return f"{self.tag}:operators:online"

    def seen(self, message_id: str) -> str:
        """The old layout's dedupe marker of one message (still honoured until it expires)."""
        return f"{self.tag}:seen:{message_id}"

    def early_ack(self, message_id: str) -> str:
        return f"{self.tag}:ack:{message_id}"

    def lid(self, lid_chat: str) -> str:
        """The phone chat a ``…@lid`` chat is known to be (see wsm/ingest/lid.py)."""
        return f"{self.tag}:lid:{lid_chat}"

    def chat(self, chat_id: str) -> ChatKeys:
        return ChatKeys(self.tag, chat_id)


class CalendarKeys:
    """Key names of the CalDAV push of one session (it reads ``calendar:outbox``, which the schedule scripts fill)."""

    def __init__(self, session: str) -> None:
        tag = session_tag(session)
        self.pushing = f"{tag}:calendar:pushing"
        self.state = f"{tag}:calendar:push"
        self.lock = f"{tag}:calendar:lock"


class ChatKeys:
    """Key names of one chat inside a session."""

    def __init__(self, tag: str, chat_id: str) -> None:
        base = f"{tag}:chat:{chat_id}"
        self.chat_id = chat_id
        self.history = f"{base}:history"
        self.seen = f"{base}:seen"
        self.log = f"{base}:log"  # old layout (ids), read by wsm migrate
        self.msgs = f"{base}:msgs"  # old layout (id -> JSON), read by wsm migrate
        self.inbox = f"{base}:inbox"
        self.state = f"{base}:state"
        self.outbox = f"{base}:outbox"
        self.lease = f"{base}:lease"
        self.notify = f"{base}:notify"

    def all(self) -> list[str]:
        """Every key that holds this chat's data (for export and erase)."""
        return [
            self.history, self.seen, self.inbox, self.state, self.outbox, self.lease, self.notify, self.log, self.msgs,
        ]  # fmt: skip


class ScheduleKeys:
    """Key names of the appointments of one session (see the scheduling table above)."""

    RETENTION_MS = 90 * 86400 * 1000
    REQUEST_TTL_S = 7 * 86400
    CALENDAR_OUTBOX_MAX = 10000
    WAITLIST_MAX = 1000

    def __init__(self, session: str) -> None:
        tag = session_tag(session)
        self.prefix = f"{tag}:sched:"
        self.holds = f"{self.prefix}holds"
        self.index = f"{self.prefix}index"
        self.waitlist = f"{self.prefix}waitlist"
        self.reminders_due = f"{tag}:reminders:due"
        self.calendar_outbox = f"{tag}:calendar:outbox"
        self.waitlist_offers = f"{tag}:waitlist:offers"

    def appointment(self, appointment_id: str) -> str:
        return f"{self.prefix}apt:{appointment_id}"

    def busy(self, provider: str) -> str:
        return f"{self.prefix}busy:{provider}"

    def busy_span(self, provider: str) -> str:
        return f"{self.prefix}busy:{provider}:span"

    def chat(self, chat_id: str) -> str:
        return f"{self.prefix}chat:{chat_id}"

    def request(self, request_id: str) -> str:
        return f"{self.prefix}req:{request_id}"

    def script_keys(self, request_id: str) -> list[str]:
        """KEYS of every schedule script, in the order their headers name them."""
        return [
            self.request(request_id),
            self.holds,
            self.index,
            self.reminders_due,
            self.calendar_outbox,
            self.waitlist,
            self.waitlist_offers,
        ]
