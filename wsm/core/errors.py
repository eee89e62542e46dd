"""The project's error tree; library errors are caught at the boundary and re-raised as these."""

from __future__ import annotations


class WsmError(Exception):
    """Base of every error this project raises on purpose."""


class BadRequest(WsmError):
    """The caller sent something we refuse; ``status`` is the HTTP answer (400/401/405/413/415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BadEvent(WsmError, ValueError):
    """A wake-up event we cannot act on; retrying it cannot help, so it is logged and acknowledged."""


class RedisUnavailable(WsmError):
    """Redis cannot be reached or failed the command; callers answer 503 so the sender retries."""


class WahaError(WsmError):
    """WAHA did not accept a call."""


class WahaRetryable(WahaError):
    """Timeout, connection error or 5xx: try again later, keep the message pending."""


class WahaSessionNotReady(WahaError):
    """422: the WAHA session is not WORKING; hold sends until it is."""


class WahaRejected(WahaError):
    """Other 4xx: retrying will not help; dead-letter with the reason."""
