"""``make local`` beside stand-ins that speak the Cloud API or Evolution (or several, one per session)."""

from __future__ import annotations

import os
from pathlib import Path

from infra.platform.local import LocalSystem
from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from infra.waha_sim.dialects import PHONE_NUMBER_ID
from tests import booking_helpers
from tests import provider_helpers as ph
from tests.conftest import local_config

BASE_ENV = {
    "WSM_MAX_ACTIVE": "1",
    "WSM_TICK_S": "0.5",
    "WSM_TYPING_MS_PER_CHAR": "1",
    "WSM_TYPING_MAX_MS": "20",
    "WSM_NOTIFY_MIN_INTERVAL_S": "0",
    "WSM_LEASE_MS": "3000",
    "META_APP_SECRET": ph.APP_SECRET,
    "META_VERIFY_TOKEN": ph.VERIFY_TOKEN,
    "META_ACCESS_TOKEN": ph.ACCESS_TOKEN,
    "EVOLUTION_API_KEY": ph.EVO_KEY,
}


def stand_in(provider: str, webhook_port: int, session: str = "default") -> WahaSimulator:
    """A stand-in posting to the webhook's path for its provider, signed and keyed as the provider does."""
    secret = {"cloud": ph.APP_SECRET, "evolution": "", "waha": ""}[provider]
    key = {"cloud": ph.ACCESS_TOKEN, "evolution": ph.EVO_KEY, "waha": ""}[provider]
    return WahaSimulator(
        provider=provider,
        api_key=key,
        hmac_key=secret,
        session=session,
        webhook_url=f"http://127.0.0.1:{webhook_port}/{provider}",
        webhook_retry_delay_s=0.3,
        emit_own_events=True,
    ).start()


class ProviderSystem:
    """The functions as ``make local`` runs them; ``sims`` by session name, each speaking its provider."""

    def __init__(self, tmp_path: Path, sims: dict[str, WahaSimulator], webhook_port: int, **env: str) -> None:
        self.sims = sims
        schedule = str(booking_helpers.write(tmp_path / "schedule.yaml"))
        waha = next((s for s in sims.values() if s.dialect.name == "waha"), None)
        cloud = next((s for s in sims.values() if s.dialect.name == "cloud"), None)
        evolution = next((s for s in sims.values() if s.dialect.name == "evolution"), None)
        wiring = {"WSM_SCHEDULE_FILE": schedule, "META_PHONE_NUMBER_ID": PHONE_NUMBER_ID}
        if cloud:
            wiring["META_GRAPH_URL"] = f"{cloud.url}/v21.0"
        if evolution:
            wiring["EVOLUTION_URL"] = evolution.url
        fields = {"waha_url": waha.url} if waha else {"waha_url": f"http://127.0.0.1:{free_port()}"}
        config = local_config(
            tmp_path, {**os.environ, **BASE_ENV, **wiring, **env}, webhook_port=webhook_port, **fields
        )
        config.env.pop("REDIS_URL", None)
        self.local = LocalSystem(config).start()

    @classmethod
    def single(cls, tmp_path: Path, provider: str, **env: str) -> ProviderSystem:
        port = free_port()
        return cls(tmp_path, {"default": stand_in(provider, port)}, port, WSM_PROVIDER=provider, **env)

    def stop(self) -> None:
        self.local.stop()
        for sim in self.sims.values():
            sim.stop()

    def say(self, chat: str, text: str, session: str = "default") -> None:
        """A person writes: the stand-in posts its provider's webhook; wait until it was acknowledged."""
        sim = self.sims[session]
        if sim.dialect.name == "waha":
            body = wp.message_event(chat, text, session=session)
        else:
            body = sim.dialect.message_body(chat, text)[1]  # type: ignore[attr-defined]
        sim.chat_log.add(chat, "in", text)
        delivery = sim.post_webhook(body)
        assert delivery.wait(15) and delivery.ok, f"{session}: the webhook did not accept {text!r} ({delivery.status})"

    def texts(self, chat: str, session: str = "default") -> list[str]:
        return self.sims[session].texts_to(chat)

    def wait_text(self, chat: str, needle: str, session: str = "default", timeout_s: float = 30.0) -> list[str]:
        sim = self.sims[session]
        ok = sim.wait_for(lambda: any(needle in t for t in self.texts(chat, session)), timeout_s)
        assert ok, f"{session} {chat}: no reply containing {needle!r} in {self.texts(chat, session)}"
        return self.texts(chat, session)

    def wait_texts(self, chat: str, count: int, session: str = "default", timeout_s: float = 20.0) -> list[str]:
        sim = self.sims[session]
        ok = sim.wait_for(lambda: len(self.texts(chat, session)) >= count, timeout_s)
        assert ok, f"{session} {chat}: expected {count} replies, got {self.texts(chat, session)}"
        return self.texts(chat, session)
