"""The seed-like lossy webhook part (b) is compared with: PUBLISH the raw body and answer, nothing durable.

It is what the original prototype did (a Pub/Sub message is the only copy, so a message with no
subscriber listening is gone); :mod:`bench.lossy_relay` is its one subscriber.
"""

import os

import flask
import functions_framework
import redis

CHANNEL = "seed:messages"
_client: redis.Redis | None = None


@functions_framework.http
def lossy(request: flask.Request) -> str:
    global _client  # opened after gunicorn's fork, like the real webhook
    if _client is None:
        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    _client.publish(CHANNEL, request.get_data())
    return "ok"
