"""Choose the send client of a session's provider (``provider`` in its section, else ``WSM_PROVIDER``)."""

from __future__ import annotations

from wsm.core.settings import Settings
from wsm.providers.base import CLOUD, EVOLUTION, Outbound
from wsm.providers.cloud_client import CloudClient
from wsm.providers.evolution_client import EvolutionClient
from wsm.waha.client import WahaClient


def client_for(settings: Settings) -> Outbound:
    """A new client for these (session) settings; callers keep it for the process."""
    if settings.provider == CLOUD:
        return CloudClient(settings)
    if settings.provider == EVOLUTION:
        return EvolutionClient(settings)
    return WahaClient(settings.waha_url, settings.waha_api_key, settings.waha_timeout_s)
