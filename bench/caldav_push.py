"""How fast booked changes reach a CalDAV server: N bookings drained into a local Radicale.

``python -m bench.caldav_push [N]`` (default 200); Redis and Radicale are private servers on free ports.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import redis

from infra.platform.redis_server import RedisServer
from tests.caldav_server import PASSWORD, USER, RadicaleServer
from wsm.core.settings import Settings
from wsm.schedule.caldav_push import CalendarPush
from wsm.schedule.config import load_schedule
from wsm.store import keys


def main(n: int) -> None:
    with RedisServer() as rs, RadicaleServer() as cal:
        r = redis.Redis.from_url(rs.url, decode_responses=True)
        s = dataclasses.replace(Settings.from_env(), caldav_url=cal.url, caldav_username=USER, caldav_password=PASSWORD)
        outbox = keys.ScheduleKeys("default").calendar_outbox
        for i in range(n):
            apt = {"id": f"apt_{i:012x}", "service": "consulta", "provider": "ana", "status": "booked"}
            apt |= {"start": "2026-12-10T09:00:00-03:00", "end": "2026-12-10T09:30:00-03:00"}
            apt["chat"] = "5511900000000@c.us"
            r.rpush(outbox, json.dumps(apt))
        push = CalendarPush(r, s, schedule=load_schedule(None))
        started = time.perf_counter()
        done = push.run("default").pushed
        took = time.perf_counter() - started
        print(f"{done} PUTs to Radicale in {took:.2f} s: {done / took:.0f}/s, {took / done * 1000:.1f} ms each")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
