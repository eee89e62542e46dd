"""A keep-alive HTTP/1.1 client for the calls on the hot path: the provider's API and the router's deliveries.

libcurl (pycurl) rather than urllib3: a POST and its answer cost 50 µs of CPU against urllib3's 250 µs
(``python -m bench.http_clients``, side by side against one local server), and a reply takes three of them.
One curl handle serves one call at a time and keeps its connection open, so the client keeps a stack of
idle handles and makes another when every handle is busy: as many open connections as calls at once.
Where pycurl has no wheel (AWS Lambda's Python 3.11 runs on glibc 2.26, its wheels need 2.28) the same
client runs on urllib3, as it did before (:class:`Urllib3Client`).

Only a failure to connect is retried here (nothing was sent, so a POST cannot be doubled); a timeout or a
connection that broke once the request went out is :class:`TransportError` and the caller decides.

:class:`Transfers` runs many calls at once from one thread (libcurl's multi interface) inside a wait on other
sockets too: the router waits on its Pub/Sub connection and its deliveries together, so an event goes out with no
hand-off to another thread.
"""

from __future__ import annotations

import io
import os
import select
import ssl
import threading
import time
from collections.abc import Callable
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
        target = self._target(method, path)
        return _not_redirected(self._request(method, target, body, headers or [], timeout_s or self.timeout_s, retry))

    def _target(self, method: str, path: str) -> str:
        if method not in ("GET", "POST"):
            raise ValueError(f"unsupported method {method!r}")
        return (self.prefix + path or "/") + self.query

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
            out = self._prepare(handle, method, target, body, headers, timeout_s)
            self._perform(handle, self.connect_retries if retry else 0)
            return Answer(handle.getinfo(pycurl.RESPONSE_CODE), out.getvalue())
        finally:
            self._give_back(handle)

    def _prepare(
        self, handle: pycurl.Curl, method: str, target: str, body: bytes | None, headers: list[str], timeout_s: float
    ) -> io.BytesIO:
        """Set ``handle`` up for one call; the answer's body will be in the buffer returned."""
        handle.setopt(pycurl.URL, self.origin + target)
        handle.setopt(pycurl.HTTPHEADER, self._headers + headers if headers else self._headers)
        handle.setopt(pycurl.TIMEOUT_MS, int(timeout_s * 1000))
        if method == "GET":
            handle.setopt(pycurl.HTTPGET, 1)
        else:
            handle.setopt(pycurl.POSTFIELDS, body or b"")
        out = io.BytesIO()
        handle.setopt(pycurl.WRITEDATA, out)
        return out

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
                    raise _curl_error(code) from None
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

Done = Callable[["Answer | TransportError"], None]  # told how a started call ended


class Transfers:
    """Calls of :class:`CurlClient` s under way at once, moved on by :meth:`wait` from one thread.

    Not thread-safe: the thread that starts calls waits and is called back (from :meth:`wait`). A call here is
    never retried, not even a refused connect: its caller (the router) has retries of its own.
    """

    def __init__(self) -> None:
        self._multi = pycurl.CurlMulti()
        self._running: dict[pycurl.Curl, tuple[CurlClient, io.BytesIO, Done]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def start(
        self, client: CurlClient, method: str, path: str, body: bytes | None, headers: list[str], done: Done
    ) -> None:
        """Begin one call; ``done`` gets its :class:`Answer` or :class:`TransportError` from a later :meth:`wait`."""
        target = client._target(method, path)
        handle = client._take()
        try:
            out = client._prepare(handle, method, target, body, headers, client.timeout_s)
            self._multi.add_handle(handle)
        except BaseException:
            client._give_back(handle)
            raise
        self._running[handle] = (client, out, done)

    def wait(self, readable: list[int], timeout_s: float) -> set[int]:
        """Wait at most ``timeout_s`` for one of ``readable`` (file descriptors) or a call's socket, move the calls on
        and call back those that ended; returns which of ``readable`` can be read."""
        self._perform()  # a call just started sends now, and says what to wait for
        reads, writes, errors = self._multi.fdset()
        wait_ms = self._multi.timeout()
        if wait_ms >= 0:
            timeout_s = min(timeout_s, wait_ms / 1000)
        events = dict.fromkeys(errors, select.POLLPRI)
        for fd in writes:
            events[fd] = events.get(fd, 0) | select.POLLOUT
        for fd in (*readable, *reads):
            events[fd] = events.get(fd, 0) | select.POLLIN
        poller = select.poll()
        for fd, mask in events.items():
            poller.register(fd, mask)
        ready = {fd for fd, _ in poller.poll(max(0, int(timeout_s * 1000)))}
        if self._running:
            self._perform()
        return ready & set(readable)

    def close(self) -> None:
        """Abandon every call under way (nobody is called back) and free the multi handle."""
        for handle in list(self._running):
            self._multi.remove_handle(handle)
            handle.close()
            del self._running[handle]
        self._multi.close()

    def _perform(self) -> None:
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ended, failed = self._multi.info_read()
            for handle in ended:
                self._end(handle, None)
            for handle, code, _ in failed:
                self._end(handle, code)
            if not queued:
                return

    def _end(self, handle: pycurl.Curl, code: int | None) -> None:
        self._multi.remove_handle(handle)
        client, out, done = self._running.pop(handle)
        result: Answer | TransportError
        if code is None:
            try:
                result = _not_redirected(Answer(handle.getinfo(pycurl.RESPONSE_CODE), out.getvalue()))
            except TransportError as e:
                result = e
        else:
            result = _curl_error(code)
        client._give_back(handle)
        done(result)


def _not_redirected(answer: Answer) -> Answer:
    if 300 <= answer.status < 400:  # never followed: a POST must not be re-sent elsewhere, nor taken as sent
        raise TransportError(f"redirected (HTTP {answer.status}): the configured URL is not the server's own")
    return answer


def _curl_error(code: int) -> TransportError:
    return TransportError(_reason(code), timed_out=code == pycurl.E_OPERATION_TIMEDOUT)


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
