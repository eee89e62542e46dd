"""What @lid resolution costs the webhook, and what a merge costs, measured side by side in one run.

Ingest (in-process ``Ingestor.ingest``, a private redis-server, ``appendfsync everysec``): the same messages as
a phone chat, as an @lid whose mapping this process knows (memory), and as an @lid with no mapping (one
Redis GET each, then stored under the @lid). Merge: ``merge_chat.lua`` of an @lid chat with N history
records into a phone chat with N records.

    .venv/bin/python -m bench.lid [--messages 3000] [--history 1000]
"""

from __future__ import annotations

import statistics
import time

import click
import redis

from infra.platform.redis_server import RedisServer
from infra.waha_sim import payloads as wp
from wsm.core.settings import Settings
from wsm.ingest.ingestor import Ingestor
from wsm.waha.event import parse_event

PN = "5511977770001@c.us"


def _ingest_us(ingestor: Ingestor, chat: str, n: int) -> float:
    """Median µs per ingest of ``n`` messages of ``chat`` (one at a time)."""
    bodies = [parse_event(wp.message_event(chat, f"m{i}")) for i in range(n)]
    took = []
    for event in bodies:
        started = time.perf_counter()
        ingestor.ingest(event)
        took.append((time.perf_counter() - started) * 1e6)
    return statistics.median(took)


@click.command()
@click.option("--messages", default=3000, show_default=True)
@click.option("--history", default=1000, show_default=True)
def main(messages: int, history: int) -> None:
    with RedisServer(appendfsync="everysec") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        settings = Settings.from_env()
        ingestor = Ingestor(client, settings)
        ingestor.lids.merge("default", "1@lid", "5511900000001@c.us")  # the mapping of "known" below
        rows = [
            ("phone chat", _ingest_us(ingestor, "5511900000002@c.us", messages)),
            ("@lid, mapping known", _ingest_us(ingestor, "1@lid", messages)),
            ("@lid, unknown", _ingest_us(ingestor, "2@lid", messages)),
        ]
        base = rows[0][1]
        for name, us in rows:
            click.echo(f"ingest {name:<22} median {us:7.1f} µs   ×{us / base:.2f}")
        took = []
        for run in range(5):
            lid = f"9{run}@lid"
            for i in range(history):
                ingestor.ingest(parse_event(wp.message_event(lid if i % 2 else PN, f"h{i}")))
            started = time.perf_counter()
            ingestor.lids.merge("default", lid, PN)
            took.append((time.perf_counter() - started) * 1000)
            client.flushall()
        half = history // 2
        click.echo(f"merge of {half} + {half} history records (inbox too): median {statistics.median(took):.1f} ms")
        client.close()


if __name__ == "__main__":
    main()
