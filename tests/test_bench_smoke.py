"""The benchmark harness works: its quick mode of the cheapest parts writes the JSON the table is made of.

Speed goals live only in ``make bench``; this checks fields and plausible values, and one behaviour
the benchmark shows: the notifier's Redis commands per queue change do not grow with the queue.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.platform.processes import REPO
from tests.programs import require_program


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_program("wrk", "apt-get install wrk")
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    argv = [sys.executable, "-m", "bench.run", "--quick", "--only", "d", "--only", "c.notifier", "--json-out", str(out)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NOT met" in proc.stdout or "met" in proc.stdout  # the table was printed
    return json.loads(out.read_text())


def test_the_json_holds_the_table_and_the_conditions(result: dict) -> None:
    assert result["quick"] is True
    assert result["errors"] == {}
    assert set(result["parts"]) == {"c", "d"}
    assert set(result["conditions"]) == {"c", "d"}
    assert result["machine"]["cpus"] >= 1 and "redis_server" in result["machine"]
    assert {r["part"] for r in result["rows"]} == {"c", "d"}
    for row in result["rows"]:
        assert set(row) == {"part", "figure", "measured", "target", "met", "verdict"}
        assert row["verdict"] == ("" if row["met"] is None else "met" if row["met"] else "NOT met")
        assert row["measured"]


def test_memory_figures_are_plausible(result: dict) -> None:
    waiting, idle, forty = (result["parts"]["d"][k] for k in ("waiting", "idle", "idle_40"))
    assert waiting["chats"] == waiting["waiting"] == 1000
    assert 100 < waiting["bytes_per_chat"] < 20_000
    assert all(waiting["sample"][k] > 0 for k in ("history", "inbox", "state", "queue (÷ 1,000)"))
    assert 0 < waiting["bookkeeping_per_chat"] < waiting["bytes_per_chat"]
    for conversation in (idle, forty):
        assert conversation["chats"] == conversation["complete"] == 50  # closed, 20 in history, inbox/outbox empty
        assert waiting["bytes_per_chat"] < conversation["bytes_per_chat"] < 200_000
        assert conversation["sample"]["history"] > 0 and conversation["sample"]["seen"] == 0  # all within the window
        assert conversation["sample"]["inbox + outbox + lease + notify"] == 0
    assert forty["mean_chars"] == 40 < idle["mean_chars"]


def test_notifier_commands_per_queue_change_do_not_grow_with_the_queue(result: dict) -> None:
    full, small = result["parts"]["c"]["notifier"]["full"], result["parts"]["c"]["notifier"]["small"]
    assert full["steady"]["waiting"] > 3 * small["steady"]["waiting"]
    assert full.keys() == small.keys() == {"steady", "due_10", "due_50"}
    for key in full:
        assert full[key]["commands"] == small[key]["commands"], (key, full[key]["by_command"], small[key]["by_command"])
    assert full["steady"]["told"] == 0 and full["steady"]["commands"] <= 2  # nobody due: one look at notify:due
    for run in (*full.values(), *small.values()):
        assert run["told"] == run["due"] == run["sent_to_waha"]
    per_notice = [(full[k]["commands"] - full["steady"]["commands"]) / full[k]["told"] for k in ("due_10", "due_50")]
    assert per_notice[0] == pytest.approx(per_notice[1], rel=0.1)  # cost follows notices sent
