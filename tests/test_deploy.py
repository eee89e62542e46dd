"""Deploying a function: the gcloud command (dry run, and run against a stand-in ``gcloud`` on PATH), and the
LocalStack deploy against moto's server (a real Lambda API over HTTP; it cannot execute functions without
Docker, so the zip is also booted here the way Lambda's Python runtime loads a handler)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cloudevents.conversion import to_dict
from localstack_client.session import Session

from infra.deploy.bundle import REPO
from infra.platform.processes import wait_for_port
from infra.platform.pubsub import Topology, subscription_filter
from infra.platform.redis_server import free_port
from infra.platform.router import to_cloudevent
from infra.platform.triggers import NOTIFIER, WORKER, DeliveryFailed, LambdaTarget
from infra.waha_sim import payloads as wp
from infra.waha_sim.core import WahaSimulator
from wsm.conversation.history import read_history
from wsm.store.events import MESSAGE_RECEIVED, TICK, WakeUp

SECRETS = {"WAHA_API_KEY": "waha-key-1234", "WEBHOOK_HMAC_KEY": "hmac-key-5678"}
REDIS_PASSWORD = "redis-pass-9012"
A = "5511977770001@c.us"


def deploy_env(**extra: str) -> dict[str, str]:
    """This environment without any setting of the project, plus ``extra``."""
    prefixes = ("WSM_", "WAHA_", "WEBHOOK_", "REDIS_", "GCP_", "DRY_RUN", "LOCALSTACK_", "LAMBDA_", "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} | extra


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def settings_env() -> dict[str, str]:
    return {
        **SECRETS,
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@10.1.2.3:6379/0",
        "WAHA_URL": "http://waha.internal:3000",
        "WSM_MAX_ACTIVE": "3",
        "WSM_WORKER_URL": "http://127.0.0.1:8081/",  # the local router's: not the function's business
    }


def set_env_vars(argv: list[str]) -> dict[str, str]:
    (flag,) = [a for a in argv if a.startswith("--set-env-vars=")]
    return dict(pair.split("=", 1) for pair in flag.removeprefix("--set-env-vars=").split(","))


# --- Cloud Run functions (gcloud) ------------------------------------------------------------------------


def test_gcp_dry_run_of_the_worker_prints_a_private_gen2_deploy_with_secrets_masked() -> None:
    done = run("infra.deploy.gcp", "worker", env=deploy_env(DRY_RUN="1", **settings_env()))
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout)
    assert argv[:4] == ["gcloud", "functions", "deploy", "worker"]
    for flag in ("--gen2", "--runtime=python311", "--region=us-central1", "--source=build/worker"):
        assert flag in argv
    assert "--entry-point=worker" in argv and "--trigger-http" in argv and "--no-allow-unauthenticated" in argv
    assert "--allow-unauthenticated" not in argv  # only the push subscriptions call it (``pubsub`` below)
    assert set_env_vars(argv) == {
        "REDIS_URL": "redis://***@10.1.2.3:6379/0",
        "WAHA_URL": "http://waha.internal:3000",
        "WAHA_API_KEY": "***",
        "WEBHOOK_HMAC_KEY": "***",
        "WSM_MAX_ACTIVE": "3",
    }
    for secret in [*SECRETS.values(), REDIS_PASSWORD]:
        assert secret not in done.stdout + done.stderr
    assert (REPO / "build" / "worker" / "main.py").is_file()  # the bundle is built first, even in a dry run


def test_gcp_dry_run_of_the_webhook_is_public_http_in_the_chosen_region_and_project() -> None:
    env = deploy_env(DRY_RUN="1", GCP_REGION="southamerica-east1", GCP_PROJECT="acme-wsm")
    env["GCP_DEPLOY_FLAGS"] = "--vpc-connector=wsm-redis --memory=512Mi"
    done = run("infra.deploy.gcp", "webhook", env=env)
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout)
    for flag in ("--runtime=python311", "--entry-point=webhook", "--source=build/webhook", "--trigger-http"):
        assert flag in argv
    assert "--allow-unauthenticated" in argv and not [a for a in argv if a.startswith("--trigger-topic")]
    assert "--region=southamerica-east1" in argv and "--project=acme-wsm" in argv
    assert argv[-2:] == ["--vpc-connector=wsm-redis", "--memory=512Mi"]
    assert not [a for a in argv if a.startswith("--set-env-vars")]  # nothing set, nothing sent


def test_gcp_env_value_with_a_comma_switches_the_delimiter() -> None:
    done = run("infra.deploy.gcp", "webhook", env=deploy_env(DRY_RUN="1", WAHA_URL="http://a,b", WSM_X="1"))
    assert "'--set-env-vars=^@^WAHA_URL=http://a,b@WSM_X=1'" in done.stdout


def test_gcp_unknown_function_is_a_clear_error() -> None:
    done = run("infra.deploy.gcp", "notifer", env=deploy_env(DRY_RUN="1"))
    assert done.returncode != 0
    assert "unknown function 'notifer'" in done.stderr and "webhook, worker, notifier" in done.stderr


def test_gcp_deploy_without_gcloud_says_so(tmp_path: Path) -> None:
    done = run("infra.deploy.gcp", "worker", env=deploy_env(PATH=str(tmp_path)))
    assert done.returncode != 0
    assert "gcloud not found on PATH" in done.stderr and "DRY_RUN=1" in done.stderr


@pytest.fixture
def fake_gcloud(tmp_path: Path) -> Path:
    """A stand-in ``gcloud`` executable recording its argv and working directory, exiting with FAKE_GCLOUD_EXIT."""
    script = tmp_path / "bin" / "gcloud"
    script.parent.mkdir()
    record = tmp_path / "calls.jsonl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n"
        "if sys.argv[1:3] == ['functions', 'describe']:\n"
        "    print(os.environ.get('FAKE_GCLOUD_URL', ''))\n"
        "sys.exit(int(os.environ.get('FAKE_GCLOUD_EXIT', '0')))\n"
    )
    script.chmod(0o755)
    return record


def test_gcp_deploy_runs_gcloud_with_the_real_values_but_shows_them_masked(fake_gcloud: Path) -> None:
    path = f"{fake_gcloud.parent / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    done = run("infra.deploy.gcp", "worker", env=deploy_env(PATH=path, **settings_env()))
    assert done.returncode == 0, done.stderr
    (call,) = [json.loads(line) for line in fake_gcloud.read_text().splitlines()]
    assert call["argv"][:3] == ["functions", "deploy", "worker"]
    assert set_env_vars(call["argv"])["WAHA_API_KEY"] == SECRETS["WAHA_API_KEY"]
    assert set_env_vars(call["argv"])["REDIS_URL"] == f"redis://:{REDIS_PASSWORD}@10.1.2.3:6379/0"
    source = Path(call["cwd"]) / next(a for a in call["argv"] if a.startswith("--source=")).split("=", 1)[1]
    assert (source / "main.py").is_file() and (source / "wsm" / "store" / "lua").is_dir()
    for secret in [*SECRETS.values(), REDIS_PASSWORD]:
        assert secret not in done.stdout + done.stderr


def test_gcp_deploy_reports_a_failing_gcloud(fake_gcloud: Path) -> None:
    path = f"{fake_gcloud.parent / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    done = run("infra.deploy.gcp", "webhook", env=deploy_env(PATH=path, FAKE_GCLOUD_EXIT="3"))
    assert done.returncode != 0 and "gcloud exited with status 3" in done.stderr


def subscription_flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in argv if a.startswith("--"))


def test_gcp_dry_run_of_pubsub_prints_the_topology_the_emulator_tests_run() -> None:
    env = deploy_env(DRY_RUN="1", GCP_PROJECT="acme-wsm", GCP_PUSH_SERVICE_ACCOUNT="push@acme-wsm.iam")
    env["GCP_WORKER_URL"] = "https://worker-x.a.run.app"
    done = run("infra.deploy.gcp", "pubsub", env=env)
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines()]
    assert [c[:5] for c in commands[:3]] == [
        ["gcloud", "pubsub", "topics", "create", "wsm-events"],
        ["gcloud", "pubsub", "topics", "create", "wsm-events-dead"],
        ["gcloud", "pubsub", "subscriptions", "create", "wsm-events-dead"],  # keeps what was dead-lettered
    ]
    assert all("--project=acme-wsm" in c for c in commands)
    subs = {c[4]: subscription_flags(c) for c in commands if c[1:4] == ["pubsub", "subscriptions", "create"]}
    topology = Topology.from_path("projects/acme-wsm/topics/wsm-events")
    for target in (WORKER, NOTIFIER):
        flags = subs[topology.subscription(target)]
        assert flags["topic"] == "wsm-events" and flags["message-filter"] == subscription_filter(target)
        assert flags["dead-letter-topic"] == "wsm-events-dead" and flags["max-delivery-attempts"] == "5"
        assert flags["push-auth-service-account"] == "push@acme-wsm.iam"
    assert subs["wsm-events-worker"]["push-endpoint"] == "https://worker-x.a.run.app"
    assert subs["wsm-events-notifier"]["push-endpoint"].startswith("<URL of notifier")  # not deployed: said so
    grants = [c for c in commands if c[1:3] == ["functions", "add-invoker-policy-binding"]]
    assert {c[3] for c in grants} == {WORKER, NOTIFIER}
    assert all("--member=serviceAccount:push@acme-wsm.iam" in c for c in grants)
    assert "gcp-sa-pubsub" in done.stderr  # the one-time IAM for dead-lettering is pointed out


def test_gcp_pubsub_asks_gcloud_for_the_function_urls_and_runs_each_command(fake_gcloud: Path) -> None:
    path = f"{fake_gcloud.parent / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env = deploy_env(PATH=path, GCP_PUSH_SERVICE_ACCOUNT="push@p.iam", FAKE_GCLOUD_URL="https://fn.a.run.app")
    done = run("infra.deploy.gcp", "pubsub", env=env)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line)["argv"] for line in fake_gcloud.read_text().splitlines()]
    assert [c[:3] for c in calls[:2]] == [["functions", "describe", WORKER], ["functions", "describe", NOTIFIER]]
    creates = [c for c in calls if c[:3] == ["pubsub", "subscriptions", "create"]]
    assert [c[3] for c in creates] == ["wsm-events-dead", "wsm-events-worker", "wsm-events-notifier"]
    assert all(subscription_flags(c)["push-endpoint"] == "https://fn.a.run.app" for c in creates[1:])


def test_gcp_pubsub_without_a_push_service_account_or_deployed_functions_says_what_is_missing(
    fake_gcloud: Path,
) -> None:
    path = f"{fake_gcloud.parent / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    done = run("infra.deploy.gcp", "pubsub", env=deploy_env(PATH=path))
    assert done.returncode != 0 and "set GCP_PUSH_SERVICE_ACCOUNT" in done.stderr
    done = run("infra.deploy.gcp", "pubsub", env=deploy_env(PATH=path, GCP_PUSH_SERVICE_ACCOUNT="push@p.iam"))
    assert done.returncode != 0 and "no URL for worker: deploy it first" in done.stderr
    assert not [line for line in fake_gcloud.read_text().splitlines() if '"create"' in line]  # nothing created


# --- AWS Lambda on LocalStack (moto's server stands in) ----------------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` on a free port; yields its host:port, the LOCALSTACK_HOST to deploy to."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=deploy_env(),
        )
    try:
        wait_for_port(port, 30, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def lambda_api(host: str) -> Any:
    return Session(localstack_host=host).client("lambda")


def deploy_aws(name: str, host: str, **settings: str) -> subprocess.CompletedProcess[str]:
    done = run("infra.deploy.aws", name, env=deploy_env(LOCALSTACK_HOST=host, **settings))
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_aws_deploy_creates_the_webhook_with_a_public_url_then_updates_it(moto: str) -> None:
    done = deploy_aws("webhook", moto, WSM_MAX_ACTIVE="2", **SECRETS)
    assert "deployed wsm-webhook (python3.11, lambda_handler.handler)" in done.stdout
    assert not [s for s in SECRETS.values() if s in done.stdout + done.stderr]
    lam = lambda_api(moto)
    config = lam.get_function(FunctionName="wsm-webhook")["Configuration"]
    assert (config["Runtime"], config["Handler"], config["State"]) == ("python3.11", "lambda_handler.handler", "Active")
    assert config["Role"].endswith(":role/lambda-role")
    assert config["Environment"]["Variables"] == {"WSM_MAX_ACTIVE": "2", **SECRETS}
    url = lam.get_function_url_config(FunctionName="wsm-webhook")
    assert url["AuthType"] == "NONE" and url["FunctionUrl"] in done.stdout
    policy = json.loads(lam.get_policy(FunctionName="wsm-webhook")["Policy"])
    assert [s["Action"] for s in policy["Statement"]] == ["lambda:InvokeFunctionUrl"]

    deploy_aws("webhook", moto, WSM_MAX_ACTIVE="4")  # second deploy: update code and configuration
    config = lam.get_function(FunctionName="wsm-webhook")["Configuration"]
    assert config["Environment"]["Variables"] == {"WSM_MAX_ACTIVE": "4"}
    assert lam.get_function_url_config(FunctionName="wsm-webhook")["FunctionUrl"] == url["FunctionUrl"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_aws_deploy_of_the_worker_has_no_url_and_the_router_target_reaches_it(
    moto: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy_aws("worker", moto, WSM_LEASE_MS="5000")
    lam = lambda_api(moto)
    config = lam.get_function(FunctionName="wsm-worker")["Configuration"]
    assert (config["Runtime"], config["Handler"]) == ("python3.11", "lambda_handler.handler")
    assert config["Environment"]["Variables"] == {"WSM_LEASE_MS": "5000"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName="wsm-worker")
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        pytest.skip("moto would run the function in Docker; the invoke below expects it cannot")
    # moto accepts the invoke but cannot execute Python without Docker: it answers a FunctionError,
    # which the router's target must report as a failed delivery (so the router retries).
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{moto}")  # the router's boto3 client, no localstack-client
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    target = LambdaTarget(WORKER, "wsm-worker", timeout_s=10)
    try:
        with pytest.raises(DeliveryFailed, match="FunctionError"):
            target.deliver(to_cloudevent(WakeUp(TICK)))
    finally:
        target.close()


def invoke_like_lambda(task: Path, event: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Load ``lambda_handler.handler`` from ``task`` as Lambda's runtime does, in a Python that sees nothing else."""
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(task)!r})\n"
        "import lambda_handler\n"
        "print(json.dumps(lambda_handler.handler(json.load(sys.stdin), None)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script],  # -S: no site-packages, -I: no PYTHON* variables, no cwd
        input=json.dumps(event),
        cwd=task,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lambda_zips_answer_lambda_events_from_their_own_contents(
    moto: str, tmp_path: Path, redis_url: str, r: redis.Redis, sim: WahaSimulator
) -> None:
    hmac_key = "zip-secret"
    for name in ("webhook", "worker"):
        deploy_aws(name, moto)
        with zipfile.ZipFile(REPO / "build" / f"{name}-lambda.zip") as zf:
            zf.extractall(tmp_path / name)
    env = deploy_env(REDIS_URL=redis_url, WEBHOOK_HMAC_KEY=hmac_key, WAHA_URL=sim.url, WSM_TYPING_MAX_MS="5")
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    body = wp.message_event(A, "oi")
    raw = wp.encode(body)
    event = {
        "version": "2.0",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {k.lower(): v for k, v in wp.headers(raw, body, hmac_key).items()},
        "requestContext": {"http": {"method": "POST", "path": "/", "sourceIp": "203.0.113.9"}},
        "body": raw.decode(),
        "isBase64Encoded": False,
    }
    answer = invoke_like_lambda(tmp_path / "webhook", event, env)
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["status"] == "accepted", answer
    assert [m["id"] for m in read_history(r, "default", A)] == [body["payload"]["id"]]
    assert list((tmp_path / "webhook" / "wsm" / "ingest" / "__pycache__").glob("http.*.pyc"))  # the zip's own wsm ran

    wake = WakeUp(MESSAGE_RECEIVED, "default", A)  # what the router sends for that message
    answer = invoke_like_lambda(tmp_path / "worker", to_dict(to_cloudevent(wake)), env)
    assert answer["status"] == "ok"
    assert "Como posso ajudar?" in sim.sent_texts(A)[0].json["text"]  # the worker zip answered through WAHA
