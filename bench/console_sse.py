"""The console's live feed against refreshing: how soon an operator sees a person join the human queue.

Side by side in one run, on one Redis and one console (the real Flask app, threaded werkzeug server, logged in
through its form): a Server-Sent Events client on ``/events`` and a page that reloads ``/queues`` every
``--poll-s`` seconds (what "constantly have to refresh" amounts to). ``--trials`` times, at a random moment, a
chat is handed to the human queue (the real ``owner_queue.lua``); each client's delay until it shows is recorded,
and so are the requests each made. Prints one JSON object; ``sse_vs_poll`` > 1 means the feed is that many times
sooner.

    .venv/bin/python -m bench.console_sse [--trials 20] [--poll-s 1.0]
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import statistics
import threading
import time
from typing import Any

import click
import requests
from werkzeug.serving import make_server

from bench.stack import client_for, private_redis
from infra.platform.redis_server import free_port
from wsm.attendance.operators import Operators
from wsm.attendance.ownership import Ownership
from wsm.console.app import create_app
from wsm.core.settings import Settings
from wsm.store import keys
from wsm.store.scripts import Scripts

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def logged_in(url: str, password: str) -> requests.Session:
    http = requests.Session()
    form = http.get(url + "login", timeout=10).text
    found = CSRF.search(form)
    assert found, "no CSRF field on the login page"
    res = http.post(url + "login", data={"name": "bench", "password": password, "csrf": found.group(1)}, timeout=10)
    assert res.ok and res.url.endswith("/queues"), "the bench operator could not log in"
    return http


class Sse(threading.Thread):
    """Reads /events (reconnecting like a browser) and notes when each chat first appears in an event."""

    def __init__(self, http: requests.Session, url: str) -> None:
        super().__init__(daemon=True)
        self.http, self.url = http, url
        self.seen: dict[str, float] = {}
        self.requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        last = ""
        while not self.stop.is_set():
            self.requests += 1
            headers = {"Last-Event-ID": last} if last else {}
            with self.http.get(self.url + "events", headers=headers, stream=True, timeout=60) as res:
                for line in res.iter_lines(decode_unicode=True):
                    if line.startswith("id: "):
                        last = line[4:]
                    elif line.startswith("data: "):
                        chat = json.loads(line[6:]).get("chat")
                        if chat:
                            self.seen.setdefault(chat, time.monotonic())


class Poller(threading.Thread):
    """Reloads /queues every ``period`` seconds and notes when each chat first shows on it."""

    def __init__(self, http: requests.Session, url: str, period: float, chats: list[str]) -> None:
        super().__init__(daemon=True)
        self.http, self.url, self.period, self.chats = http, url, period, chats
        self.seen: dict[str, float] = {}
        self.requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self.requests += 1
            page = self.http.get(self.url + "queues", timeout=10).text
            for chat in self.chats:
                if chat in page:
                    self.seen.setdefault(chat, time.monotonic())


def measure(trials: int, poll_s: float) -> dict[str, Any]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with private_redis(appendonly=False) as server:
        os.environ.update(REDIS_URL=server.url, WSM_CONSOLE_SECRET="bench-secret", WSM_CONSOLE_SSE_S="25")
        settings = Settings.from_env()
        client = client_for(server.url)
        client.sadd(keys.SESSIONS, "default")
        password = Operators(client).add("bench")
        port = free_port()
        web = make_server("127.0.0.1", port, create_app(settings, client), threaded=True)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{port}/"
        chats = [f"55119{n:08d}@c.us" for n in range(trials)]
        sse, poller = Sse(logged_in(url, password), url), Poller(logged_in(url, password), url, poll_s, chats)
        sse.start()
        poller.start()
        time.sleep(1.0)
        ownership = Ownership(client, Scripts(client), settings)
        started: dict[str, float] = {}
        begun = time.monotonic()
        for chat in chats:
            time.sleep(random.uniform(0.2, 2 * poll_s))
            started[chat] = time.monotonic()
            ownership.hand_off("default", chat, "bench")
        time.sleep(2 * poll_s + 1)
        elapsed = time.monotonic() - begun
        sse.stop.set()
        poller.stop.set()
        web.shutdown()

    def delays(seen: dict[str, float]) -> list[float]:
        return [(seen[c] - started[c]) * 1000 for c in chats if c in seen]

    sse_ms, poll_ms = delays(sse.seen), delays(poller.seen)
    return {
        "trials": trials,
        "poll_s": poll_s,
        "sse_seen": len(sse_ms),
        "poll_seen": len(poll_ms),
        "sse_median_ms": round(statistics.median(sse_ms), 1),
        "poll_median_ms": round(statistics.median(poll_ms), 1),
        "sse_vs_poll": round(statistics.median(poll_ms) / max(0.1, statistics.median(sse_ms)), 1),
        "sse_requests_per_min": round(sse.requests / elapsed * 60, 1),
        "poll_requests_per_min": round(poller.requests / elapsed * 60, 1),
    }


@click.command()
@click.option("--trials", default=20, show_default=True)
@click.option("--poll-s", default=1.0, show_default=True, help="the refreshing page's period")
def main(trials: int, poll_s: float) -> None:
    click.echo(json.dumps(measure(trials, poll_s)))


if __name__ == "__main__":
    main()
