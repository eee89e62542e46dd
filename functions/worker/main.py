"""Worker function (CloudEvent): admit waiting chats into free slots and answer active chats in order."""

import functions_framework
from cloudevents.http import CloudEvent

from wsm.attendance.worker import handle_event


@functions_framework.cloud_event
def worker(event: CloudEvent) -> None:
    handle_event(event["type"], event.data)
