"""What one handler decided for a chat: the unit of work :class:`~wsm.store.chat_store.ChatStore` commits.

It lives beside the store, not in the conversation engine that usually fills it, because the notifier
and the worker's idle close commit turns too, and the store must not import the floors above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsm.core.status import EndReason


@dataclass
class Turn:
    """What to send and which state fields to set; ``end`` frees the slot (None keeps the conversation)."""

    replies: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    end: EndReason | None = None
    records: list[dict[str, object]] = field(default_factory=list)  # history only, never sent (``kind: tool``)

    @property
    def text(self) -> str:
        return "\n\n".join(r for r in self.replies if r)
