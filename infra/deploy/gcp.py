"""Deploy to Cloud Run functions (2nd gen) with ``gcloud functions deploy``, and the Pub/Sub topology.

    python -m infra.deploy.gcp webhook              # or: make deploy-gcp FUNCTION=webhook
    DRY_RUN=1 python -m infra.deploy.gcp worker     # print the command (secrets as ***), run nothing
    python -m infra.deploy.gcp pubsub               # topics + push subscriptions (after worker and notifier)

The source is the function's bundle, ``build/<name>/``, built first; the entry point is the
function of the same name in its ``main.py``. Region: ``GCP_REGION`` (default us-central1); project:
``GCP_PROJECT`` if set, else gcloud's default; ``GCP_DEPLOY_FLAGS`` is appended as is (for example
``--vpc-connector=…``, which the functions need to reach a Memorystore Redis). The settings in this
environment (``REDIS_URL``, ``WAHA_*``, ``WEBHOOK_*``, ``WSM_*``) become the function's variables;
for production, prefer ``--set-secrets`` with Secret Manager for ``WAHA_API_KEY`` and ``WEBHOOK_HMAC_KEY``.

- webhook: HTTP trigger, public (``--allow-unauthenticated``): WAHA signs each request with HMAC.
- console: HTTP trigger, public the same way: every page but its login needs an operator's session.
  Cloud Run's request timeout bounds its live streams too; keep ``WSM_CONSOLE_SSE_S`` below it.
- worker, notifier: HTTP, not public: only the push subscriptions call them, with an OIDC token of
  ``GCP_PUSH_SERVICE_ACCOUNT``. They are CloudEvent functions all the same (the decorator says so): the
  Functions Framework turns a push request into a ``messagePublished`` CloudEvent.
- pubsub: the topology of :mod:`infra.platform.pubsub` (the one the emulator tests run): the topic
  ``GCP_EVENTS_TOPIC`` (default ``wsm-events``), its dead-letter topic ``<topic>-dead`` with a pull
  subscription that keeps what failed, and one push subscription per function with a filter on the event
  type, Pub/Sub's exponential retry and the dead-letter policy. The push URL is ``GCP_WORKER_URL`` /
  ``GCP_NOTIFIER_URL``, else the deployed function's (``gcloud functions describe``). Our own subscriptions
  rather than ``--trigger-topic``: Eventarc's would get every event type and no dead-letter topic.

Then the event router (``infra/platform/router.py``), next to Redis (a Cloud Run service with
min-instances=1 on the VPC connector, or a small VM), runs with
``WSM_PUBSUB_TOPIC=projects/<project>/topics/wsm-events``: it subscribes to ``wsm:events`` as it does locally
and publishes each doorbell and its ticks to the topic. Several routers may run (see the README). For
dead-lettering, Pub/Sub's service agent needs ``roles/pubsub.publisher`` on the dead-letter topic and
``roles/pubsub.subscriber`` on the subscriptions (one-time IAM, printed at the end).
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
from infra.platform.pubsub import ACK_DEADLINE_S, MAX_DELIVERY_ATTEMPTS, MAX_RETRY_S, MIN_RETRY_S, subscription_filter
from infra.platform.triggers import NOTIFIER, WORKER

RUNTIME = "python311"
DEFAULT_REGION = "us-central1"
DEFAULT_TOPIC = "wsm-events"
PUBSUB = "pubsub"  # not a function: the topic and subscriptions
PUSH_TARGETS = (WORKER, NOTIFIER)
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
    else:  # reached only through the push subscriptions (``pubsub``)
        argv += ["--trigger-http", "--no-allow-unauthenticated"]
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


def pubsub_commands(environ: Mapping[str, str], urls: Mapping[str, str]) -> list[list[str]]:
    """The gcloud argvs that create the topic, the dead-letter topic and the push subscriptions to ``urls``."""
    topic = environ.get("GCP_EVENTS_TOPIC") or DEFAULT_TOPIC
    dead = f"{topic}-dead"
    account = environ.get("GCP_PUSH_SERVICE_ACCOUNT") or "<GCP_PUSH_SERVICE_ACCOUNT>"
    project = [f"--project={environ['GCP_PROJECT']}"] if environ.get("GCP_PROJECT") else []
    region = f"--region={environ.get('GCP_REGION') or DEFAULT_REGION}"
    commands = [
        ["gcloud", "pubsub", "topics", "create", topic, *project],
        ["gcloud", "pubsub", "topics", "create", dead, *project],
        ["gcloud", "pubsub", "subscriptions", "create", dead, f"--topic={dead}", *project],
    ]
    for target in PUSH_TARGETS:
        commands.append(
            ["gcloud", "functions", "add-invoker-policy-binding", target, region,
             f"--member=serviceAccount:{account}", *project]
        )  # fmt: skip
        commands.append(
            ["gcloud", "pubsub", "subscriptions", "create", f"{topic}-{target}", f"--topic={topic}",
             f"--push-endpoint={urls[target]}", f"--push-auth-service-account={account}",
             f"--ack-deadline={ACK_DEADLINE_S}", f"--message-filter={subscription_filter(target)}",
             f"--dead-letter-topic={dead}", f"--max-delivery-attempts={MAX_DELIVERY_ATTEMPTS}",
             f"--min-retry-delay={MIN_RETRY_S}s", f"--max-retry-delay={MAX_RETRY_S}s", *project]
        )  # fmt: skip
    return commands


def describe_url_command(name: str, environ: Mapping[str, str]) -> list[str]:
    """The gcloud argv printing the URL of deployed function ``name``."""
    argv = [
        "gcloud",
        "functions",
        "describe",
        name,
        "--gen2",
        f"--region={environ.get('GCP_REGION') or DEFAULT_REGION}",
    ]
    if environ.get("GCP_PROJECT"):
        argv.append(f"--project={environ['GCP_PROJECT']}")
    return [*argv, "--format=value(serviceConfig.uri)"]


def push_urls(environ: Mapping[str, str], dry_run: bool) -> dict[str, str]:
    """``GCP_<NAME>_URL`` of each push target, else (dry run) a placeholder, else what gcloud says it is."""
    urls = {}
    for target in PUSH_TARGETS:
        url = environ.get(f"GCP_{target.upper()}_URL", "")
        if not url and dry_run:
            url = f"<URL of {target}: GCP_{target.upper()}_URL, else gcloud functions describe {target}>"
        elif not url:
            done = subprocess.run(describe_url_command(target, environ), cwd=REPO, capture_output=True, text=True)
            url = done.stdout.strip()
            if done.returncode or not url:
                raise click.ClickException(f"no URL for {target}: deploy it first (make deploy-gcp FUNCTION={target})")
        urls[target] = url
    return urls


def deploy_pubsub(dry_run: bool) -> None:
    environ = os.environ
    if not dry_run and not environ.get("GCP_PUSH_SERVICE_ACCOUNT"):
        raise click.ClickException(
            "set GCP_PUSH_SERVICE_ACCOUNT to the service account whose token the push subscriptions send "
            "(it is granted roles/run.invoker on worker and notifier)"
        )
    for argv in pubsub_commands(environ, push_urls(environ, dry_run)):
        click.echo(shlex.join(argv), err=not dry_run)
        if not dry_run:
            code = subprocess.run(argv, cwd=REPO).returncode
            if code:
                raise click.ClickException(f"gcloud exited with status {code}")
    click.echo(
        "once per project, for dead-lettering: grant service-<project number>@gcp-sa-pubsub.iam.gserviceaccount.com "
        "roles/pubsub.publisher on the dead-letter topic and roles/pubsub.subscriber on the subscriptions",
        err=True,
    )


@click.command()
@click.argument("name")
@click.option(
    "--dry-run", is_flag=True, envvar="DRY_RUN", help="Print the gcloud command (secrets masked), run nothing."
)
def main(name: str, dry_run: bool) -> None:
    """Deploy function NAME (webhook, worker, notifier) to Cloud Run functions (gen2), or NAME=pubsub: the topics
    and push subscriptions that deliver the router's events to worker and notifier."""
    if name != PUBSUB:
        function(name)  # an unknown name fails before any work
    if not dry_run and shutil.which("gcloud") is None:
        raise click.ClickException(
            "gcloud not found on PATH: install the Google Cloud SDK (https://cloud.google.com/sdk/docs/install) "
            "and run `gcloud auth login`, or set DRY_RUN=1 to print the command instead"
        )
    if name == PUBSUB:
        deploy_pubsub(dry_run)
        return
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
