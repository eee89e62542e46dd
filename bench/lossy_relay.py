"""The lossy reference's one subscriber: each published WAHA message becomes a ``sendText`` to WAHA at once.

No lease, no outbox, no seen/typing calls: the least a reply can cost. Runs as its own process
(``python -m bench.lossy_relay --redis-url U --waha-url W``), like the seed's single worker.
"""

from __future__ import annotations

import json

import click
import redis
import urllib3

from bench.lossy.main import CHANNEL


@click.command()
@click.option("--redis-url", required=True)
@click.option("--waha-url", required=True)
def main(redis_url: str, waha_url: str) -> None:
    pool = urllib3.PoolManager(maxsize=4)
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    for message in pubsub.listen():
        event = json.loads(message["data"])
        payload = event["payload"]
        body = {"session": event["session"], "chatId": payload["from"], "text": "Olá! Como posso ajudar?"}
        pool.request("POST", f"{waha_url}/api/sendText", json=body, retries=False)


if __name__ == "__main__":
    main()
