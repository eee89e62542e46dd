"""Load generators: wrk for throughput (a, c), and Python senders for latency (b) and closed loops (e).

wrk is Debian's package (``apt-get install -y wrk``). The Python senders keep one keep-alive
connection per thread (``http.client``, lighter than requests) and take ``time.time()`` just
before writing each request, the clock the recording WAHA stand-in uses for arrivals.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LUA = Path(__file__).with_name("wrk_post.lua")
WRK_THREADS = 2


def find_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu), then run again")
    return found


def wrk_version() -> str:
    out = subprocess.run([find_wrk(), "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip()


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int  # answered requests
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int  # "Non-2xx or 3xx responses" from wrk's output
    socket_errors: int  # connect + read + write + timeout
    bodies_reused: int  # requests that re-posted a body (the file was too short): duplicates, not ingests

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


def run_wrk(url: str, bodies: Path, connections: int, duration_s: int) -> WrkResult:
    argv = [
        find_wrk(), f"-t{WRK_THREADS}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s",
        "-s", str(LUA), url, "--", str(bodies), str(WRK_THREADS),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120, check=False)
    if out.returncode != 0 or "WRK_JSON" not in out.stdout:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    data = json.loads(out.stdout.split("WRK_JSON", 1)[1].splitlines()[0])
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out.stdout)
    duration = data["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=data["requests"],
        duration_s=round(duration, 3),
        rps=round(data["requests"] / duration, 1),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        bodies_reused=data["bodies_reused"],
    )


class Poster:
    """One keep-alive connection; reconnects once when the server closed it (a repeated POST is deduped)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                res = self.conn.getresponse()
                data = res.read()
                if res.status >= 300:
                    raise RuntimeError(f"{method} {path}: HTTP {res.status} {data[:200]!r}")
                return data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, body: bytes, headers: dict[str, str]) -> None:
        self.request("POST", self.path, body, headers)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass(frozen=True)
class Sent:
    chat: str
    due: float  # time.time() it was scheduled for
    sent: float  # time.time() just before the request was written
    ok: bool


def open_loop(url: str, schedule: Sequence[tuple[float, str, bytes, dict]], threads: int = 32) -> list[Sent]:
    """POST each (due time, chat, body, headers) at its due time, whatever the answers take; in schedule order."""
    results: list[Sent] = []
    lock = threading.Lock()
    cursor = iter(schedule)

    def run() -> None:
        poster = Poster(url)
        while True:
            with lock:
                item = next(cursor, None)
            if item is None:
                break
            due, chat, raw, headers = item
            time.sleep(max(0.0, due - time.time()))
            sent = time.time()
            try:
                poster.post(raw, headers)
                ok = True
            except (RuntimeError, OSError, http.client.HTTPException):
                ok = False
            with lock:
                results.append(Sent(chat, due, sent, ok))
        poster.close()

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def closed_loop(
    chats: Sequence[str],
    until: float,
    send: Callable[[Poster, str, int], None],
    wait_reply: Callable[[Poster, str, int], bool],
    webhook_url: str,
    waha_url: str,
) -> dict[str, int]:
    """Each chat sends its next message as soon as the reply to its previous one arrived, until ``until``;
    returns how many messages each chat sent."""
    counts: dict[str, int] = {}

    def run(chat: str) -> None:
        poster, waiter = Poster(webhook_url), Poster(waha_url, timeout_s=60)
        k = 0
        try:
            while time.time() < until:
                send(poster, chat, k)
                k += 1
                if not wait_reply(waiter, chat, k):
                    break  # no reply in time: this chat stops; its count shows it
        except (RuntimeError, OSError, http.client.HTTPException):
            pass  # a refused or failed POST ends this chat's loop the same way
        finally:
            counts[chat] = k
            poster.close()
            waiter.close()

    workers = [threading.Thread(target=run, args=(chat,), daemon=True) for chat in chats]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return counts
