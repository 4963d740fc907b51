"""Smoke test of the ``rollout`` benchmark: tiny sizes, every same-run reference present with its target."""

from __future__ import annotations

import json

import pytest

from benchmarks import rollout as rollout_benchmark


def test_rollout_reports_raw_envpool_and_sb3_references(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("envpool", reason="envpool is in the dev extra; scripts/setup.sh installs it")
    figures = rollout_benchmark.run(
        quick=True,
        options={"device": "cpu", "num_envs": "2,8", "steps": "24", "chunks": "2", "sb3_envs": "2"},
    )
    lines = [
        json.loads(line[6:]) for line in capsys.readouterr().out.splitlines() if line.startswith("BENCH ")
    ]
    records = {r["metric"]: r for r in lines}
    assert len(records) == len(figures)
    references = {r["reference"] for r in records.values()}
    for n in (2, 8):
        assert {f"ale-py AtariVectorEnv {n} envs", f"EnvPool {n} envs"} <= references
    # The targets: 0.95x raw at every env count, 0.95x EnvPool at 8 envs only, 2x the best SB3.
    targets = {(r["reference"], r["target"]) for r in records.values()}
    assert {
        ("ale-py AtariVectorEnv 2 envs", 0.95),
        ("ale-py AtariVectorEnv 8 envs", 0.95),
        ("EnvPool 8 envs", 0.95),
    } <= targets
    assert ("EnvPool 2 envs", None) in targets
    best_sb3 = [r for r in records.values() if r["metric"].endswith("vs best SB3")]
    assert len(best_sb3) == 1 and best_sb3[0]["target"] == 2.0
    for record in records.values():
        assert record["value"] > 0 and record["reference_value"] > 0
        assert (record["target"] is None) == (record.get("meets_target") is None)


def test_rollout_refuses_unknown_options() -> None:
    with pytest.raises(SystemExit, match="unknown option"):
        rollout_benchmark.run(quick=True, options={"num_env": "8"})
