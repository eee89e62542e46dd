"""Console login: scrypt-checked passwords, a signed HttpOnly cookie naming a server-side session, CSRF tokens.

The cookie holds ``{"sid", "csrf"}`` signed with ``WSM_CONSOLE_SECRET`` (itsdangerous); the session id must
also exist in Redis (``console:session:<id>``), so logging out or removing the operator ends it at once. Every
POST carries the session's CSRF token in the form field ``csrf`` (the login form: a token from a short-lived
signed pre-login cookie). Failed logins are counted per name and per client address in Redis: past
``WSM_CONSOLE_LOGIN_MAX`` in ``WSM_CONSOLE_LOGIN_WINDOW_S`` the login answers 429 for the rest of the window.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import redis
from itsdangerous import BadSignature, URLSafeTimedSerializer

from wsm.attendance.operators import Operators
from wsm.core.settings import Settings
from wsm.store import keys

COOKIE = "wsm_console"
PRE_COOKIE = "wsm_console_login"
PRE_MAX_AGE_S = 3600


@dataclass(frozen=True)
class Login:
    operator: str
    session_id: str
    csrf: str


class Auth:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        if not settings.console_signing_key:
            raise ValueError("the console needs WSM_CONSOLE_SECRET (a long random string) to sign its cookies")
        self.redis = client
        self.settings = settings
        self.operators = Operators(client)
        self.signer = URLSafeTimedSerializer(settings.console_signing_key, salt="wsm-console")

    # --- logging in ----------------------------------------------------------------------------------

    def throttled(self, name: str, address: str) -> bool:
        limit = self.settings.console_login_max
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.console_login_failures(name))
        pipe.get(keys.console_login_failures(f"addr:{address}"))
        return any(int(n or 0) >= limit for n in pipe.execute())

    def failed(self, name: str, address: str) -> None:
        window = self.settings.console_login_window_s
        pipe = self.redis.pipeline(transaction=False)
        for key in (keys.console_login_failures(name), keys.console_login_failures(f"addr:{address}")):
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
        pipe.execute()

    def login(self, name: str, password: str, address: str) -> Login | None:
        """A new session when the password is right; None otherwise (counted against the rate limit)."""
        if not self.operators.verify(name, password):
            self.failed(name[:64], address)
            return None
        self.redis.delete(keys.console_login_failures(name))
        found = Login(name, secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        self.redis.set(keys.console_session(found.session_id), name, ex=self.settings.console_session_s)
        return found

    def cookie(self, found: Login) -> str:
        return self.signer.dumps({"sid": found.session_id, "csrf": found.csrf})

    def logout(self, found: Login) -> None:
        self.redis.delete(keys.console_session(found.session_id))

    # --- every request -------------------------------------------------------------------------------

    def current(self, cookie: str | None) -> Login | None:
        """The logged-in operator of a request's cookie; None when absent, forged, expired or logged out."""
        if not cookie:
            return None
        try:
            data = self.signer.loads(cookie, max_age=self.settings.console_session_s)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str) or not isinstance(data.get("csrf"), str):
            return None
        name = self.redis.get(keys.console_session(data["sid"]))
        if not name or not self.redis.hexists(keys.OPERATORS, name):
            return None
        return Login(name, data["sid"], data["csrf"])

    @staticmethod
    def csrf_ok(expected: str, given: str | None) -> bool:
        return bool(expected) and hmac.compare_digest(expected.encode(), (given or "").encode())

    # --- the login form's CSRF token -----------------------------------------------------------------

    def pre_login(self) -> tuple[str, str]:
        """(token for the form, signed cookie carrying it)."""
        token = secrets.token_urlsafe(24)
        return token, self.signer.dumps({"pre": token})

    def pre_login_token(self, cookie: str | None) -> str:
        try:
            data = self.signer.loads(cookie or "", max_age=PRE_MAX_AGE_S)
        except BadSignature:
            return ""
        return data.get("pre", "") if isinstance(data, dict) else ""
