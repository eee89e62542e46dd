"""Configuration, read once per process from environment variables only.

Every variable is listed in the README with its default; ``make local``, the
CLI and docker-compose use the same names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from e


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ValueError(f"{name} must be a number, got {raw!r}") from e


def _str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


def redis_cluster_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``WSM_REDIS_CLUSTER``: whether ``REDIS_URL`` names a node of a Redis Cluster (read where clients are made).

    ``env`` instead of this process's environment: what a process about to be started will see.
    """
    raw = (os.environ if env is None else env).get("WSM_REDIS_CLUSTER", "").strip().lower()
    return raw in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    redis_url: str
    webhook_hmac_key: str
    webhook_max_skew_s: int
    webhook_max_body_bytes: int
    webhook_read_timeout_s: float
    waha_url: str
    waha_api_key: str
    waha_timeout_s: float
    caldav_url: str
    caldav_username: str
    caldav_password: str
    caldav_calendar: str
    caldav_per_provider: bool
    caldav_timeout_s: float
    caldav_max_attempts: int
    caldav_retry_base_ms: int
    max_active: int
    idle_timeout_s: int
    handoff_s: int
    dedupe_ttl_s: int
    history_max: int
    inbox_max: int
    state_retention_s: int
    lease_ms: int
    typing_ms_per_char: int
    typing_max_ms: int
    notify_min_interval_s: int
    notify_max_per_hour: int
    notify_batch: int
    flow_file: str
    schedule_file: str
    tick_s: float
    router_max_attempts: int
    router_concurrency: int
    router_timeout_s: float
    deadletter_max: int
    pubsub_topic: str
    mask_phones: bool
    sla_s: int
    metrics_token: str
    llm_base_url: str
    llm_api_key: str
    llm_model: str
    llm_timeout_s: float
    llm_max_retries: int
    llm_max_tool_calls: int
    llm_max_turn_tokens: int
    llm_history_tokens: int
    # --- providers: which WhatsApp API each session speaks, and several numbers (wsm/providers, wsm/core/sessions)
    provider: str
    sessions_file: str
    meta_signing_key: str
    meta_verify_token: str
    meta_access_token: str
    meta_graph_url: str
    meta_phone_number_id: str
    meta_templates: str
    meta_window_s: int
    meta_dedupe_ttl_s: int
    evolution_url: str
    evolution_api_key: str
    evolution_instance: str

    # --- the operator console (wsm/console) ---
    console_signing_key: str
    console_session_s: int
    console_login_max: int
    console_login_window_s: int
    console_sse_s: float

    # one person, one chat (@lid -> phone chat; wsm/ingest/lid.py)
    lid_lookup_timeout_s: float = 0.5
    lid_negative_ttl_s: int = 60
    lid_cache_ttl_s: int = 30 * 86400
    # Redis Cluster and replication (issue 14 part 1; see README "Redis Cluster")
    redis_cluster: bool = False
    redis_min_replicas: int = 0
    redis_wait_timeout_ms: int = 1000

    # storage (compact chat records): dedupe by the chat's recent history, then a bounded list of older ids
    dedupe_window: int = 50
    dedupe_max: int = 1000

    def with_provider_defaults(self) -> Settings:
        """The Cloud API retries a webhook for days: its message ids are remembered at least ``META_DEDUPE_TTL_S``."""
        if self.provider == "cloud" and self.dedupe_ttl_s < self.meta_dedupe_ttl_s:
            return replace(self, dedupe_ttl_s=self.meta_dedupe_ttl_s)
        return self

    @classmethod
    def from_env(cls) -> Settings:
        settings = cls(
            redis_url=_str("REDIS_URL", "redis://127.0.0.1:6379/0"),
            webhook_hmac_key=_str("WEBHOOK_HMAC_KEY"),
            webhook_max_skew_s=_int("WEBHOOK_MAX_SKEW_S", 0),
            webhook_max_body_bytes=_int("WEBHOOK_MAX_BODY_BYTES", 1024 * 1024),
            webhook_read_timeout_s=_float("WEBHOOK_READ_TIMEOUT_S", 10.0),
            waha_url=_str("WAHA_URL", "http://127.0.0.1:3000").rstrip("/"),
            waha_api_key=_str("WAHA_API_KEY"),
            waha_timeout_s=_float("WAHA_TIMEOUT_S", 30.0),
            caldav_url=_str("CALDAV_URL"),
            caldav_username=_str("CALDAV_USERNAME"),
            caldav_password=_str("CALDAV_PASSWORD"),
            caldav_calendar=_str("CALDAV_CALENDAR", "Agendamentos") or "Agendamentos",
            caldav_per_provider=_bool("CALDAV_PER_PROVIDER", False),
            caldav_timeout_s=_float("CALDAV_TIMEOUT_S", 10.0),
            caldav_max_attempts=max(1, _int("CALDAV_MAX_ATTEMPTS", 5)),
            caldav_retry_base_ms=max(0, _int("CALDAV_RETRY_BASE_MS", 1000)),
            max_active=max(1, _int("WSM_MAX_ACTIVE", 1)),
            idle_timeout_s=_int("WSM_IDLE_TIMEOUT_S", 300),
            handoff_s=_int("WSM_HANDOFF_S", 3600),
            dedupe_ttl_s=_int("WSM_DEDUPE_TTL_S", 86400),
            history_max=_int("WSM_HISTORY_MAX", 1000),
            inbox_max=_int("WSM_INBOX_MAX", 1000),
            state_retention_s=_int("WSM_STATE_RETENTION_S", 90 * 86400),
            lease_ms=_int("WSM_LEASE_MS", 30000),
            typing_ms_per_char=_int("WSM_TYPING_MS_PER_CHAR", 30),
            typing_max_ms=_int("WSM_TYPING_MAX_MS", 3000),
            notify_min_interval_s=_int("WSM_NOTIFY_MIN_INTERVAL_S", 60),
            notify_max_per_hour=_int("WSM_NOTIFY_MAX_PER_HOUR", 6),
            notify_batch=_int("WSM_NOTIFY_BATCH", 200),
            flow_file=_str("WSM_FLOW_FILE"),
            schedule_file=_str("WSM_SCHEDULE_FILE"),
            tick_s=_float("WSM_TICK_S", 5.0),
            router_max_attempts=_int("WSM_ROUTER_MAX_ATTEMPTS", 8),
            router_concurrency=_int("WSM_ROUTER_CONCURRENCY", 64),
            router_timeout_s=_float("WSM_ROUTER_TIMEOUT_S", 60.0),
            deadletter_max=_int("WSM_DEADLETTER_MAX", 10000),
            pubsub_topic=_str("WSM_PUBSUB_TOPIC"),
            mask_phones=_bool("WSM_MASK_PHONES", True),
            sla_s=max(1, _int("WSM_SLA_S", 120)),
            metrics_token=_str("WSM_METRICS_TOKEN"),
            llm_base_url=_str("LLM_BASE_URL").rstrip("/"),
            llm_api_key=_str("LLM_API_KEY"),
            llm_model=_str("LLM_MODEL"),
            llm_timeout_s=max(0.1, _float("LLM_TIMEOUT_S", 20.0)),
            llm_max_retries=max(0, _int("LLM_MAX_RETRIES", 2)),
            llm_max_tool_calls=max(1, _int("LLM_MAX_TOOL_CALLS", 8)),
            llm_max_turn_tokens=max(1, _int("LLM_MAX_TURN_TOKENS", 20000)),
            llm_history_tokens=max(100, _int("LLM_HISTORY_TOKENS", 3000)),
            # --- providers
            provider=_provider(_str("WSM_PROVIDER", "waha") or "waha"),
            sessions_file=_str("WSM_SESSIONS_FILE"),
            meta_signing_key=_str("META_APP_SECRET"),
            meta_verify_token=_str("META_VERIFY_TOKEN"),
            meta_access_token=_str("META_ACCESS_TOKEN"),
            meta_graph_url=(_str("META_GRAPH_URL") or "https://graph.facebook.com/v21.0").rstrip("/"),
            meta_phone_number_id=_str("META_PHONE_NUMBER_ID"),
            meta_templates=_str("META_TEMPLATES"),
            meta_window_s=max(1, _int("META_WINDOW_S", 86400)),
            meta_dedupe_ttl_s=max(1, _int("META_DEDUPE_TTL_S", 14 * 86400)),
            evolution_url=_str("EVOLUTION_URL", "http://127.0.0.1:8080").rstrip("/"),
            evolution_api_key=_str("EVOLUTION_API_KEY"),
            evolution_instance=_str("EVOLUTION_INSTANCE"),
            # one person, one chat (@lid)
            lid_lookup_timeout_s=max(0.05, _float("WSM_LID_LOOKUP_TIMEOUT_S", 0.5)),
            lid_negative_ttl_s=max(1, _int("WSM_LID_NEGATIVE_TTL_S", 60)),
            lid_cache_ttl_s=max(60, _int("WSM_LID_CACHE_TTL_S", 30 * 86400)),
            redis_cluster=_bool("WSM_REDIS_CLUSTER", False),
            redis_min_replicas=max(0, _int("WSM_REDIS_MIN_REPLICAS", 0)),
            redis_wait_timeout_ms=max(1, _int("WSM_REDIS_WAIT_TIMEOUT_MS", 1000)),
            # storage
            dedupe_window=max(1, _int("WSM_DEDUPE_WINDOW", 50)),
            dedupe_max=max(1, _int("WSM_DEDUPE_MAX", 1000)),
            # the operator console
            console_signing_key=_str("WSM_CONSOLE_SECRET"),
            console_session_s=max(60, _int("WSM_CONSOLE_SESSION_S", 12 * 3600)),
            console_login_max=max(1, _int("WSM_CONSOLE_LOGIN_MAX", 5)),
            console_login_window_s=max(1, _int("WSM_CONSOLE_LOGIN_WINDOW_S", 300)),
            console_sse_s=max(1.0, _float("WSM_CONSOLE_SSE_S", 25.0)),
        )
        return settings.with_provider_defaults()

    def for_session(self, session: str) -> Settings:
        """These settings with the session's overrides from ``WSM_SESSIONS_FILE`` (itself when it has none)."""
        from wsm.core.sessions import settings_for_session  # the sessions file reads Settings' field names

        return settings_for_session(self, session)

    def redacted(self) -> dict[str, object]:
        """Settings safe to log: secrets replaced by whether they are set."""
        secret = {"webhook_hmac_key", "waha_api_key", "caldav_password", "metrics_token", "llm_api_key"}
        secret |= {"meta_signing_key", "meta_verify_token", "meta_access_token", "evolution_api_key"}
        secret |= {"console_signing_key"}
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = ("<set>" if value else "<unset>") if f.name in secret else value
        out["redis_url"] = redact_url(self.redis_url)
        out["caldav_url"] = redact_url(self.caldav_url)
        out["llm_base_url"] = redact_url(self.llm_base_url)
        return out


PROVIDERS = ("waha", "cloud", "evolution")  # WSM_PROVIDER values (wsm.providers)


def _provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"WSM_PROVIDER must be one of {', '.join(PROVIDERS)}, got {name!r}")
    return name


def redact_url(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()
