"""Console function (HTTP): the operators' web console — queues, conversations, replies, live through SSE."""

import flask
import functions_framework

from wsm.console.app import create_app, dispatch

app = create_app()


@functions_framework.http
def console(request: flask.Request):
    return dispatch(app, request)
