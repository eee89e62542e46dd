"""Human operators: names with scrypt-hashed passwords (global), and who is online with what capacity.

A password is made by :meth:`Operators.add` and shown once; only its scrypt hash is stored (``hashlib.scrypt``,
a memory-hard KDF in the standard library). Online presence is kept per WAHA session (``operators:online``,
score = capacity), beside the human queue, so taking a chat checks capacity in the same atomic step.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets

import redis

from wsm.core.clock import now_ms
from wsm.store import event_stream, keys

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MAX_CAPACITY = 50


class OperatorError(ValueError):
    """A bad name, an unknown operator, a capacity out of range: nothing was changed."""


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise OperatorError(f"invalid operator name {name!r}: 1-32 of a-z 0-9 . _ - (starting with a letter or digit)")
    return name


class Operators:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, name: str) -> str:
        """Create an operator; returns the one-time password (shown once, never stored)."""
        check_name(name)
        password = secrets.token_urlsafe(12)
        salt = secrets.token_bytes(16)
        record = {
            **SCRYPT,
            "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(_hash(password, salt, **SCRYPT)).decode(),
            "created_ms": now_ms(),
        }
        if not self.redis.hsetnx(keys.OPERATORS, name, json.dumps(record)):
            raise OperatorError(f"operator {name!r} exists already (remove it first to give a new password)")
        return password

    def names(self) -> list[str]:
        return sorted(self.redis.hkeys(keys.OPERATORS))

    def remove(self, name: str) -> bool:
        """Delete an operator and take them offline everywhere; False when there was none."""
        removed = bool(self.redis.hdel(keys.OPERATORS, name))
        if removed:
            for session in self.redis.smembers(keys.SESSIONS):
                self.go_offline(session, name)
        return removed

    def verify(self, name: str, password: str) -> bool:
        """Whether the password is the operator's (constant time; an unknown name costs the same)."""
        raw = self.redis.hget(keys.OPERATORS, name) if NAME.match(name or "") else None
        record = json.loads(raw) if raw else {**SCRYPT, "salt": "AAAA", "hash": ""}
        salt = base64.b64decode(record["salt"])
        computed = _hash(password or "", salt, record["n"], record["r"], record["p"])
        return bool(raw) and hmac.compare_digest(computed, base64.b64decode(record["hash"]))

    # --- presence ------------------------------------------------------------------------------------

    def go_online(self, session: str, name: str, capacity: int) -> None:
        if not 1 <= capacity <= MAX_CAPACITY:
            raise OperatorError(f"capacity must be 1..{MAX_CAPACITY}, got {capacity}")
        self.redis.zadd(keys.SessionKeys(session).operators_online, {check_name(name): capacity})
        event_stream.append(self.redis, session, event_stream.OPERATORS, operator=name)

    def go_offline(self, session: str, name: str) -> None:
        if self.redis.zrem(keys.SessionKeys(session).operators_online, name):
            event_stream.append(self.redis, session, event_stream.OPERATORS, operator=name)

    def online(self, session: str) -> dict[str, tuple[int, int]]:
        """Operator -> (capacity, chats held now)."""
        sk = keys.SessionKeys(session)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(sk.operators_online, 0, -1, withscores=True)
        pipe.hgetall(sk.operators_load)
        online, load = pipe.execute()
        return {name: (int(cap), int(load.get(name) or 0)) for name, cap in online}

    def capacity_online(self, session: str) -> int:
        return sum(cap for cap, _ in self.online(session).values())
