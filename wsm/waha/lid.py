"""What WAHA says about ``…@lid`` chats: a person behind a hidden id, and the phone chat (``…@c.us``) it may map to.

Two sources, both only trusted when they name a plain phone chat:

- ``GET /api/{session}/lids/{lid}`` answers ``{"lid": "…@lid", "pn": "…@c.us" | null}`` (WAHA's
  ``LidToPhoneNumber``; ``pn`` is null when the contact does not share the number);
- the message itself, when the engine put the alternative id in the raw ``_data`` (WAHA gives no
  guarantee about ``_data``, so each field is checked and anything else is ignored): NOWEB (Baileys)
  ``_data.key.remoteJidAlt`` (the chat's other id) or, on a message from the person,
  ``_data.key.senderPn``; GOWS (whatsmeow) ``_data.Info.SenderAlt`` / ``_data.Info.RecipientAlt``.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

from wsm.core.errors import WahaRetryable

LID_SUFFIX = "@lid"
_PHONE = re.compile(r"^(\d{5,20})(?::\d{1,4})?@(?:c\.us|s\.whatsapp\.net)$")  # whatsmeow may add ":<device>"


@runtime_checkable
class LidLookup(Protocol):
    """Who can ask WAHA (:class:`wsm.waha.client.WahaClient`); a protocol so the webhook's code never imports
    the HTTP client (its bundle ships without urllib3)."""

    def lid_phone(self, session: str, lid: str, timeout_s: float) -> str | None: ...


def is_lid(chat_id: str) -> bool:
    return chat_id.endswith(LID_SUFFIX) and len(chat_id) > len(LID_SUFFIX)


def phone_chat(value: object) -> str | None:
    """``5511…@c.us`` from a phone id in any of WAHA's spellings; None for anything else."""
    if not isinstance(value, str):
        return None
    match = _PHONE.match(value)
    return f"{match.group(1)}@c.us" if match else None


def payload_phone(payload: dict[str, Any], from_me: bool) -> str | None:
    """The phone chat an engine wrote into ``_data`` next to the @lid, if any (see the module docstring)."""
    data = payload.get("_data")
    if not isinstance(data, dict):
        return None
    key, info = data.get("key"), data.get("Info")
    found: list[object] = []
    if isinstance(key, dict):
        found += [key.get("remoteJidAlt")] + ([] if from_me else [key.get("senderPn")])
    if isinstance(info, dict):
        found.append(info.get("RecipientAlt") if from_me else info.get("SenderAlt"))
    return next((chat for chat in map(phone_chat, found) if chat), None)


def parse_lid_answer(answer: Any, lid: str) -> str | None:
    """The phone chat in WAHA's lids answer, None when WAHA does not know it; a malformed answer raises."""
    if not isinstance(answer, dict) or "pn" not in answer or answer.get("lid") not in (lid, None):
        raise WahaRetryable("lids: malformed answer")
    if answer["pn"] is None:
        return None
    found = phone_chat(answer["pn"])
    if found is None:
        raise WahaRetryable("lids: 'pn' is not a phone chat id")
    return found
