"""Notifier function (CloudEvent): tell waiting people their queue position when it improves (throttled)."""

import functions_framework
from cloudevents.http import CloudEvent

from wsm.attendance.notifier import handle_event
from wsm.metrics.endpoint import mount

mount()  # GET /metrics beside the CloudEvent route (the Functions Framework routes only POST here)


@functions_framework.cloud_event
def notifier(event: CloudEvent) -> None:
    handle_event(event["type"], event.data)
