"""Evolution API's send side: ``/message/sendText/{instance}``, presence and read marks, with the ``apikey`` header.

A 404 or 400 naming a closed connection means the instance is not connected: held like WAHA's 422 until
``connection.update`` says ``open`` (or a probe of ``/instance/connectionState`` does).
"""

from __future__ import annotations

from typing import Any

from wsm.core.errors import WahaRejected, WahaRetryable, WahaSessionNotReady
from wsm.core.settings import Settings
from wsm.providers.base import EVOLUTION, Template, as_dict, phone_of
from wsm.providers.evolution import CONNECTION_STATES
from wsm.providers.http_base import JsonHttp

NOT_CONNECTED = ("connection closed", "not connected", "instance does not exist", "is not connected")


class EvolutionClient:
    provider = EVOLUTION
    window_s = 0  # WhatsApp Web: no customer-service window

    def __init__(self, settings: Settings) -> None:
        self.instance = settings.evolution_instance
        key = settings.evolution_api_key
        self.api = JsonHttp(settings.evolution_url, {"apikey": key} if key else {}, settings.waha_timeout_s, key)

    def send_text(self, session: str, chat_id: str, text: str) -> str:
        answer = self._post("message/sendText", session, {"number": phone_of(chat_id), "text": text})
        key = as_dict(as_dict(answer).get("key"))
        return key.get("id") if isinstance(key.get("id"), str) else ""

    def send_template(self, session: str, chat_id: str, template: Template, text: str) -> str:
        return self.send_text(session, chat_id, text)  # no window here: a template is plain text

    def send_seen(self, session: str, chat_id: str, message_ids: list[str] | None = None) -> None:
        if message_ids:
            read = [{"remoteJid": chat_id, "fromMe": False, "id": i} for i in message_ids]
            self._post("chat/markMessageAsRead", session, {"readMessages": read})

    def start_typing(self, session: str, chat_id: str) -> None:
        self._post("chat/sendPresence", session, {"number": phone_of(chat_id), "presence": "composing", "delay": 0})

    def stop_typing(self, session: str, chat_id: str) -> None:
        self._post("chat/sendPresence", session, {"number": phone_of(chat_id), "presence": "paused", "delay": 0})

    def session_status(self, session: str) -> str:
        status, data, text = self.api.call(
            "GET", f"/instance/connectionState/{self._instance(session)}", None, "evo_state"
        )
        if status >= 400:
            raise WahaRetryable(f"evolution connectionState: HTTP {status} {text}")
        state = as_dict(as_dict(data).get("instance")).get("state") or as_dict(data).get("state")
        return CONNECTION_STATES.get(str(state), str(state).upper())

    def _instance(self, session: str) -> str:
        return self.instance or session

    def _post(self, path: str, session: str, body: dict[str, Any]) -> Any:
        endpoint = "evo_" + path.rsplit("/", 1)[-1]
        status, data, text = self.api.call("POST", f"/{path}/{self._instance(session)}", body, endpoint)
        if status < 400:
            return data
        if status == 429 or status >= 500:
            raise WahaRetryable(f"evolution {path}: HTTP {status} {text}")
        if status in (400, 404) and any(p in text.lower() for p in NOT_CONNECTED):
            raise WahaSessionNotReady(f"evolution {path}: instance not connected ({text})")
        raise WahaRejected(f"evolution {path}: HTTP {status} {text}")
