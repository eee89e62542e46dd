"""Webhook function (HTTP, ASGI): WAHA posts events here; each is verified, stored once, then acknowledged."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from wsm.core.parent_death import die_with_master
from wsm.ingest.http import handle

die_with_master()  # gunicorn's uvicorn workers do not watch their master: a crashed one must not leave them serving


@functions_framework.aio.http
async def webhook(request: Request) -> Response:
    return await handle(request)
