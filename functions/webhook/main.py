"""Webhook function (HTTP, ASGI): WAHA posts events here; each is verified, stored once, then acknowledged."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from wsm.ingest.http import handle


@functions_framework.aio.http
async def webhook(request: Request) -> Response:
    return await handle(request)
