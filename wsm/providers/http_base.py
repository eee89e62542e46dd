"""The HTTP plumbing the Cloud API and Evolution clients share (urllib3, as :mod:`wsm.waha.client`)."""

from __future__ import annotations

import json
import time
from typing import Any

import urllib3
from urllib3.util.retry import Retry

from wsm.core.errors import WahaRetryable
from wsm.metrics import record as metrics


class JsonHttp:
    """A pool of connections to one API; only connection failures before sending are retried here."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float, secret: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json", "Content-Type": "application/json", **headers}
        self.secret = secret
        retry = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2, allowed_methods=None)
        self.http = urllib3.PoolManager(
            num_pools=4, maxsize=64, block=False, retries=retry, timeout=urllib3.Timeout(total=timeout_s)
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None, endpoint: str) -> tuple[int, Any, str]:
        """(status, parsed JSON or {}, short error text with the secret blanked); transport errors are retryable."""
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        started = time.perf_counter()
        try:
            res = self.http.request(method, self.base_url + path, body=payload, headers=self.headers)
        except urllib3.exceptions.HTTPError as e:
            metrics.waha_request(endpoint, "error", time.perf_counter() - started)
            raise WahaRetryable(f"{endpoint}: {type(e).__name__}") from None
        metrics.waha_request(endpoint, str(res.status), time.perf_counter() - started)
        raw = res.data.decode("utf-8", "replace")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        text = raw if self.secret == "" else raw.replace(self.secret, "***")
        return res.status, data, text[:300]
