"""The simulator's other languages: the WhatsApp Cloud API and Evolution API (``--provider cloud|evolution``).

The chat page, the failure controls and the call recording stay the simulator's; a dialect decides what
a person's message looks like as a webhook, how it is signed and retried, which send endpoints exist and
what they answer — as each provider does it:

- Cloud API: one batched ``whatsapp_business_account`` body per event, signed ``X-Hub-Signature-256``
  with the app secret (``hmac_key``), retried with growing delays; sends are
  ``POST /v21.0/{phone_number_id}/messages`` with ``Authorization: Bearer`` (``api_key``), answered with a
  ``wamid``, followed by ``sent``/``delivered``/``read`` statuses; errors are Meta's ``{"error": {code, ...}}``.
- Evolution API: ``messages.upsert`` bodies carrying the instance ``apikey``, retried with exponential
  backoff; sends are ``/message/sendText/{instance}`` with the ``apikey`` header, presence and read marks
  under ``/chat/``; statuses come as ``messages.update``; the connection as ``connection.update``.

Persons are ``<digits>@c.us`` on the page whatever the dialect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from infra.waha_sim.web import Headers, Reply

if TYPE_CHECKING:
    from infra.waha_sim.core import WahaSimulator

PHONE_NUMBER_ID = "1000000001"  # the stand-in's Cloud API number
BUSINESS_ID = "2000000002"
DISPLAY_NUMBER = "5511900000000"
CLOUD_NUMBER = re.compile(r"^/v[0-9.]+/([^/]+)$")
CLOUD_SEND = re.compile(r"^/v[0-9.]+/([^/]+)/messages$")
EVOLUTION_PATH = re.compile(
    r"^/(message/sendText|chat/sendPresence|chat/markMessageAsRead|instance/connectionState)/([^/]+)$"
)
CLOUD_STATUSES = ("sent", "delivered", "read")
EVOLUTION_ACKS = ("SERVER_ACK", "DELIVERY_ACK", "READ")
EVOLUTION_STATES = {"WORKING": "open", "STARTING": "connecting", "SCAN_QR_CODE": "connecting"}


def digits(chat_id: str) -> str:
    return chat_id.split("@", 1)[0]


def page_chat(number: str) -> str:
    return f"{digits(number)}@c.us"


class Dialect:
    """WAHA itself: the simulator's own behaviour (see :mod:`infra.waha_sim.core`)."""

    name = "waha"

    def __init__(self, sim: WahaSimulator) -> None:
        self.sim = sim

    def retry_delay_s(self, attempt: int, base_s: float) -> float:
        return base_s


