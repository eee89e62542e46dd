"""``wsm migrate``: convert chats written by the old layout (``log`` + ``msgs``) to the compact ``history`` list.

Safe to run while the system serves (each chat is one atomic script that re-checks what was read) and
to run again (a migrated chat has no old keys left). The old layout's ``seen:<id>`` markers are left to
expire: ingest still counts them as known until then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import redis

from wsm.core.settings import Settings
from wsm.store import keys, record_codec
from wsm.store.connection import redis_errors
from wsm.store.scripts import Scripts

OLD_SUFFIXES = (":log", ":msgs")
ATTEMPTS = 5
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass
class Migrated:
    session: str
    chats: int = 0
    records: int = 0
    skipped: list[str] | None = None  # chats that kept changing under us (run again)


def old_layout_chats(client: redis.Redis, session: str) -> set[str]:
    """Chat ids of the session that still have old-layout keys."""
    prefix = keys.SessionKeys(session).tag + ":chat:"
    found: set[str] = set()
    for suffix in OLD_SUFFIXES:
        for name in client.scan_iter(match=_GLOB_SPECIAL.sub(r"\\\1", prefix) + "*" + suffix, count=1000):
            found.add(name[len(prefix) : -len(suffix)])
    return found


def migrate_chat(client: redis.Redis, scripts: Scripts, settings: Settings, session: str, chat_id: str) -> int | None:
    """Move one chat's old records into its history; the number moved, or None if it kept changing."""
    ck = keys.SessionKeys(session).chat(chat_id)
    for _ in range(ATTEMPTS):
        pipe = client.pipeline(transaction=True)
        pipe.lrange(ck.log, 0, -1)
        pipe.hgetall(ck.msgs)
        ids, by_id = pipe.execute()
        kept = [i for i in ids if i in by_id]
        pairs = [record_codec.encode_pair({**json.loads(by_id[i]), "id": i}, chat_id) for i in kept]
        stored_ids, records = [p[0] for p in pairs], [p[1] for p in pairs]
        result = scripts.migrate_chat(
            keys=[ck.log, ck.msgs, ck.history, ck.seen],
            args=[
                len(ids), len(by_id), json.dumps(records), json.dumps(stored_ids),
                settings.history_max, settings.dedupe_window, settings.dedupe_max, settings.dedupe_ttl_s,
                settings.state_retention_s,
            ],
        )  # fmt: skip
        if result[0] == "migrated":
            return int(result[1])
    return None


def migrate_session(client: redis.Redis, settings: Settings, session: str) -> Migrated:
    """Convert every old-layout chat of one session."""
    scripts = Scripts(client)
    done = Migrated(session, skipped=[])
    with redis_errors():
        for chat_id in sorted(old_layout_chats(client, session)):
            moved = migrate_chat(client, scripts, settings, session, chat_id)
            if moved is None:
                done.skipped.append(chat_id)  # type: ignore[union-attr]
                continue
            done.chats += 1
            done.records += moved
    return done


def known_sessions(client: redis.Redis) -> list[str]:
    with redis_errors():
        return sorted(client.smembers(keys.SESSIONS))
