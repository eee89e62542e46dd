"""A keep-alive HTTP/1.1 client for the calls on the hot path: the provider's API and the router's deliveries.

libcurl (pycurl) rather than urllib3: a POST and its answer cost 50 µs of CPU against urllib3's 250 µs
(``python -m bench.http_clients``, side by side against one local server), and a reply takes three of them.
One curl handle serves one call at a time and keeps its connection open, so the client keeps a stack of
idle handles and makes another when every handle is busy: as many open connections as calls at once.
Where pycurl has no wheel (AWS Lambda's Python 3.11 runs on glibc 2.26, its wheels need 2.28) the same
client runs on urllib3, as it did before (:class:`Urllib3Client`).

Only a failure to connect is retried here (nothing was sent, so a POST cannot be doubled); a timeout or a
connection that broke once the request went out is :class:`TransportError` and the caller decides.
"""

from __future__ import annotations

import io
import os
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

try:
    import pycurl
except ImportError:  # no wheel for this platform: Urllib3Client
    pycurl = None

CONNECT_RETRIES = 2  # further tries when the server could not be reached at all
RETRY_PAUSE_S = 0.2  # before the second further try (the first is at once)
_CA_FILE = ssl.get_default_verify_paths().cafile  # the system's CA bundle, as Python's ssl module finds it


class TransportError(Exception):
    """No usable answer: refused, unreachable, timed out, cut, or a redirect; the text never holds the URL."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class _Client:
    """Calls to one server (``base_url``: its path prefixes, its query follows, every call's path), thread-safe."""

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout_s: float, connect_retries: int = CONNECT_RETRIES
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self.query = f"?{parts.query}" if parts.query else ""
        self.timeout_s = timeout_s
        self.connect_retries = connect_retries
        for name, value in headers.items():
            if not (name + value).isascii() or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} must be one line of ASCII")
        self.headers = headers

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: list[str] | None = None,
        timeout_s: float = 0,
        retry: bool = True,
    ) -> Answer:
        """One GET or POST; ``headers`` ("Name: value") add to the client's; ``timeout_s`` > 0 replaces its timeout."""
        if method not in ("GET", "POST"):
            raise ValueError(f"unsupported method {method!r}")
        target = (self.prefix + path or "/") + self.query
        answer = self._request(method, target, body, headers or [], timeout_s or self.timeout_s, retry)
        if 300 <= answer.status < 400:  # never followed: a POST must not be re-sent elsewhere, nor taken as sent
            raise TransportError(f"redirected (HTTP {answer.status}): the configured URL is not the server's own")
        return answer

    def _request(
        self, method: str, target: str, body: bytes | None, headers: list[str], timeout_s: float, retry: bool
    ) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class CurlClient(_Client):
    """libcurl: a stack of idle easy handles, each with its open connection."""

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout_s: float, connect_retries: int = CONNECT_RETRIES
    ) -> None:
        super().__init__(base_url, headers, timeout_s, connect_retries)
        self._headers = [f"{name}: {value}" for name, value in headers.items()] + ["Expect:"]  # no 100-continue wait
        self._idle: list[pycurl.Curl] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _request(
        self, method: str, target: str, body: bytes | None, headers: list[str], timeout_s: float, retry: bool
    ) -> Answer:
        handle = self._take()
        try:
            handle.setopt(pycurl.URL, self.origin + target)
            handle.setopt(pycurl.HTTPHEADER, self._headers + headers if headers else self._headers)
            handle.setopt(pycurl.TIMEOUT_MS, int(timeout_s * 1000))
            if method == "GET":
                handle.setopt(pycurl.HTTPGET, 1)
            else:
                handle.setopt(pycurl.POSTFIELDS, body or b"")
            out = io.BytesIO()
            handle.setopt(pycurl.WRITEDATA, out)
            self._perform(handle, self.connect_retries if retry else 0)
            return Answer(handle.getinfo(pycurl.RESPONSE_CODE), out.getvalue())
        finally:
            self._give_back(handle)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for handle in idle:
            handle.close()

    def _perform(self, handle: pycurl.Curl, retries: int) -> None:
        for attempt in range(retries + 1):
            try:
                handle.perform()
                return
            except pycurl.error as e:
                code = e.args[0]
                if code not in (pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST) or attempt == retries:
                    raise TransportError(_reason(code), timed_out=code == pycurl.E_OPERATION_TIMEDOUT) from None
            if attempt:
                time.sleep(RETRY_PAUSE_S * 2**attempt)

    def _take(self) -> pycurl.Curl:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return self._new_handle()

    def _give_back(self, handle: pycurl.Curl) -> None:
        with self._lock:
            self._idle.append(handle)

    def _new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: calls come from many threads
        handle.setopt(pycurl.PROXY, "")  # as urllib3 did: no proxy from the environment
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.TCP_NODELAY, 1)
        if self.origin.startswith("https:") and _CA_FILE and os.path.exists(_CA_FILE):
            handle.setopt(pycurl.CAINFO, _CA_FILE)
        return handle


class Urllib3Client(_Client):
    """The same client on a urllib3 pool, where pycurl is not installed (five times its CPU per call)."""

    def __init__(
        self, base_url: str, headers: dict[str, str], timeout_s: float, connect_retries: int = CONNECT_RETRIES
    ) -> None:
        super().__init__(base_url, headers, timeout_s, connect_retries)
        retries = urllib3.Retry(
            total=connect_retries, connect=connect_retries, read=0, status=0, other=0, backoff_factor=RETRY_PAUSE_S,
            allowed_methods=None,
        )  # fmt: skip
        self._pool = urllib3.connection_from_url(
            self.origin, maxsize=64, block=False, retries=retries, timeout=urllib3.Timeout(total=timeout_s)
        )

    def _request(
        self, method: str, target: str, body: bytes | None, headers: list[str], timeout_s: float, retry: bool
    ) -> Answer:
        sent = dict(self.headers)
        sent.update(line.split(": ", 1) for line in headers)
        extra: dict = {"timeout": urllib3.Timeout(total=timeout_s), "redirect": False}
        if not retry:
            extra["retries"] = False
        try:
            res = self._pool.urlopen(method, target, body=body, headers=sent, **extra)
        except urllib3.exceptions.HTTPError as e:  # its text may hold the URL: a reason of our own
            cause = e.reason if isinstance(e, urllib3.exceptions.MaxRetryError) else e
            if isinstance(cause, urllib3.exceptions.NewConnectionError):  # (a subclass of the timeout)
                raise TransportError("connection refused or unreachable") from None
            if isinstance(cause, urllib3.exceptions.TimeoutError):
                raise TransportError("timed out", timed_out=True) from None
            raise TransportError(type(cause).__name__) from None
        return Answer(res.status, res.data)

    def close(self) -> None:
        self._pool.close()


HttpClient: type[_Client] = CurlClient if pycurl is not None else Urllib3Client


def _reason(code: int) -> str:
    names = {
        pycurl.E_COULDNT_CONNECT: "connection refused or unreachable",
        pycurl.E_COULDNT_RESOLVE_HOST: "host not found",
        pycurl.E_OPERATION_TIMEDOUT: "timed out",
        pycurl.E_GOT_NOTHING: "connection closed without an answer",
        pycurl.E_SEND_ERROR: "connection broke while sending",
        pycurl.E_RECV_ERROR: "connection broke while receiving",
        pycurl.E_SSL_CONNECT_ERROR: "TLS handshake failed",
        pycurl.E_PEER_FAILED_VERIFICATION: "TLS certificate not trusted",
    }
    return names.get(code, f"curl error {code}")
