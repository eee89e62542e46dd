"""infra/monitoring: the Grafana dashboard and the alert rules parse, name only metrics the code exposes, and
(with promtool, Debian's prometheus package) are valid PromQL whose alerts fire when they should."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from tests.metrics_helpers import parse
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
