"""Read deadlines for request bodies: gunicorn bounds no body read, so a slow client could hold a thread forever.

Used by the webhook (``WEBHOOK_READ_TIMEOUT_S``): a body not received by its deadline is cut off and
answered 408.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(eq=False)
class _Watch:
    due: float  # time.monotonic()
    sock: socket.socket
    fired: bool = False


class ReadDeadlines:
    """Cuts off bodies not received by their deadline, for gunicorn, which bounds no body read.

    One thread per process shuts the read side of a late request's socket: a blocked read then
    returns at once with what arrived, and the 408 can still be written. A socket timeout would
    not do: it bounds each recv(), and a client dribbling one byte at a time never trips it.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._watches: set[_Watch] = set()
        self._pid = 0

    @contextlib.contextmanager
    def watch(self, sock: socket.socket | None, timeout_s: float) -> Iterator[Callable[[], bool]]:
        """Within the block, reads from ``sock`` end by ``timeout_s``; yields "did the deadline pass?"."""
        if sock is None or timeout_s <= 0:  # not under gunicorn (tests' WSGI client), or no limit wanted
            yield lambda: False
            return
        watch = _Watch(time.monotonic() + timeout_s, sock)
        with self._cv:
            if self._pid != os.getpid():  # first use in this (forked) worker process
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="wsm-read-deadlines", daemon=True).start()
            self._watches.add(watch)
        try:
            yield lambda: watch.fired
        finally:
            with self._cv:
                self._watches.discard(watch)

    def _run(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._watches if w.due <= now]:
                    self._watches.discard(watch)
                    watch.fired = True
                    with contextlib.suppress(OSError):
                        watch.sock.shutdown(socket.SHUT_RD)
                self._cv.wait(min([w.due - now for w in self._watches] + [1.0]))


read_deadlines = ReadDeadlines()
