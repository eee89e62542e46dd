"""The Cloud API's 24-hour customer-service window, and the templates that may be sent outside it.

Meta allows free-form messages only within ``META_WINDOW_S`` (24 h) of the person's last message
(``last_seen_ms`` in the chat state, set by ingest on every inbound message). Outside it only approved
templates go: ``META_TEMPLATES`` (or a session's ``templates``) maps a purpose to one, and the purpose of
an outbox entry is its kind — ``reminder`` (appointment reminders), ``position`` (queue notices),
``offer`` (waitlist offers). Anything else is held with the reason :data:`~wsm.providers.base.OUTSIDE_WINDOW`.
"""

from __future__ import annotations

import json
from functools import cache

from wsm.providers.base import Template

PURPOSES = ("reminder", "position", "offer")


def is_open(last_inbound_ms: int | None, window_s: int, now: int) -> bool:
    """Whether a free-form message may go now (no window: always; never heard from: closed)."""
    if window_s <= 0:
        return True
    return last_inbound_ms is not None and now - last_inbound_ms < window_s * 1000


@cache
def templates(raw: str) -> dict[str, Template]:
    """Parse ``META_TEMPLATES``: ``{"reminder": {"name": ..., "language": ..., "parameters": [...]}, ...}``."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"META_TEMPLATES must be a JSON object: {e}") from e
    if not isinstance(data, dict):
        raise ValueError("META_TEMPLATES must be a JSON object of purpose -> template")
    out: dict[str, Template] = {}
    for purpose, spec in data.items():
        if purpose not in PURPOSES:
            raise ValueError(f"META_TEMPLATES: unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}")
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ValueError(f"META_TEMPLATES[{purpose!r}] needs a template name")
        params = spec.get("parameters", ["{text}"])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise ValueError(f"META_TEMPLATES[{purpose!r}].parameters must be a list of strings")
        language = spec.get("language", "pt_BR")
        if not isinstance(language, str) or not language:
            raise ValueError(f"META_TEMPLATES[{purpose!r}].language must be a language code")
        out[purpose] = Template(spec["name"], language, tuple(params))
    return out


def template_for(raw: str, kind: str) -> Template | None:
    return templates(raw).get(kind)
