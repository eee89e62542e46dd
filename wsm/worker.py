"""Worker entry: placeholder until the attendance issue lands."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def handle_event(ce_type: str, data: object) -> None:
    log.info("worker received %s", ce_type)
