"""Deploy one function's bundle as an AWS Lambda function on LocalStack, through ``localstack-client``.

    python -m infra.deploy.aws webhook      # or: make deploy-aws-local FUNCTION=webhook

1. Build the bundle (``infra/deploy/bundle.py``), copy it to ``build/<name>-lambda/`` and install its
   requirements.txt there for Lambda's platform (CPython 3.11, manylinux x86_64 wheels), then zip it.
2. Make sure the execution role ``lambda-role`` exists (LocalStack takes any role; AWS and moto check it).
3. Create the function ``wsm-<name>`` (runtime python3.11, handler ``lambda_handler.handler``, the
   settings from this environment as its variables), or update its code and configuration.
4. For the webhook and the console (HTTP functions), a Function URL with auth NONE (WAHA signs each
   request with ``WEBHOOK_HMAC_KEY``; the console asks operators to log in) and the permission that lets
   anyone call it. A Lambda answers with the whole body at once, so the console's live stream arrives when
   it ends (``WSM_CONSOLE_SSE_S``) and the page refreshes then: near-live, not live.

The endpoint is ``LOCALSTACK_HOST`` (default ``localhost:4566``), read by localstack-client; the router
reaches the functions with ``--worker-url lambda:wsm-worker --notifier-url lambda:wsm-notifier``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from localstack_client.session import Session

from infra.deploy.bundle import BUILD, REPO, build_bundle, function, function_env, masked_env

NAME_PREFIX = "wsm-"
RUNTIME = "python3.11"
HANDLER = "lambda_handler.handler"
ROLE_NAME = "lambda-role"
TIMEOUT_S = 60  # the router's default delivery timeout; a worker run may send several WAHA messages
MEMORY_MB = 256
# Wheels for Lambda's platform whatever this machine is; --no-compile: a .pyc only helps the same Python.
PIP_LAMBDA_PLATFORM = (
    "--platform", "manylinux2014_x86_64", "--implementation", "cp", "--python-version", "3.11",
    "--only-binary=:all:", "--no-compile",
)  # fmt: skip
# No wheel for Lambda's Python 3.11 (Amazon Linux 2, glibc 2.26): left out; the code falls back where it is missing
NO_LAMBDA_WHEEL = ("pycurl",)  # wsm.core.http_client runs on urllib3 without it
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def aws_client(service: str, config: Config | None = None) -> Any:
    """A boto3 client for LocalStack at ``LOCALSTACK_HOST`` (region ``AWS_DEFAULT_REGION``, default us-east-1)."""
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    return Session(region_name=region).client(service, config=config or Config(retries={"total_max_attempts": 2}))


def lambda_name(name: str) -> str:
    return NAME_PREFIX + function(name).name


def build_zip(name: str, build_dir: Path = BUILD) -> Path:
    """``build_dir/<name>-lambda.zip``: the bundle with its dependencies installed beside it."""
    bundle = build_bundle(name, build_dir)
    staging = build_dir / f"{name}-lambda"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    requirements = staging / "requirements.txt"
    pins = requirements.read_text().splitlines()
    requirements.write_text("".join(f"{pin}\n" for pin in pins if pin.split("==")[0].strip() not in NO_LAMBDA_WHEEL))
    pip = [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements), "-t", str(staging)]
    try:
        subprocess.run([*pip, *PIP_LAMBDA_PLATFORM], check=True)
    except subprocess.CalledProcessError as e:
        raise click.ClickException(
            f"pip could not install {name}'s requirements for Lambda (exit {e.returncode})"
        ) from e
    archive = build_dir / f"{name}-lambda.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(staging.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(staging).as_posix())
    return archive


def ensure_role(iam: Any) -> str:
    """ARN of the execution role (``LAMBDA_ROLE_ARN`` if set), created if missing."""
    if os.environ.get("LAMBDA_ROLE_ARN"):
        return os.environ["LAMBDA_ROLE_ARN"]
    try:
        return iam.get_role(RoleName=ROLE_NAME)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        return iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))["Role"]["Arn"]


def deploy(name: str, archive: Path, env: dict[str, str]) -> dict[str, Any]:
    """Create or update the function from ``archive``; returns its configuration (and ``FunctionUrl`` for HTTP)."""
    lam = aws_client("lambda")
    fn = lambda_name(name)
    config = {
        "FunctionName": fn,
        "Runtime": RUNTIME,
        "Handler": HANDLER,
        "Role": ensure_role(aws_client("iam")),
        "Environment": {"Variables": env},
        "Timeout": TIMEOUT_S,
        "MemorySize": MEMORY_MB,
    }
    code = archive.read_bytes()
    try:
        lam.get_function(FunctionName=fn)
    except lam.exceptions.ResourceNotFoundException:
        lam.create_function(**config, Code={"ZipFile": code}, Description=f"WhatsApp Session Manager {name}")
        lam.get_waiter("function_active_v2").wait(FunctionName=fn)
    else:
        lam.update_function_code(FunctionName=fn, ZipFile=code)
        lam.get_waiter("function_updated_v2").wait(FunctionName=fn)
        lam.update_function_configuration(**config)
        lam.get_waiter("function_updated_v2").wait(FunctionName=fn)
    result = lam.get_function(FunctionName=fn)["Configuration"]
    if function(name).signature == "http":
        result["FunctionUrl"] = ensure_function_url(lam, fn)
    return result


def ensure_function_url(lam: Any, fn: str) -> str:
    """The function's public URL (auth NONE), created with its invoke permission on first deploy."""
    try:
        return lam.get_function_url_config(FunctionName=fn)["FunctionUrl"]
    except lam.exceptions.ResourceNotFoundException:
        url = lam.create_function_url_config(FunctionName=fn, AuthType="NONE")["FunctionUrl"]
        lam.add_permission(
            FunctionName=fn,
            StatementId="FunctionURLAllowPublicAccess",
            Action="lambda:InvokeFunctionUrl",
            Principal="*",
            FunctionUrlAuthType="NONE",
        )
        return url


@click.command()
@click.argument("name")
def main(name: str) -> None:
    """Deploy function NAME (webhook, worker, notifier) to LocalStack's Lambda as wsm-NAME."""
    function(name)  # an unknown name fails before any work
    endpoint = os.environ.get("LOCALSTACK_HOST", "localhost:4566")
    env = function_env()
    try:
        aws_client("lambda").list_functions(MaxItems=1)  # is LocalStack there? before minutes of packaging
        archive = build_zip(name)
        click.echo(f"{archive.relative_to(REPO)}: {archive.stat().st_size / 1e6:.1f} MB")
        result = deploy(name, archive, env)
    except BotoCoreError as e:  # EndpointConnectionError and friends
        raise click.ClickException(f"cannot reach LocalStack at {endpoint} (LOCALSTACK_HOST): {e}") from e
    except ClientError as e:
        raise click.ClickException(f"LocalStack refused the deploy: {e}") from e
    click.echo(f"deployed {result['FunctionName']} ({result['Runtime']}, {result['Handler']}): {result.get('State')}")
    click.echo(f"  arn: {result['FunctionArn']}")
    click.echo(f"  env: {json.dumps(masked_env(env))}")
    if "FunctionUrl" in result:
        click.echo(f"  url: {result['FunctionUrl']}")


if __name__ == "__main__":
    main()
