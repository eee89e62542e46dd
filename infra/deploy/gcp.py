"""Deploy one function to Cloud Run functions (2nd gen) with ``gcloud functions deploy``.

    python -m infra.deploy.gcp webhook              # or: make deploy-gcp FUNCTION=webhook
    DRY_RUN=1 python -m infra.deploy.gcp worker     # print the command (secrets as ***), run nothing

The source is the function's bundle, ``build/<name>/``, built first; the entry point is the
function of the same name in its ``main.py``. Region: ``GCP_REGION`` (default us-central1); project:
``GCP_PROJECT`` if set, else gcloud's default; ``GCP_DEPLOY_FLAGS`` is appended as is (for example
``--vpc-connector=…``, which the functions need to reach a Memorystore Redis). The settings in this
environment (``REDIS_URL``, ``WAHA_*``, ``WEBHOOK_*``, ``WSM_*``) become the function's variables;
for production, prefer ``--set-secrets`` with Secret Manager for ``WAHA_API_KEY`` and ``WEBHOOK_HMAC_KEY``.

- webhook: HTTP trigger, public (``--allow-unauthenticated``): WAHA signs each request with HMAC.
- worker, notifier: Pub/Sub trigger on the topic ``wsm-events`` (``GCP_EVENTS_TOPIC``), with ``--retry``
  so an event whose run raised (Redis unreachable) is delivered again, as the router does locally; a malformed
  event returns normally (logged), so Pub/Sub does not retry it forever.

How the Redis doorbell reaches them on GCP: nothing on GCP listens to Redis Pub/Sub, so the event
router (``infra/platform/router.py``) is the bridge. It runs as one always-on process next to Redis (a Cloud Run
service with min-instances=1 on the VPC connector, or a small VM), subscribes to ``wsm:events`` as it
does locally and publishes each wake-up to the topic; Eventarc delivers it to the subscribed functions,
and Pub/Sub's retries and dead-letter topic take over the router's. Cloud Scheduler publishing a tick to
the same topic every minute replaces the router's tick. The functions already unwrap what Eventarc
hands them, a ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent whose ``data.message.data``
is the base64 wake-up JSON (``WakeUp.from_cloudevent`` in ``wsm/store/events.py``), and acknowledge a
malformed one instead of having it retried. Not built yet: the router target that publishes to Pub/Sub.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import click

from infra.deploy.bundle import BUILD, REPO, build_bundle, function, function_env, masked_env

RUNTIME = "python311"
DEFAULT_REGION = "us-central1"
DEFAULT_TOPIC = "wsm-events"
ENV_DELIMITERS = ",@|;~#"  # gcloud's ^D^ syntax picks another separator when a value holds a comma


def gcloud_command(
    name: str, source: Path, env: Mapping[str, str], environ: Mapping[str, str], masked: bool = False
) -> list[str]:
    """The ``gcloud functions deploy`` argv for ``name`` from ``source`` with variables ``env`` (masked: to show)."""
    argv = [
        "gcloud", "functions", "deploy", name,
        "--gen2",
        f"--runtime={RUNTIME}",
        f"--region={environ.get('GCP_REGION') or DEFAULT_REGION}",
        f"--source={source}",
        f"--entry-point={name}",
    ]  # fmt: skip
    if function(name).signature == "http":
        argv += ["--trigger-http", "--allow-unauthenticated"]
    else:
        argv += [f"--trigger-topic={environ.get('GCP_EVENTS_TOPIC') or DEFAULT_TOPIC}", "--retry"]
    if env:
        argv.append(f"--set-env-vars={env_flag(env, masked_env(env) if masked else None)}")
    if environ.get("GCP_PROJECT"):
        argv.append(f"--project={environ['GCP_PROJECT']}")
    return argv + shlex.split(environ.get("GCP_DEPLOY_FLAGS", ""))


def env_flag(env: Mapping[str, str], shown: Mapping[str, str] | None = None) -> str:
    """``K=V,K2=V2``, or ``^@^K=V@K2=V2`` with a delimiter no value of ``env`` holds (``gcloud topic escaping``).

    ``shown`` (``env`` with secrets masked) is what is written, with the delimiter ``env`` needs.
    """
    pairs = [f"{k}={v}" for k, v in env.items()]
    written = [f"{k}={v}" for k, v in (shown or env).items()]
    for delimiter in ENV_DELIMITERS:
        if not any(delimiter in pair for pair in pairs):
            return delimiter.join(written) if delimiter == "," else f"^{delimiter}^" + delimiter.join(written)
    raise click.ClickException(f"every delimiter {ENV_DELIMITERS!r} occurs in some setting; use --env-vars-file")


@click.command()
@click.argument("name")
@click.option(
    "--dry-run", is_flag=True, envvar="DRY_RUN", help="Print the gcloud command (secrets masked), run nothing."
)
def main(name: str, dry_run: bool) -> None:
    """Deploy function NAME (webhook, worker, notifier) to Cloud Run functions (gen2)."""
    function(name)  # an unknown name fails before any work
    if not dry_run and shutil.which("gcloud") is None:
        raise click.ClickException(
            "gcloud not found on PATH: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install) "
            "and run `gcloud auth login`, or set DRY_RUN=1 to print the command instead"
        )
    source = build_bundle(name, BUILD).relative_to(REPO)  # gcloud runs in the repository
    env = function_env()
    shown = shlex.join(gcloud_command(name, source, env, os.environ, masked=True))
    if dry_run:
        click.echo(shown)
        return
    click.echo(shown, err=True)
    code = subprocess.run(gcloud_command(name, source, env, os.environ), cwd=REPO).returncode
    if code:
        raise click.ClickException(f"gcloud exited with status {code}")


if __name__ == "__main__":
    main()
