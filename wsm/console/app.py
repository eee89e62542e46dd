"""The console's routes: login, the pages, the operators' actions (POST, CSRF-checked) and the live feed.

Every page is rendered on the server; ``assets/console.js`` listens to ``/events`` and, on each event, fetches
the page again with ``X-Fragment: 1`` and swaps its live part (forms being typed in are outside it).
Nothing but ``/login``, ``/assets/*`` and ``/metrics`` (its own token) answers without a login.
"""

from __future__ import annotations

import json
import logging
from functools import cached_property
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import flask
import redis
from werkzeug.exceptions import HTTPException

from wsm.attendance.operators import OperatorError, Operators
from wsm.attendance.ownership import Ownership, OwnershipError
from wsm.console import live, pages
from wsm.console.auth import COOKIE, PRE_COOKIE, Auth, Login
from wsm.conversation.engine import Engine
from wsm.conversation.flow import Flow, load_flow
from wsm.conversation.history import read_history
from wsm.core.errors import RedisUnavailable
from wsm.core.settings import Settings, get_settings
from wsm.delivery.deadletter import EVENT, SEND, remove_dead_letter
from wsm.metrics.endpoint import is_metrics_path, metrics_response
from wsm.schedule.config import Schedule, load_schedule
from wsm.store import event_stream
from wsm.store.connection import get_redis, is_cluster
from wsm.store.doorbells import ring
from wsm.store.events import MESSAGE_RECEIVED, WakeUp
from wsm.store.scripts import Scripts

