"""Smoke test of the ``vln-ablation`` benchmark (``--quick``: tiny world, tiny budgets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lodestar.envs.nav.eval.failures import CATEGORIES as FAILURES

ROOT = Path(__file__).resolve().parent.parent
CONDITIONS = {
    "a_scratch": "(a) scratch, human",
    "b_augment": "(b) scratch, human + synthetic aug.",
    "c_pretrained": "(c) pretrained, then human",
}


def _ablation(work: Path) -> tuple[list[dict], str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "vln-ablation", "--quick", f"work={work}"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "LODESTAR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    return records, done.stderr


@pytest.mark.slow
def test_vln_ablation_quick_runs_every_condition_and_reuses_finished_runs(tmp_path):
    records, log = _ablation(tmp_path)
    metrics = {r["metric"]: r for r in records}
    for condition, label in CONDITIONS.items():
        for split in ("val_seen", "val_unseen"):
            for metric in ("SR", "SPL", "NDTW"):
                assert 0.0 <= metrics[f"{label}: {split} {metric} mean"]["value"] <= 100.0
        ends = [metrics[f"{label}: val_unseen episodes ending as {name}"]["value"] for name in FAILURES]
        assert sum(ends) == pytest.approx(100.0)
        assert ends[0] == pytest.approx(metrics[f"{label}: val_unseen SR mean"]["value"])  # "success" first
        for seed in (0, 1):
            run = tmp_path / f"{condition}-s{seed}"
            assert (run / "best.pt").is_file() and (run / "ablation_eval.json").is_file()
            assert (tmp_path / f"{condition}-s{seed}.log").is_file()  # each run's own process output
    gain = metrics["val_unseen SR gain (c) - (a)"]
    a, c = (metrics[f"{CONDITIONS[k]}: val_unseen SR mean"]["value"] for k in ("a_scratch", "c_pretrained"))
    assert gain["value"] == pytest.approx(c - a) and gain["target"] == 5.0
    for what, unit in (("pretraining samples/s", "samples/s"), ("fine-tuning episodes/s", "episodes/s")):
        assert metrics[f"{what}, 1 process"]["value"] > 0 and metrics[f"{what}, 1 process"]["unit"] == unit
        assert (
            metrics[f"{what}, torchrun 2 processes"]["reference_value"]
            == metrics[f"{what}, 1 process"]["value"]
        )
    assert "[vln-ablation] fine-tuning a_scratch seed 0" in log

    again, log = _ablation(tmp_path)  # everything is in `work` already: no stage trains again
    assert "[vln-ablation] fine-tuning" not in log and "[vln-ablation] pretraining" not in log
    assert {r["metric"]: r["value"] for r in again if "mean" in r["metric"]} == {
        m: r["value"] for m, r in metrics.items() if "mean" in m
    }


def _record_synthesis(data: Path, config) -> None:
    """The record ``synthesize`` leaves beside a split (options resolved the same way)."""
    (data / "trajectories").mkdir(parents=True)
    (data / f"R2R_{config.split_name}.json").write_text("[]")
    options = {**config.plan_options(), "features": "cnn", "speaker": "digest"}
    (data / "trajectories" / f"{config.split_name}.json").write_text(json.dumps({"options": options}))


def test_synthetic_split_is_reused_only_with_the_requested_options(tmp_path):
    from benchmarks.vln_ablation import ensure_synthetic, make_plan

    work = {"data": str(tmp_path), "work": str(tmp_path / "work")}
    sampled = make_plan(False, work)
    assert sampled.synthetic == "synthetic" and sampled.synthesis().decoding == "sample"
    _record_synthesis(tmp_path, sampled.synthesis())
    ensure_synthetic(sampled)  # same options: reused, no speaker trained

    greedy = make_plan(False, {**work, "synth.decoding": "greedy"})
    with pytest.raises(
        SystemExit, match=r"R2R_synthetic.json was synthesized with decoding='sample' \(asked: 'greedy'\)"
    ):
        ensure_synthetic(greedy)
    assert not (tmp_path / "work" / "speaker").exists()


def test_a_named_synthetic_split_feeds_augmentation_and_pretraining(tmp_path):
    from benchmarks.vln_ablation import finetune_overrides, make_plan, pretrain_config
    from lodestar.agents.vln.finetune_config import FinetuneConfig
    from lodestar.runtime.config import load_config

    plan = make_plan(False, {"data": str(tmp_path), "synth.split_name": "synthetic_sample"})
    assert pretrain_config(plan).data.optional_sources == ["synthetic_sample"]
    augment = load_config(
        FinetuneConfig, ROOT / "configs" / "vln_finetune.yaml", finetune_overrides(plan, "b_augment", 0, None)
    )
    assert augment.data.augment_split == "synthetic_sample"
    scratch = load_config(
        FinetuneConfig, ROOT / "configs" / "vln_finetune.yaml", finetune_overrides(plan, "a_scratch", 0, None)
    )
    assert scratch.data.augment_split is None
