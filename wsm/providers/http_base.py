"""The HTTP plumbing the Cloud API and Evolution clients share (:mod:`wsm.core.http_client`, as WAHA's client)."""

from __future__ import annotations

import json
import time
from typing import Any

from wsm.core.errors import WahaRetryable
from wsm.core.http_client import HttpClient, TransportError
from wsm.metrics import record as metrics


class JsonHttp:
    """Keep-alive connections to one API; only connection failures before sending are retried here."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float, secret: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self.http = HttpClient(
            self.base_url, {"Accept": "application/json", "Content-Type": "application/json", **headers}, timeout_s
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None, endpoint: str) -> tuple[int, Any, str]:
        """(status, parsed JSON or {}, short error text with the secret blanked); transport errors are retryable."""
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        started = time.perf_counter()
        try:
            res = self.http.request(method, path, payload)
        except TransportError as e:
            metrics.waha_request(endpoint, "error", time.perf_counter() - started)
            raise WahaRetryable(f"{endpoint}: {e}") from None
        metrics.waha_request(endpoint, str(res.status), time.perf_counter() - started)
        raw = res.body.decode("utf-8", "replace")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        text = raw if self.secret == "" else raw.replace(self.secret, "***")
        return res.status, data, text[:300]