log = logging.getLogger(__name__)
OPEN_PATHS = ("/login", "/assets/", "/healthz")
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Console:
    """One per process: settings, Redis, the flow (for 'return to bot' steps) and the schedule (appointments)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or get_redis(settings.redis_url)
        self.auth = Auth(self.redis, settings)
        self.flow: Flow = load_flow(settings.flow_file or None)

    @cached_property
    def schedule(self) -> Schedule | None:
        try:
            return load_schedule(self.settings.schedule_file or None)
        except ValueError as e:  # a flow without appointments may run without a valid schedule file
            log.warning("console: no appointments page: %s", e)
            return None

    @cached_property
    def ownership(self) -> Ownership:
        return Ownership(self.redis, Scripts(self.redis), self.settings, self.schedule)


def create_app(settings: Settings | None = None, client: redis.Redis | None = None) -> flask.Flask:
    settings = settings or get_settings()
    if not settings.console_signing_key:  # off, like /metrics without its token: every request is told why
        return _switched_off()
    app = flask.Flask(__name__, template_folder="templates")
    console = Console(settings, client)
    app.extensions["wsm_console"] = console

    @app.before_request
    def require_login() -> flask.Response | None:
        path = flask.request.path
        if is_metrics_path(path):
            return metrics_response(flask.request, console.settings)
        if path.startswith(OPEN_PATHS):
            return None
        found = console.auth.current(flask.request.cookies.get(COOKIE))
        if found is None:
            if path == "/events" or flask.request.method != "GET":
                return flask.Response("login required", 401)
            return flask.redirect("/login")
        flask.g.login = found
        if flask.request.method == "POST" and not console.auth.csrf_ok(found.csrf, flask.request.form.get("csrf")):
            return flask.Response("invalid or missing CSRF token", 403)
        return None

    @app.after_request
    def secure(response: flask.Response) -> flask.Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(RedisUnavailable)
    def redis_down(error: Exception) -> tuple[str, int]:
        log.warning("console: Redis unavailable: %s", type(error).__name__)
        return "Redis is unavailable; try again in a moment.", 503

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        """200 while Redis answers (the compose health check); 503 through the Redis error handler otherwise."""
        console.redis.ping()
        return "ok", 200

    # --- login ---------------------------------------------------------------------------------------

    @app.get("/login")
    def login_form() -> flask.Response:
        token, cookie = console.auth.pre_login()
        response = flask.make_response(flask.render_template("login.html", csrf=token, error=""))
        response.set_cookie(PRE_COOKIE, cookie, httponly=True, samesite="Strict", secure=flask.request.is_secure)
        return response

    @app.post("/login")
    def login() -> Any:
        form = flask.request.form
        name, password = form.get("name", "").strip().lower(), form.get("password", "")
        expected = console.auth.pre_login_token(flask.request.cookies.get(PRE_COOKIE))
        if not console.auth.csrf_ok(expected, form.get("csrf")):
            return flask.Response("invalid or missing CSRF token; reload the login page", 403)
        address = flask.request.remote_addr or "-"
        if console.auth.throttled(name[:64], address):
            return _login_page(console, "Muitas tentativas. Aguarde alguns minutos.", 429)
        found = console.auth.login(name, password, address)
        if found is None:
            return _login_page(console, "Nome ou senha incorretos.", 401)
        response = flask.redirect("/queues")
        response.set_cookie(
            COOKIE, console.auth.cookie(found), max_age=console.settings.console_session_s,
            httponly=True, samesite="Strict", secure=flask.request.is_secure,
        )  # fmt: skip
        response.delete_cookie(PRE_COOKIE)
        return response

    @app.post("/logout")
    def logout() -> Any:
        console.auth.logout(flask.g.login)
        response = flask.redirect("/login")
        response.delete_cookie(COOKIE)
        return response

    # --- pages ---------------------------------------------------------------------------------------

    @app.get("/")
    def home() -> Any:
        return flask.redirect("/queues")

    @app.get("/queues")
    def queues() -> str:
        s = console.settings
        data = [
            {
                "session": session,
                "human": pages.human_queue(console.redis, session, s.sla_s),
                "bot": pages.bot_queue(console.redis, session, s.sla_s),
                "left": console.ownership.left_messages(session),
            }
            for session in pages.sessions(console.redis)
        ]
        return _page("queues.html", sessions=data, operators=Operators(console.redis).names())

    @app.get("/conversations")
    def conversations() -> str:
        rows = [row for session in pages.sessions(console.redis) for row in pages.conversations(console.redis, session)]
        return _page("conversations.html", rows=rows)

    @app.get("/chat")
    def chat() -> str:
        session, chat_id = _session_and_chat()
        found = pages.conversation(console.redis, session, chat_id)
        steps = [name for name, step in console.flow.steps.items() if not step.end]
        return _page("chat.html", session=session, chat=chat_id, steps=steps, start=console.flow.start, **found)

    @app.get("/appointments")
    def appointments() -> str:
        rows = {s: pages.appointments_today(console.redis, console.schedule, s) for s in pages.sessions(console.redis)}
        return _page("appointments.html", by_session=rows, bookable=console.schedule is not None)

    @app.get("/deadletters")
    def deadletters() -> str:
        return _page("deadletters.html", entries=pages.dead_letters(console.redis))

    @app.get("/operators")
    def operators() -> str:
        rows = {s: pages.operators(console.redis, s) for s in _sessions(console)}
        return _page("operators.html", by_session=rows)

    @app.get("/assets/<name>")
    def asset(name: str) -> flask.Response:
        if name not in ASSETS:
            flask.abort(404)
        body = resources.files("wsm.console").joinpath("assets", name).read_bytes()
        return flask.Response(body, 200, mimetype=ASSETS[name], headers={"Cache-Control": "max-age=300"})

    @app.get("/events")
    def events() -> flask.Response:
        last = flask.request.headers.get("Last-Event-ID") or flask.request.args.get("last", "")
        positions = live.start_positions(console.redis, last)
        body = live.stream(console.redis, positions, console.settings.console_sse_s)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return flask.Response(body, 200, mimetype="text/event-stream", headers=headers)

    # --- actions -------------------------------------------------------------------------------------

    @app.post("/online")
    def go_online() -> Any:
        me = _me()
        capacity = _int_field("capacity")
        for session in _sessions(console):
            console.ownership.operators.go_online(session, me, capacity)
        return _back("Você está online.")

    @app.post("/offline")
    def go_offline() -> Any:
        for session in _sessions(console):
            console.ownership.operators.go_offline(session, _me())
        return _back("Você está offline.")

    @app.post("/take-next")
    def take_next() -> Any:
        session = _field("session")
        chat_id = console.ownership.take_next(session, _me())
        if chat_id is None:
            return _back("Ninguém na fila.")
        return _to_chat(session, chat_id)

    @app.post("/take")
    def take() -> Any:
        session, chat_id = _session_and_chat(flask.request.form)
        console.ownership.take(session, chat_id, _me())
        console.ownership.dismiss_left(session, chat_id)
        return _to_chat(session, chat_id)

    @app.post("/assign")
    def assign() -> Any:
        session, chat_id = _session_and_chat(flask.request.form)
        console.ownership.take(session, chat_id, _field("operator"), by=_me())
        return _back("Atribuído.")

    @app.post("/reply")
    def reply() -> Any:
        session, chat_id = _session_and_chat(flask.request.form)
        console.ownership.reply(session, chat_id, _me(), flask.request.form.get("text", ""))
        return _to_chat(session, chat_id)

    @app.post("/return")
    def return_to_bot() -> Any:
        session, chat_id = _session_and_chat(flask.request.form)
        step = console.flow.steps.get(_field("step"))
        if step is None or step.end:
            raise OwnershipError("choose a step of the flow to return to")
        prompt = _render_prompt(console.flow, step.name)
        if not console.ownership.return_to_bot(session, chat_id, step.name, _me(), prompt):
            raise OwnershipError("the bot has this chat already")
        return _to_chat(session, chat_id)

    @app.post("/close")
    def close() -> Any:
        session, chat_id = _session_and_chat(flask.request.form)
        goodbye = console.flow.texts.get("goodbye", "")
        if not console.ownership.close(session, chat_id, _me(), goodbye):
            raise OwnershipError("this conversation is closed already")
        return _to_chat(session, chat_id)

    @app.post("/left/dismiss")
    def dismiss_left() -> Any:
        session, chat_id = _session_and_chat(flask.request.form)
        console.ownership.dismiss_left(session, chat_id)
        return _back("Recado arquivado.")

    @app.post("/deadletters/retry")
    def retry_dead_letter() -> Any:
        raw = _field("entry")
        entry = _dead_letter(raw)
        if not remove_dead_letter(console.redis, raw):
            return _back("Já tratado por outra pessoa.")
        session, chat_id = str(entry.get("session") or ""), str(entry.get("chat") or "")
        if entry.get("kind") == SEND:
            text = _reply_text(console.redis, session, chat_id, str(entry.get("reply_id") or ""))
            console.ownership.send(session, chat_id, text, f"retry:{_me()}", kind="reply")
        else:
            wake = WakeUp(str(entry.get("type") or MESSAGE_RECEIVED), session or None, chat_id or None)
            if session or not is_cluster(console.redis):  # on a cluster each session's own tick covers the rest
                ring(console.redis, wake)
        if session:
            event_stream.append(console.redis, session, event_stream.DEAD_LETTER)
        return _back("Reenviado.")

    @app.post("/deadletters/discard")
    def discard_dead_letter() -> Any:
        raw = _field("entry")
        entry = _dead_letter(raw)
        if remove_dead_letter(console.redis, raw) and entry.get("session"):
            event_stream.append(console.redis, str(entry["session"]), event_stream.DEAD_LETTER)
        return _back("Descartado.")

    @app.errorhandler(OwnershipError)
    @app.errorhandler(OperatorError)
    def refused(error: Exception) -> Any:
        return _back(str(error))  # back to the page, which shows why

    @app.errorhandler(400)
    def bad_request(error: HTTPException) -> tuple[str, int]:
        return f"bad request: {error.description}", 400

    return app


# --- helpers -------------------------------------------------------------------------------------------


def _switched_off() -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def off(path: str) -> tuple[str, int]:
        return "the console is off: set WSM_CONSOLE_SECRET (a long random string) to sign its cookies", 503

    return app


def _console() -> Console:
    return flask.current_app.extensions["wsm_console"]


def _sessions(console: Console) -> list[str]:
    """The WAHA sessions seen so far; before the first message, the default one (WAHA's ``default``)."""
    return pages.sessions(console.redis) or ["default"]


def _me() -> str:
    login: Login = flask.g.login
    return login.operator


def _page(template: str, **values: Any) -> str:
    fragment = flask.request.headers.get("X-Fragment") == "1"
    login: Login = flask.g.login
    return flask.render_template(
        template, fragment=fragment, me=login.operator, csrf=login.csrf, notice=flask.request.args.get("msg", ""),
        sla_s=_console().settings.sla_s, **values,
    )  # fmt: skip


def _login_page(console: Console, error: str, status: int) -> flask.Response:
    token, cookie = console.auth.pre_login()
    response = flask.make_response(flask.render_template("login.html", csrf=token, error=error), status)
    response.set_cookie(PRE_COOKIE, cookie, httponly=True, samesite="Strict", secure=flask.request.is_secure)
    return response


def _field(name: str) -> str:
    value = flask.request.form.get(name, "").strip()
    if not value:
        flask.abort(400, f"the form field {name!r} is required")
    return value


def _int_field(name: str) -> int:
    try:
        return int(_field(name))
    except ValueError:
        flask.abort(400, f"the form field {name!r} must be a whole number")


def _session_and_chat(source: Any = None) -> tuple[str, str]:
    source = source if source is not None else flask.request.args
    session, chat_id = source.get("session", "").strip(), source.get("chat", "").strip()
    if not session or not chat_id or "{" in session or "}" in session:
        flask.abort(400, "session and chat are required")
    return session, chat_id


def _back(message: str) -> Any:
    referrer = urlsplit(flask.request.referrer or "")
    same_site = referrer.netloc == flask.request.host
    target = (referrer.path + (f"?{referrer.query}" if referrer.query else "")) if same_site else "/queues"
    if not target.startswith("/") or target.startswith("//"):
        target = "/queues"
    path = target.split("?msg=")[0].split("&msg=")[0]
    joiner = "&" if "?" in path else "?"
    return flask.redirect(f"{path}{joiner}{urlencode({'msg': message})}", 303)


def _to_chat(session: str, chat_id: str) -> Any:
    return flask.redirect("/chat?" + urlencode({"session": session, "chat": chat_id}), 303)


def _render_prompt(flow: Flow, step: str) -> str:
    return Engine(flow).prompt(flow.steps[step], {})


def _dead_letter(raw: str) -> dict[str, Any]:
    try:
        entry = json.loads(raw)
    except ValueError:
        flask.abort(400, "not a dead-letter entry")
    if not isinstance(entry, dict) or entry.get("kind") not in (SEND, EVENT):
        flask.abort(400, "not a dead-letter entry")
    return entry


def _reply_text(client: redis.Redis, session: str, chat_id: str, reply_id: str) -> str:
    found = (
        [m for m in read_history(client, session, chat_id) if m.get("id") == reply_id] if session and chat_id else []
    )
    text = found[-1].get("text") if found else ""
    if not text:
        raise OwnershipError("the failed reply is no longer in the chat's history")
    return str(text)


def dispatch(app: flask.Flask, request: flask.Request) -> flask.Response:
    """Serve a Functions Framework request with the console's own app (its routes, templates, error pages)."""
    with app.request_context(request.environ):
        return app.full_dispatch_request()
