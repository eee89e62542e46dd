"""Webhook routing by provider, framework-neutral: (method, path, query, headers, raw body) -> (status, headers, body).

The path's last part picks the provider (``/cloud``, ``/evolution``, ``/waha``); any other path is the
provider of ``WSM_PROVIDER``. WAHA requests stay with :mod:`wsm.ingest.http` exactly as before; the Cloud
API and Evolution are answered here: verify first (Meta's GET handshake, X-Hub-Signature-256 over the raw
bytes; Evolution's apikey), then parse, then store every event of the body before answering 200 (a Redis
failure answers 503 and the provider retries the whole body; what was stored is a duplicate then).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from wsm.core.errors import BadRequest, RedisUnavailable
from wsm.core.sessions import named_sessions
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor, Outcome, json_body
from wsm.metrics import record
from wsm.providers import cloud, evolution
from wsm.providers.base import CLOUD, EVOLUTION, WAHA
from wsm.store.connection import get_redis
from wsm.waha.event import Ignored, WahaEvent, parse_body

log = logging.getLogger(__name__)
Reply = tuple[int, dict[str, str], bytes]
JSON = {"Content-Type": "application/json"}
SUFFIXES = {"cloud": CLOUD, "evolution": EVOLUTION, "waha": WAHA}

_ingestors: dict[tuple[int, str], tuple[Settings, Ingestor]] = {}


def provider_for_path(path: str, settings: Settings) -> str:
    """``/…/cloud`` -> cloud, ``/…/evolution`` -> evolution, ``/…/waha`` -> waha, else ``WSM_PROVIDER``."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return SUFFIXES.get(last, settings.provider)


def served(provider: str, settings: Settings) -> bool:
    """A provider's path answers only where that provider is in use — ``WSM_PROVIDER``, a session's ``provider``,
    or its secret set — so a deployment of one provider cannot be fed unsigned events through another's path."""
    if provider == settings.provider:
        return True
    secret = {WAHA: settings.webhook_hmac_key, CLOUD: settings.meta_signing_key, EVOLUTION: settings.evolution_api_key}
    if secret.get(provider):
        return True
    return settings.sessions_file != "" and any(
        settings.for_session(name).provider == provider for name in named_sessions(settings)
    )


def handle(
    provider: str, method: str, query: Mapping[str, str], headers: Mapping[str, str], raw: bytes, settings: Settings
) -> Reply:
    """Answer a Cloud API or Evolution webhook request (``raw`` is the body as read, size limits applied);
    any provider's path where it is not :func:`served` is 404."""
    lower = {k.lower(): v for k, v in headers.items()}
    name = provider
    try:
        if not served(provider, settings):
            raise BadRequest(f"no {provider} webhook here: set WSM_PROVIDER, a session's provider or its secret", 404)
        if provider == CLOUD:
            if method == "GET":
                status, text = cloud.verify_subscription(query, settings.meta_verify_token)
                record.webhook_event("cloud.verify", "accepted" if status == 200 else "refused_403")
                return status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()
            _allow_post(method, "the Cloud API's webhook answers GET (verification) and POST")
            if settings.meta_signing_key:
                cloud.verify_signature(raw, lower.get("x-hub-signature-256"), settings.meta_signing_key)
            events = cloud.parse(parse_body(raw), settings)
        elif provider == EVOLUTION:
            _allow_post(method, "Evolution webhooks are POSTed")
            body = parse_body(raw)
            event = evolution.event_name(body)
            name = "evolution." + (event if event in evolution.EVENTS else "other")  # bounded metric labels
            session = evolution.session_of(evolution.instance_of(body), settings)
            if session is None:
                events = [Ignored("instance is not one of ours")]
            else:
                key = settings.for_session(session).evolution_api_key
                if key:
                    evolution.verify(body, lower, key)
                events = evolution.parse(body, session)
        else:
            raise BadRequest(f"the {provider} webhook is the plain path's here", status=404)
        outcomes = [_ingest(event, settings, provider) for event in events]
    except BadRequest as e:
        log.info("%s webhook refused %s: %s", provider, e.status, e)
        record.webhook_event(name, f"refused_{e.status}")
        extra = {"Allow": "GET, POST" if provider == CLOUD else "POST"} if e.status == 405 else {}
        return e.status, {**JSON, **extra}, json_body({"error": str(e)})
    except RedisUnavailable as e:
        log.warning("redis unavailable, asking %s to retry: %s", provider, e)
        record.webhook_event(name, "unavailable")
        return 503, {**JSON, "Retry-After": "2"}, json_body({"error": "storage unavailable, retry later"})
    for outcome in outcomes:
        record.webhook_event(name, outcome.status)
    return 200, dict(JSON), json_body({"status": "ok", "events": [{"status": o.status, **o.details} for o in outcomes]})


def _allow_post(method: str, message: str) -> None:
    if method != "POST":
        raise BadRequest(f"method not allowed; {message}", status=405)


def _ingest(event: WahaEvent, settings: Settings, provider: str) -> Outcome:
    if isinstance(event, Ignored):
        return Outcome("ignored", {"reason": event.reason})
    return ingestor(settings.for_session(event.session), provider).ingest(event)


def ingestor(settings: Settings, provider: str) -> Ingestor:
    """One Ingestor per (session) settings object and provider, kept for the process.

    Cloud API message ids are remembered ``META_DEDUPE_TTL_S`` at least: Meta retries a webhook for days.
    """
    key = (id(settings), provider)
    found = _ingestors.get(key)
    if found is None or found[0] is not settings:  # an id is reused once its settings are gone (tests)
        if len(_ingestors) > 256:
            _ingestors.clear()
        used = settings
        if provider == CLOUD and settings.dedupe_ttl_s < settings.meta_dedupe_ttl_s:
            used = replace(settings, dedupe_ttl_s=settings.meta_dedupe_ttl_s)
        found = _ingestors[key] = (settings, Ingestor(get_redis(used.redis_url), used))
    return found[1]
