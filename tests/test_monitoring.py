"""infra/monitoring: the Grafana dashboard and the alert rules parse, name only metrics the code exposes, and
(with promtool, Debian's prometheus package) are valid PromQL whose alerts fire when they should; and a real
Prometheus scrapes the webhook's /metrics with the token and evaluates the rules on what it scraped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
import yaml

from infra.platform.processes import function_process
from infra.platform.redis_server import free_port
from infra.waha_sim import payloads as wp
from tests.metrics_helpers import TOKEN, parse
from tests.programs import require_program
from wsm.core.settings import get_settings
from wsm.metrics import record
from wsm.metrics.endpoint import render
from wsm.store import keys

MONITORING = Path(__file__).resolve().parents[1] / "infra" / "monitoring"
METRIC_NAME = re.compile(r"\bwsm_[a-z_]+\b")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$sla": "120.0"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["panels"], "the dashboard has panels"
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


@pytest.fixture
def exposed(r: redis.Redis) -> set[str]:
    """Every sample name /metrics shows once each metric has been recorded and a WAHA session is known."""
    r.sadd(keys.SESSIONS, "default")
    get_settings.cache_clear()
    record.webhook_event("message", "accepted")
    record.message("in", "customer")
    record.waha_request("sendText", "201", 0.01)
    record.queue_wait("bot", 3)
    record.first_response(2)
    record.appointment("booked")
    record.llm_tokens(prompt=10, completion=2)
    return {name for name, _ in parse(render(get_settings()).decode())}


def test_alerts_cover_what_the_issue_asks() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {"WsmQueueWaitOverSla", "WsmDeadLettersGrowing", "WsmNoWebhook", "WsmWahaSessionNotWorking"} <= names
    for rule in alert_rules():
        assert rule["expr"] and rule["annotations"]["summary"] and rule["labels"]["severity"]


def test_every_expression_names_metrics_that_exist(exposed: set[str]) -> None:
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    named = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert named and not named - exposed, f"not exposed by /metrics: {sorted(named - exposed)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = require_program("promtool", "Debian package prometheus")
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, example in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, example)
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    promtool = require_program("promtool", "Debian package prometheus")
    for argv in (
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        done = subprocess.run([promtool, *argv], cwd=MONITORING, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_real_prometheus_scrapes_the_webhook_and_evaluates_the_rules(redis_url: str, tmp_path: Path) -> None:
    """Debian's Prometheus scrapes /metrics with the token (and is refused without it), stores the figures, and
    evaluates alerts.yml against them without errors."""
    prometheus = require_program("prometheus", "Debian package prometheus")
    env = dict(os.environ, REDIS_URL=redis_url, WORKERS="2", THREADS="4", WSM_METRICS_TOKEN=TOKEN)
    env.pop("WEBHOOK_HMAC_KEY", None)
    webhook = function_process("webhook", free_port(), env).start()
    port = free_port()
    target = [f"127.0.0.1:{webhook.port}"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MONITORING / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "wsm", "authorization": {"credentials": TOKEN}, "static_configs": [{"targets": target}]},
            {"job_name": "no-token", "static_configs": [{"targets": target}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[dict]:
        try:
            return requests.get(f"{api}/query", params={"query": expr}, timeout=5).json()["data"]["result"]
        except requests.RequestException:
            return []

    def until(check, timeout_s: float = 30) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.5)
        return False

    try:
        for i in range(3):
            body = wp.message_event(f"55119444400{i:02d}@c.us", "oi")
            raw = wp.encode(body)
            assert requests.post(f"http://127.0.0.1:{webhook.port}/", data=raw, headers=wp.headers(raw, body)).ok
        counted = 'sum(wsm_webhook_events_total{job="wsm", event="message", outcome="accepted"})'
        assert until(lambda: [float(r["value"][1]) for r in query(counted)] == [3.0])
        assert until(lambda: [float(r["value"][1]) for r in query('up{job="no-token"}')] == [0.0])  # refused: 401
        assert [float(r["value"][1]) for r in query('wsm_slots_busy{job="wsm"}')] == [1.0]

        def rules_evaluated() -> bool:
            groups = requests.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return len(rules) == len(alert_rules()) and all(r["health"] == "ok" for r in rules)

        assert until(rules_evaluated)
    finally:
        server.terminate()
        server.wait(10)
        webhook.stop()
