"""The bare Functions Framework function the webhook is measured against: it answers "ok" and does nothing else."""

import flask
import functions_framework


@functions_framework.http
def bare(request: flask.Request) -> str:
    return "ok"
