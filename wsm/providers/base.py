"""The provider seam: what the rest of the system needs from a WhatsApp API, and nothing more.

Inbound, each provider verifies a webhook request and parses it into the events the system already
knows (:mod:`wsm.waha.event`: :class:`Message` from a person or our own number, :class:`Ack` a delivery
status, :class:`SessionStatus` the number's connection, :class:`Ignored`). Outbound, each provider's
client offers the calls :class:`wsm.delivery.outbox.Sender` makes. Failures map to the one error tree
(:mod:`wsm.core.errors`): retryable, session not ready (hold), rejected (dead letter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from wsm.waha.event import WahaEvent

WAHA, CLOUD, EVOLUTION = "waha", "cloud", "evolution"  # the WSM_PROVIDER values (wsm.core.settings.PROVIDERS)
OUTSIDE_WINDOW = "OUTSIDE_WINDOW"  # the reason a free-form send is held: the Cloud API's 24-hour window is closed


@dataclass(frozen=True)
class Template:
    """An approved Cloud API template for one purpose; ``parameters`` are body texts, ``{text}`` = our message."""

    name: str
    language: str = "pt_BR"
    parameters: tuple[str, ...] = ("{text}",)

    def body_parameters(self, text: str) -> list[dict[str, str]]:
        return [{"type": "text", "text": p.replace("{text}", text)} for p in self.parameters]


@dataclass(frozen=True)
class Inbound:
    """A parsed webhook: the events it carries (a Cloud API body batches many), in order."""

    events: list[WahaEvent] = field(default_factory=list)


class Outbound(Protocol):
    """What the sender calls. ``window_s`` > 0: free-form sends only that long after the person's last message."""

    provider: str
    window_s: int

    def send_text(self, session: str, chat_id: str, text: str) -> str: ...

    def send_template(self, session: str, chat_id: str, template: Template, text: str) -> str: ...

    def send_seen(self, session: str, chat_id: str, message_ids: list[str] | None = None) -> None: ...

    def start_typing(self, session: str, chat_id: str) -> None: ...

    def stop_typing(self, session: str, chat_id: str) -> None: ...

    def session_status(self, session: str) -> str: ...


def phone_of(chat_id: str) -> str:
    """The digits the Cloud API and Evolution address a person by (``5511...@c.us`` -> ``5511...``)."""
    return chat_id.split("@", 1)[0]


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
