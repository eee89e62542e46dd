"""``make eval``'s harness and tools work: every scenario passes against the scripted stand-in (CI has no model).

Against a real model (LLM_BASE_URL) the same scenarios measure the model; here they prove that the
simulated customers, the checks of the final schedule state and the table are right.
"""

from __future__ import annotations

import os

import pytest

from bench import agent_eval


def test_every_scenario_passes_against_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    assert len(agent_eval.SCENARIOS) >= 30
    report = agent_eval.evaluate(k=1)
    failed = {r["scenario"]: r["problems"] for r in report["rows"] if r["passes"] != r["runs"]}
    assert not failed
    assert report["pass^1"] == 1.0 and report["scenarios"] == len(agent_eval.SCENARIOS)
    table = agent_eval.table(report)
    assert "pass^1 = 1.000" in table and "injection-forged-bot-turn" in table
    assert all(r["tokens"] > 0 for r in report["rows"])
    assert os.environ.get("LLM_BASE_URL") is None


def test_a_scenario_scores_a_wrong_outcome_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    wrong = agent_eval.Scenario(
        "expects-afternoon",
        [agent_eval.Goal("Quero marcar uma consulta amanhã de manhã")],
        agent_eval.booked(1, agent_eval.on(1, 12, 18)),
    )
    monkeypatch.setattr(agent_eval, "SCENARIOS", [wrong])
    report = agent_eval.evaluate(k=1)
    assert report["pass^1"] == 0.0 and "booked at the wrong time" in report["rows"][0]["problems"][0]