class CloudDialect(Dialect):
    name = "cloud"

    def __init__(self, sim: WahaSimulator, phone_number_id: str = PHONE_NUMBER_ID) -> None:
        super().__init__(sim)
        self.phone_number_id = phone_number_id
        self.fail_code: int | None = None  # Meta's error code in the answers fail_next / set_outage impose

    # -- webhooks ---------------------------------------------------------------------------

    def envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        metadata = {"display_phone_number": DISPLAY_NUMBER, "phone_number_id": self.phone_number_id}
        change = {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}
        return {"object": "whatsapp_business_account", "entry": [{"id": BUSINESS_ID, "changes": [change]}]}

    def message_body(self, chat_id: str, text: str, message: dict[str, Any] | None = None) -> tuple[str, dict]:
        wa_id = digits(chat_id)
        message_id = "wamid." + uuid.uuid4().hex.upper()
        found = message or {"type": "text", "text": {"body": text}}
        item = {"from": wa_id, "id": message_id, "timestamp": str(int(time.time())), **found}
        contacts = [{"profile": {"name": "Pessoa"}, "wa_id": wa_id}]
        return message_id, self.envelope({"contacts": contacts, "messages": [item]})

    def status_body(self, message_id: str, chat_id: str, status: str, errors: list | None = None) -> dict:
        item: dict[str, Any] = {
            "id": message_id,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": digits(chat_id),
        }
        if errors:
            item["errors"] = errors
        return self.envelope({"statuses": [item]})

    def headers(self, raw: bytes, body: dict[str, Any], secret: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if secret:
            h["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        return h

    def retry_delay_s(self, attempt: int, base_s: float) -> float:
        return min(base_s * 2 ** max(0, attempt - 1), 60.0)  # Meta backs off, for up to 7 days

    # -- REST -------------------------------------------------------------------------------

    def authorized(self, headers: Headers) -> bool:
        return not self.sim.api_key or headers.get("authorization") == f"Bearer {self.sim.api_key}"

    def error(self, status: int, code: int | None = None, message: str = "") -> Reply:
        code = code or self.fail_code or {401: 190, 429: 130429, 500: 131000}.get(status, 100)
        message = message or {190: "Invalid OAuth access token", 130429: "Rate limit hit"}.get(code, "simulated error")
        err = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": uuid.uuid4().hex[:12]}
        return Reply(status, {"error": err})

    def route(self, method: str, path: str, body: Any) -> Reply | None:
        if method == "GET" and CLOUD_NUMBER.match(path):
            if CLOUD_NUMBER.match(path).group(1) != self.phone_number_id:  # type: ignore[union-attr]
                return self.error(400, 100, "Unsupported get request")
            info = {"id": self.phone_number_id, "display_phone_number": DISPLAY_NUMBER, "verified_name": "Clinica"}
            return Reply(200, {**info, "quality_rating": "GREEN"})
        match = CLOUD_SEND.match(path)
        if not match or method != "POST":
            return None
        if match.group(1) != self.phone_number_id:
            return self.error(400, 100, f"Unsupported post request. Object with ID '{match.group(1)}' does not exist")
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return self.error(400, 100, "The parameter messaging_product is required.")
        if body.get("status") == "read":
            if not isinstance(body.get("message_id"), str):
                return self.error(400, 100, "The parameter message_id is required.")
            kinds = ["seen", "typing"] if body.get("typing_indicator") else ["seen"]
            for kind in kinds:
                self.sim.chat_log.add(self.sim.chat_of_message(body["message_id"]), "out", kind=kind)
            return Reply(200, {"success": True})
        to, kind = body.get("to"), body.get("type")
        if not isinstance(to, str) or not to.isdigit():
            return self.error(400, 100, "The parameter to is required.")
        text = self.text_of(body)
        if text is None:
            return self.error(400, 100, f"Unsupported message type {kind!r}")
        message_id = "wamid." + uuid.uuid4().hex.upper()
        self.sim.chat_log.add(page_chat(to), "out", text)
        self.sim.after_send(message_id, page_chat(to))
        return Reply(200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                           "messages": [{"id": message_id}]})  # fmt: skip

    @staticmethod
    def text_of(body: dict[str, Any]) -> str | None:
        """What the person would read: a text, an interactive message's body, a template (named, with parameters)."""
        kind = body.get("type")
        if kind == "text" and isinstance((body.get("text") or {}).get("body"), str):
            return body["text"]["body"]
        if kind == "interactive":
            return str(((body.get("interactive") or {}).get("body") or {}).get("text", ""))
        if kind == "template" and isinstance((body.get("template") or {}).get("name"), str):
            template = body["template"]
            params = [p.get("text", "") for c in template.get("components", []) for p in c.get("parameters", [])]
            return f"[template {template['name']}] " + " | ".join(params)
        return None

    def sent(self, call: Any) -> tuple[str, str] | None:
        if call.status != 200 or not CLOUD_SEND.match(call.path) or not isinstance(call.json, dict):
            return None
        text = self.text_of(call.json)
        return None if text is None or "to" not in call.json else (page_chat(call.json["to"]), text)

    def own_events(self, message_id: str, chat_id: str) -> list[dict[str, Any]]:
        return [self.status_body(message_id, chat_id, status) for status in CLOUD_STATUSES]

    def session_status_body(self, status: str) -> dict[str, Any] | None:
        return None  # the Cloud API has no connection to report


class EvolutionDialect(Dialect):
    name = "evolution"

    def instance(self) -> str:
        return self.sim.session

    def envelope(self, event: str, data: Any) -> dict[str, Any]:
        return {
            "event": event,
            "instance": self.instance(),
            "data": data,
            "destination": self.sim.webhook_url,
            "date_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "sender": f"{DISPLAY_NUMBER}@s.whatsapp.net",
            "server_url": self.sim.url,
            "apikey": self.sim.api_key,
        }

    def message_body(self, chat_id: str, text: str, from_me: bool = False) -> tuple[str, dict]:
        message_id = "3EB0" + uuid.uuid4().hex[:16].upper()
        data = {
            "key": {"remoteJid": f"{digits(chat_id)}@s.whatsapp.net", "fromMe": from_me, "id": message_id},
            "pushName": "Pessoa",
            "message": {"conversation": text},
            "messageType": "conversation",
            "messageTimestamp": int(time.time()),
            "instanceId": uuid.uuid4().hex,
            "source": "android",
        }
        return message_id, self.envelope("messages.upsert", data)

    def status_body(self, message_id: str, chat_id: str, status: str) -> dict[str, Any]:
        data = {"keyId": message_id, "remoteJid": f"{digits(chat_id)}@s.whatsapp.net", "fromMe": True,
                "status": status, "instanceId": uuid.uuid4().hex}  # fmt: skip
        return self.envelope("messages.update", data)

    def headers(self, raw: bytes, body: dict[str, Any], secret: str) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def retry_delay_s(self, attempt: int, base_s: float) -> float:
        return min(base_s * 2 ** max(0, attempt - 1), 300.0)  # WEBHOOK_RETRY_USE_EXPONENTIAL_BACKOFF

    def authorized(self, headers: Headers) -> bool:
        return not self.sim.api_key or headers.get("apikey") == self.sim.api_key

    def error(self, status: int, code: int | None = None, message: str = "") -> Reply:
        phrase = {401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Internal Server Error")
        return Reply(status, {"status": status, "error": phrase, "response": {"message": [message or phrase]}})

    def route(self, method: str, path: str, body: Any) -> Reply | None:
        match = EVOLUTION_PATH.match(path)
        if not match:
            return None
        action, instance = match.groups()
        if instance != self.instance():
            return self.error(404, message=f'The "{instance}" instance does not exist')
        if action == "instance/connectionState" and method == "GET":
            state = EVOLUTION_STATES.get(self.sim.session_status, "close")
            return Reply(200, {"instance": {"instanceName": instance, "state": state}})
        if method != "POST" or not isinstance(body, dict):
            return self.error(400, message="a JSON body is required")
        if self.sim.session_status != "WORKING":
            return self.error(400, message="Connection Closed")
        if action == "message/sendText":
            number, text = body.get("number"), body.get("text")
            if not isinstance(number, str) or not isinstance(text, str):
                return self.error(400, message="number and text are required")
            message_id = "3EB0" + uuid.uuid4().hex[:16].upper()
            self.sim.chat_log.add(page_chat(number), "out", text)
            self.sim.after_send(message_id, page_chat(number))
            key = {"remoteJid": f"{digits(number)}@s.whatsapp.net", "fromMe": True, "id": message_id}
            return Reply(201, {"key": key, "message": {"conversation": text},
                               "messageTimestamp": int(time.time()), "status": "PENDING"})  # fmt: skip
        if action == "chat/sendPresence":
            kind = {"composing": "typing", "paused": "paused"}.get(str(body.get("presence")))
            if kind is None or not isinstance(body.get("number"), str):
                return self.error(400, message="number and presence are required")
            self.sim.chat_log.add(page_chat(body["number"]), "out", kind=kind)
            return Reply(201, {"presence": body["presence"]})
        read = body.get("readMessages")
        if not isinstance(read, list) or not read:
            return self.error(400, message="readMessages is required")
        self.sim.chat_log.add(page_chat(str(read[0].get("remoteJid", ""))), "out", kind="seen")
        return Reply(201, {"message": "Read messages", "read": "success"})

    def sent(self, call: Any) -> tuple[str, str] | None:
        if call.status != 201 or not call.path.startswith("/message/sendText/") or not isinstance(call.json, dict):
            return None
        return page_chat(call.json["number"]), call.json["text"]

    def own_events(self, message_id: str, chat_id: str) -> list[dict[str, Any]]:
        return [self.status_body(message_id, chat_id, status) for status in EVOLUTION_ACKS[1:]]

    def session_status_body(self, status: str) -> dict[str, Any] | None:
        state = EVOLUTION_STATES.get(status, "close")
        return self.envelope("connection.update", {"instance": self.instance(), "state": state, "statusReason": 200})


DIALECTS: dict[str, type[Dialect]] = {"waha": Dialect, "cloud": CloudDialect, "evolution": EvolutionDialect}


def local_wiring(env: dict[str, str], sim_url: str) -> tuple[list[str], dict[str, str]]:
    """``make local`` with ``WSM_PROVIDER`` cloud or evolution: the stand-in's arguments, and where the functions
    find it (only what is unset is filled in, so a real Cloud API or Evolution can still be named)."""
    provider = env.get("WSM_PROVIDER", "").strip() or "waha"
    if provider == "cloud":
        argv = ["--hmac-key", env.get("META_APP_SECRET", ""), "--api-key", env.get("META_ACCESS_TOKEN", "")]
        wiring = {"META_GRAPH_URL": f"{sim_url}/v21.0", "META_PHONE_NUMBER_ID": PHONE_NUMBER_ID}
    elif provider == "evolution":
        argv = ["--hmac-key", "", "--api-key", env.get("EVOLUTION_API_KEY", "")]
        wiring = {"EVOLUTION_URL": sim_url}
    else:
        return [], {}
    return ["--provider", provider, *argv], {k: v for k, v in wiring.items() if not env.get(k, "").strip()}
