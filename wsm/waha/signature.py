"""WAHA webhook authentication: HMAC-SHA512 of the raw body, and an optional replay window."""

from __future__ import annotations

import hashlib
import hmac

from wsm.core.clock import now_ms
from wsm.core.errors import BadRequest


def verify_hmac(raw: bytes, signature: str | None, key: str) -> None:
    """Raise 401 unless ``signature`` is the hex HMAC-SHA512 of ``raw`` (constant-time compare)."""
    if not signature:
        raise BadRequest("missing X-Webhook-Hmac header", status=401)
    expected = hmac.new(key.encode(), raw, hashlib.sha512).hexdigest().encode()
    given = signature.strip().lower().encode("utf-8", "replace")  # header values may hold any byte
    if not hmac.compare_digest(expected, given):
        raise BadRequest("invalid X-Webhook-Hmac signature", status=401)


def verify_timestamp(header: str | None, max_skew_s: int, now_s: float | None = None) -> None:
    """Refuse a request whose X-Webhook-Timestamp (ms) is further than ``max_skew_s`` from now.

    The timestamp is covered by the HMAC only through the body's own ``timestamp``,
    which WAHA sets equal to the header; the webhook checks both agree.
    """
    if not header:
        raise BadRequest("missing X-Webhook-Timestamp header", status=401)
    try:
        sent_ms = int(header)  # compared as integers: a 4000-digit header cannot overflow a float
    except ValueError as e:
        raise BadRequest("X-Webhook-Timestamp must be milliseconds since the epoch", status=401) from e
    now = now_ms() if now_s is None else int(now_s * 1000)
    if abs(now - sent_ms) > max_skew_s * 1000:
        raise BadRequest("X-Webhook-Timestamp outside the allowed window (replay?)", status=401)
