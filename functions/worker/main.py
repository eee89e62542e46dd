"""Worker function (CloudEvents over HTTP, ASGI): admit waiting chats into free slots, answer active chats in order."""

import functions_framework.aio
from cloudevents.http import CloudEvent
from starlette.requests import Request
from starlette.responses import Response

from wsm.attendance.entry import serve
from wsm.attendance.worker import handle_event
from wsm.core.parent_death import die_with_master

die_with_master()  # gunicorn's uvicorn workers do not watch their master: a crashed one must not leave them serving


@functions_framework.aio.http
async def worker(request: Request) -> Response:
    """A wake-up from the router or a Pub/Sub push (or GET /metrics)."""
    return await serve(request, handle_event)


def on_cloudevent(event: CloudEvent) -> None:
    """The same handling for a CloudEvent invoked directly (AWS Lambda's lambda_handler.py)."""
    handle_event(event["type"], event.data)
