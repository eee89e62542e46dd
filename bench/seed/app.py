"""The seed-style ingest the webhook is measured against: a Django view doing the prototype's naive Redis work.

What the seed did per webhook, and no more: check the HMAC, parse the JSON, then one MULTI with
``SET NX`` (seen id), ``RPUSH`` (the chat's list), ``ZADD NX`` (the queue) and ``PUBLISH`` (the worker's
doorbell). Served by gunicorn with the same workers and threads as the Functions Framework serves ours
(``WORKERS``/``THREADS``). Django is a dev-only dependency (requirements-dev.txt): nothing ships it.

    gunicorn --workers 2 --threads 8 --bind 127.0.0.1:PORT bench.seed.app:application
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

import django
import redis
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="bench-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATA_UPLOAD_MAX_MEMORY_SIZE=1 << 20,
)
django.setup()

HMAC_KEY = os.environ.get("WEBHOOK_HMAC_KEY", "").encode()
_redis = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"))


@csrf_exempt
def webhook(request: HttpRequest) -> HttpResponse:
    raw = request.body
    expected = hmac.new(HMAC_KEY, raw, hashlib.sha512).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Webhook-Hmac", "")):
        return JsonResponse({"error": "invalid signature"}, status=401)
    try:
        body = json.loads(raw)
        payload, session = body["payload"], body["session"]
        message_id, chat = payload["id"], payload["from"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "bad body"}, status=400)
    pipe = _redis.pipeline(transaction=True)
    pipe.set(f"seed:seen:{message_id}", 1, nx=True, ex=86_400)
    pipe.rpush(f"seed:chat:{session}:{chat}", json.dumps(payload))
    pipe.zadd(f"seed:queue:{session}", {chat: time.time()}, nx=True)
    pipe.publish(f"seed:inbox:{session}", chat)
    pipe.execute()
    return JsonResponse({"status": "accepted", "id": message_id})


urlpatterns = [path("", webhook)]
application = get_wsgi_application()
