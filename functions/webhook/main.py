"""Webhook function (HTTP): WAHA posts events here; each is verified, stored once, then acknowledged."""

import flask
import functions_framework

from wsm.ingest.http import handle


@functions_framework.http
def webhook(request: flask.Request):
    return handle(request)
