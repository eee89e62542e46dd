"""Webhook cost per message by provider, side by side in one run: WAHA, the Cloud API one message a body,
and the Cloud API batching 10 messages a body (as Meta does under load), each signed, in-process (the
Functions Framework's ASGI app behind Starlette's TestClient) against a private redis-server. Prints messages/s
and the ratios to WAHA.

    .venv/bin/python -m bench.providers_ingest [--messages 2000]
"""

from __future__ import annotations

import os
import time
import uuid

import click
from functions_framework import create_app
from starlette.testclient import TestClient

from infra.platform.redis_server import RedisServer
from infra.waha_sim import payloads as wp
from tests import provider_helpers as ph
from wsm.core.settings import get_settings

SOURCE = "functions/webhook/main.py"


def waha_bodies(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for i in range(n):
        body = wp.message_event(f"55119{i % 500:08d}@c.us", "oi", key_id=uuid.uuid4().hex[:20])
        raw = wp.encode(body)
        out.append(("/waha", raw, wp.headers(raw, body, "bench-key")))
    return out


def cloud_bodies(n: int, batch: int) -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for start in range(0, n, batch):
        first = ph.cloud_text(f"55119{start % 500:08d}@c.us", "oi")[1]
        value = first["entry"][0]["changes"][0]["value"]
        for j in range(1, batch):
            value["messages"].append(ph.cloud_text(f"55119{(start + j) % 500:08d}@c.us", "oi")[1]["entry"][0][
                "changes"][0]["value"]["messages"][0])  # fmt: skip
        raw = ph.encode(first)
        out.append(("/cloud", raw, {"Content-Type": "application/json", "X-Hub-Signature-256": ph.meta_signature(raw)}))
    return out


@click.command()
@click.option("--messages", default=2000, show_default=True)
def main(messages: int) -> None:
    with RedisServer(appendfsync="everysec") as server:
        os.environ.update(REDIS_URL=server.url, WEBHOOK_HMAC_KEY="bench-key", META_APP_SECRET=ph.APP_SECRET,
                          META_PHONE_NUMBER_ID="1000000001", WSM_MAX_ACTIVE="1000")  # fmt: skip
        get_settings.cache_clear()
        runs = {
            "waha": waha_bodies(messages),
            "cloud": cloud_bodies(messages, 1),
            "cloud x10": cloud_bodies(messages, 10),
        }
        elapsed = dict.fromkeys(runs, 0.0)
        with TestClient(create_app("webhook", SOURCE)) as client:  # one event loop for the run, as in a worker
            for path, raw, headers in waha_bodies(200) + cloud_bodies(200, 1):  # warm up: scripts, pools, imports
                client.post(path, content=raw, headers=headers)
            for round_ in range(2):  # interleaved halves, so drift on a shared machine hits all three alike
                for name, requests in runs.items():
                    half = requests[round_::2]
                    started = time.perf_counter()
                    for path, raw, headers in half:
                        res = client.post(path, content=raw, headers=headers)
                        assert res.status_code == 200, res.content[:200]
                    elapsed[name] += time.perf_counter() - started
        rates = {name: messages / seconds for name, seconds in elapsed.items()}
        for name, rate in rates.items():
            click.echo(f"{name:10s} {rate:8.0f} messages/s   {rate / rates['waha']:.2f}x WAHA")


if __name__ == "__main__":
    main()
