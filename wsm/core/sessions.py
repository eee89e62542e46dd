"""Several WhatsApp numbers: ``WSM_SESSIONS_FILE``, one YAML section per session, each overriding settings.

A section names its provider and whatever differs from the environment: flow, schedule, attendant slots,
the Cloud API ``phone_number_id`` (how a Meta webhook finds its session), the Evolution instance,
templates. Every function asks ``settings.for_session(name)`` and gets the settings of that number;
without the file (or for a session it does not name) that is the environment's settings, unchanged.

    sessions:
      centro:   {provider: waha, flow_file: flows/centro.yaml, slots: 2}
      sul:      {provider: cloud, phone_number_id: "1098765", templates: {reminder: {name: lembrete}}}
      norte:    {provider: evolution, instance: clinica-norte, schedule_file: norte.yaml}
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from wsm.core.settings import Settings

# key in a session's section -> Settings field it overrides
FIELDS = {
    "provider": "provider",
    "flow_file": "flow_file",
    "schedule_file": "schedule_file",
    "slots": "max_active",
    "idle_timeout_s": "idle_timeout_s",
    "waha_url": "waha_url",
    "waha_api_key": "waha_api_key",
    "phone_number_id": "meta_phone_number_id",
    "access_token": "meta_access_token",
    "templates": "meta_templates",
    "instance": "evolution_instance",
    "evolution_url": "evolution_url",
    "api_key": "evolution_api_key",
}
INT_FIELDS = {"slots", "idle_timeout_s"}


class SessionsFileError(ValueError):
    """The sessions file cannot be used; the message names the file, the session and the key."""


@cache
def load_sessions(path: str) -> dict[str, dict[str, Any]]:
    """Each session's overrides by Settings field name, validated (relative paths resolved from the file)."""
    from wsm.core.settings import PROVIDERS

    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise SessionsFileError(f"{path}: cannot read the sessions file: {e}") from e
    sections = raw.get("sessions") if isinstance(raw, dict) else None
    if not isinstance(sections, dict) or not sections:
        raise SessionsFileError(f"{path}: expected a 'sessions:' mapping with one section per session")
    out: dict[str, dict[str, Any]] = {}
    for name, section in sections.items():
        where = f"{path}: session {name!r}"
        if not isinstance(name, str) or not name or "{" in name or "}" in name or len(name) > 128:
            raise SessionsFileError(f"{where}: a session name is 1..128 characters without braces")
        section = section or {}
        if not isinstance(section, dict):
            raise SessionsFileError(f"{where}: must be a mapping")
        unknown = sorted(set(section) - set(FIELDS))
        if unknown:
            raise SessionsFileError(
                f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(FIELDS)}"
            )
        overrides: dict[str, Any] = {}
        for key, value in section.items():
            overrides[FIELDS[key]] = _value(where, key, value, source)
        if overrides.get("provider", "waha") not in PROVIDERS:
            raise SessionsFileError(f"{where}: provider must be one of {', '.join(PROVIDERS)}")
        out[name] = overrides
    _check_unique(path, out, "meta_phone_number_id")
    _check_unique(path, out, "evolution_instance")
    return out


def _value(where: str, key: str, value: Any, source: Path) -> Any:
    if key in INT_FIELDS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SessionsFileError(f"{where}: {key} must be a positive integer")
        return value
    if key == "templates":
        if not isinstance(value, dict):
            raise SessionsFileError(f"{where}: templates must be a mapping of purpose -> template")
        return json.dumps(value)
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise SessionsFileError(f"{where}: {key} must be a string")
    value = str(value).strip()
    if key in ("flow_file", "schedule_file") and value and not Path(value).is_absolute():
        value = str(source.parent / value)
    return value.rstrip("/") if key.endswith("_url") else value


def _check_unique(path: str, sessions: dict[str, dict[str, Any]], field: str) -> None:
    seen: dict[str, str] = {}
    for name, overrides in sessions.items():
        value = overrides.get(field)
        if value and value in seen:
            raise SessionsFileError(f"{path}: sessions {seen[value]!r} and {name!r} share {field} {value!r}")
        if value:
            seen[value] = name


_derived: dict[tuple[int, str], Settings] = {}


def settings_for_session(settings: Settings, session: str) -> Settings:
    """The session's settings, built once per settings object and session (so caches keyed by them hold)."""
    if not settings.sessions_file:
        return settings
    key = (id(settings), session)
    found = _derived.get(key)
    if found is None:
        overrides = load_sessions(settings.sessions_file).get(session)
        found = dataclasses.replace(settings, **overrides).with_provider_defaults() if overrides else settings
        if len(_derived) > 4096:
            _derived.clear()
        _derived[key] = found
    return found


def named_sessions(settings: Settings) -> list[str]:
    """The sessions the file names (empty without a file)."""
    return list(load_sessions(settings.sessions_file)) if settings.sessions_file else []


def session_where(settings: Settings, field: str, value: str, default: str) -> str | None:
    """The session whose ``field`` is ``value`` (a Cloud API phone number id, an Evolution instance).

    Without a sessions file: ``default`` when the environment's setting is unset or equal to ``value``.
    """
    if settings.sessions_file:
        for name, overrides in load_sessions(settings.sessions_file).items():
            if overrides.get(field) == value:
                return name
        return None
    configured = getattr(settings, field)
    return default if not configured or configured == value else None
