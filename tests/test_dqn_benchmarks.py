"""Smoke tests of the ``dqn-speed`` and ``dqn-learning`` benchmarks (``--quick``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> dict[str, dict]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *args, "--quick"],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "LODESTAR_NO_PROGRESS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    assert records and all(r["benchmark"] == args[0] for r in records)
    return {r["metric"]: r for r in records}


@pytest.mark.slow
def test_dqn_speed_quick_compares_with_sb3_and_the_update_bound():
    figures = _bench("dqn-speed")
    sb3 = figures["sb3_vs_update_bound"]
    for envs in (1, 8):
        ours = figures[f"ours_{envs}env_steps_per_s"]
        assert ours["reference"] == "sb3_dqn_cnn" and ours["reference_value"] == sb3["value"] > 0
        assert ours["target"] == 1.3 and ours["ratio"] == pytest.approx(
            ours["value"] / sb3["value"], rel=1e-3
        )
        bound = figures[f"ours_{envs}env_vs_update_bound"]
        assert bound["value"] == ours["value"] and bound["reference_value"] == sb3["reference_value"] > 0


@pytest.mark.slow
def test_dqn_learning_quick_trains_evaluates_and_scores_against_random(tmp_path):
    figures = _bench("dqn-learning", f"runs_dir={tmp_path}")
    score = figures["boxing_s1_mean_score_3000_steps"]
    assert score["reference"] == "random_agent_score" and score["reference_value"] == pytest.approx(0.1)
    assert -100 <= score["value"] <= 100  # Boxing ends at 100 points either way
    assert figures["boxing_s1_train_wall_time"]["value"] > 0
    result = json.loads((tmp_path / "boxing-s1-3000.eval.json").read_text())["results"][0]
    assert result["episodes"] == 3 and result["mean"] == pytest.approx(score["value"], abs=0.01)


@pytest.mark.slow
def test_dqn_resume_quick_times_restores_at_two_run_lengths():
    figures = _bench("dqn-resume")
    for steps in (800, 3200):
        restore = figures[f"restore_seconds_at_{steps}_steps"]
        assert restore["reference"] == "full_action_replay_from_step_0" and restore["value"] > 0
    growth = figures["restore_time_growth"]
    assert growth["target"] == 1.5 and growth["reference"] == "full_action_replay_growth"
