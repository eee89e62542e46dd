"""The seed-style view bench (a) measures against does the seed's work: a fair reference, not a stub.

It must check the HMAC and store what it accepts, or the ratio "webhook ÷ seed" would compare our
durable ingest with a server that does nothing.
"""

from __future__ import annotations

import json

import pytest
import requests

from bench.bodies import BodyMaker, chat_id
from bench.stack import HMAC_KEY, client_for, private_redis, running, seed_process, url_of

pytest.importorskip("django", reason="Django (requirements-dev.txt) serves the seed-style view")


def test_the_seed_view_checks_the_signature_and_stores_what_it_accepts() -> None:
    maker = BodyMaker("bench", HMAC_KEY)
    chat = chat_id(7, 1)
    with private_redis() as server, running(seed_process(server.url)) as seed:
        r = client_for(server.url)
        message_id, raw, headers = maker.signed(chat, "Olá")
        wrong = {**headers, "X-Webhook-Hmac": "0" * 128}
        assert requests.post(url_of(seed), data=raw, headers=wrong, timeout=10).status_code == 401
        assert r.keys("seed:*") == []
        answer = requests.post(url_of(seed), data=raw, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "accepted", "id": message_id}
        stored = r.lrange(f"seed:chat:bench:{chat}", 0, -1)
        assert [json.loads(x)["id"] for x in stored] == [message_id]
        assert r.zscore("seed:queue:bench", chat) is not None
        assert r.exists(f"seed:seen:{message_id}")
