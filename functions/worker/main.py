"""Worker function (CloudEvent): admit waiting chats into free slots and answer active chats in order."""

import functions_framework
from cloudevents.http import CloudEvent

from wsm.attendance.worker import handle_event
from wsm.metrics.endpoint import mount

mount()  # GET /metrics beside the CloudEvent route (the Functions Framework routes only POST here)


@functions_framework.cloud_event
def worker(event: CloudEvent) -> None:
    handle_event(event["type"], event.data)
