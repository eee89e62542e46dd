"""Personal data handling: masking phone numbers in logs (export and erase live in :mod:`wsm.ops.chat_data`)."""

from __future__ import annotations


def mask_chat(chat_id: str | None, enabled: bool = True) -> str:
    """``5511988887777@c.us`` -> ``*********7777@c.us``: enough to correlate, not to identify."""
    if not chat_id:
        return "-"
    if not enabled:
        return chat_id
    user, sep, domain = chat_id.partition("@")
    return "*" * max(0, len(user) - 4) + user[-4:] + sep + domain
