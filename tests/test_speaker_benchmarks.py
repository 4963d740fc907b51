"""Smoke tests of the ``speaker-quality`` and ``synthesis-scale`` benchmarks (``--quick``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), name, "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LODESTAR_NO_PROGRESS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [
        json.loads(line[len("BENCH ") :]) for line in done.stdout.splitlines() if line.startswith("BENCH ")
    ]
    assert records and all(r["benchmark"] == name for r in records)
    assert all(r["reference_value"] is not None for r in records)
    return records


@pytest.mark.slow
def test_speaker_quality_quick():
    records = _bench("speaker-quality")
    metrics = [r["metric"] for r in records]
    for split in ("test", "val_seen", "val_unseen"):
        for n in (1, 4):
            for baseline in ("retrieval", "most common"):
                assert f"{split} BLEU-{n}: speaker vs {baseline}" in metrics
    assert metrics[0].startswith("test ")  # the headline comes first
    targeted = [r for r in records if r["target"] is not None]
    assert [r["metric"] for r in targeted] == ["test BLEU-4: speaker vs retrieval"]
    assert all(0.0 <= r["value"] <= 1.0 and 0.0 <= r["reference_value"] <= 1.0 for r in records)


def test_benchmark_speakers_select_on_validation_and_never_evaluate_test(tmp_path):
    from benchmarks.speaker_common import speaker_config

    config = speaker_config(tmp_path, "random", tmp_path / "speaker", [], quick=True)
    assert config.select_split == "val_unseen" and "test" not in config.data.eval_splits
    other = speaker_config(tmp_path, "random", tmp_path / "speaker", ["select_split=val_seen"], quick=True)
    assert other.select_split == "val_seen"
    for overrides in (
        ["select_split=test", "data.eval_splits=[test]"],
        ["data.eval_splits=[val_unseen,test]"],
    ):
        with pytest.raises((SystemExit, ValueError), match="reported split"):
            speaker_config(tmp_path, "random", tmp_path / "speaker", overrides, quick=True)


def test_a_speaker_that_saw_test_is_refused():
    from benchmarks.speaker_common import speaker_selection

    where = Path("speaker.pt")
    trained = {"select": "val_unseen/bleu4", "scores": {"val_seen/bleu4": 0.2, "val_unseen/bleu4": 0.3}}
    assert speaker_selection(trained, where) == "val_unseen"
    assert speaker_selection({}, where) == "unrecorded"
    with pytest.raises(SystemExit, match="selected on 'test'"):
        speaker_selection({"select": "test/bleu4", "scores": {"test/bleu4": 0.3}}, where)
    with pytest.raises(SystemExit, match=r"after evaluating \['test', 'val_unseen'\]"):
        speaker_selection({**trained, "scores": {"test/bleu4": 0.3, "val_unseen/bleu4": 0.3}}, where)


def test_most_common_instruction_is_chosen_on_train_only(tmp_path):
    """The baseline's choice reads the training episodes it is given and nothing else."""
    from benchmarks.speaker_quality import most_common_instruction
    from lodestar.envs.nav.data.r2r import Episode

    train = [Episode(i, "s", 0.0, ["a", "b"], ["walk to the kitchen and stop"] * 3) for i in range(4)]
    train.append(Episode(9, "s", 0.0, ["a", "b"], ["turn around", "go up", "exit"]))
    assert most_common_instruction(train, candidates=50) == "walk to the kitchen and stop"


@pytest.mark.slow
def test_synthesis_scale_quick():
    records = _bench("synthesis-scale")
    metrics = [r["metric"] for r in records]
    assert any(m.startswith("greedy instructions/s") for m in metrics)
    assert any(m.startswith("sample instructions/s") for m in metrics)
    wall = next(r for r in records if r["metric"].startswith("wall time for 200,000"))
    assert "extrapolated" in wall["metric"] and wall["target"] == 1800.0 and wall["value"] > 0
    assert any(m.startswith("disk for 200,000") for m in metrics)
