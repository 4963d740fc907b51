"""The ``vln-ablation`` benchmark: its protocol (test headline, selection on a validation split, seeds and
bootstrap intervals) on made-up scores, and a smoke test of the whole pipeline (``--quick``)."""

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


def _ablation(work: Path, *options: str) -> tuple[list[dict], str]:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmark.py"),
            "vln-ablation",
            "--quick",
            f"work={work}",
            *options,
        ],
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
    from lodestar.agents.vln.follower import load_follower

    records, log = _ablation(tmp_path)
    metrics = {r["metric"]: r for r in records}
    assert records[0]["metric"] == f"{CONDITIONS['a_scratch']}: test SR mean"  # the headline comes first
    for condition, label in CONDITIONS.items():
        for split in ("test", "val_seen", "val_unseen"):
            for metric in ("SR", "SPL", "NDTW"):
                assert 0.0 <= metrics[f"{label}: {split} {metric} mean"]["value"] <= 100.0
        for split in ("test", "val_unseen"):
            ends = [metrics[f"{label}: {split} episodes ending as {name}"]["value"] for name in FAILURES]
            assert sum(ends) == pytest.approx(100.0)
            assert ends[0] == pytest.approx(metrics[f"{label}: {split} SR mean"]["value"])  # "success" first
        for seed in (0, 1, 2):  # three seeds per arm by default
            run = tmp_path / f"{condition}-s{seed}"
            assert load_follower(run).info["selected_by"] == "eval/val_unseen/spl"  # never test
            cached = json.loads((run / "ablation_eval.json").read_text())
            assert cached["selected_by"] == "eval/val_unseen/spl" and set(cached["splits"]) == {
                "test",
                "val_seen",
                "val_unseen",
            }
            assert (tmp_path / f"{condition}-s{seed}.log").is_file()  # each run's own process output
    gain = metrics["test SR gain (c) - (a)"]
    a, c = (metrics[f"{CONDITIONS[k]}: test SR mean"]["value"] for k in ("a_scratch", "c_pretrained"))
    low, high = (metrics[f"test SR gain (c) - (a): 95% CI {end}"]["value"] for end in ("low", "high"))
    assert gain["value"] == pytest.approx(c - a) and gain["target"] == 5.0 and low <= high
    assert gain["meets_target"] == (gain["value"] >= 5.0 and low > 0)
    assert metrics["val_unseen SR gain (c) - (a)"]["target"] is None  # beside the headline, no target
    for what, unit in (("pretraining samples/s", "samples/s"), ("fine-tuning episodes/s", "episodes/s")):
        assert metrics[f"{what}, 1 process"]["value"] > 0 and metrics[f"{what}, 1 process"]["unit"] == unit
        assert (
            metrics[f"{what}, torchrun 2 processes"]["reference_value"]
            == metrics[f"{what}, 1 process"]["value"]
        )
    assert "[vln-ablation] fine-tuning a_scratch seed 2" in log

    # Everything is in `work` already: no stage trains again and no run is evaluated again.
    caches = sorted(tmp_path.glob("*-s*/ablation_eval.json"))
    written = [p.stat().st_mtime_ns for p in caches]
    again, log = _ablation(tmp_path, "throughput=0")
    assert len(caches) == 9 and [p.stat().st_mtime_ns for p in caches] == written
    assert "[vln-ablation] fine-tuning" not in log and "[vln-ablation] pretraining" not in log
    assert {r["metric"]: r["value"] for r in again} == {
        m: r["value"]
        for m, r in metrics.items()
        if "process" not in m  # throughput=0: not measured
    }


# -- the protocol, on made-up scores ----------------------------------------------------------------


def _scores(sr: float) -> dict[str, dict[str, float]]:
    """One seed's evaluation: every split at success rate ``sr``, every failure the same share of the rest."""
    others = [name for name in FAILURES if name != "success"]
    failures = {f"failures/{n}": (sr if n == "success" else (1 - sr) / len(others)) for n in FAILURES}
    return {
        split: {"sr": sr, "spl": sr, "ndtw": sr, **failures} for split in ("test", "val_seen", "val_unseen")
    }


def _gain(a: list[float], c: list[float]) -> tuple[dict[str, dict], list[str]]:
    """The report's figures (as BENCH records) and text for arms (a) and (c) of the given test SRs."""
    from benchmarks.vln_ablation_report import summarize

    results = {"a_scratch": [_scores(x) for x in a], "b_augment": [_scores(x) for x in a],
               "c_pretrained": [_scores(x) for x in c]}  # fmt: skip
    figures, lines = summarize(results, "val_unseen", resamples=2000)
    return {f.metric: f.to_json() for f in figures}, lines


def test_report_makes_test_the_headline_and_claims_a_gain_only_outside_the_noise():
    from lodestar.runtime.stats import bootstrap_mean_difference

    clear, lines = _gain([0.30, 0.31, 0.29], [0.40, 0.41, 0.39])  # +10 points, seeds agree
    first = next(iter(clear))
    assert first == f"{CONDITIONS['a_scratch']}: test SR mean" and clear[first]["value"] == pytest.approx(
        30.0
    )
    text = "\n".join(lines)
    assert text.index("headline: test") < text.index("beside it") < text.index("val_unseen SR")
    assert "chosen on val_unseen" in text
    gain = clear["test SR gain (c) - (a)"]
    interval = bootstrap_mean_difference([40.0, 41.0, 39.0], [30.0, 31.0, 29.0], resamples=2000)
    assert gain["value"] == pytest.approx(10.0) and gain["meets_target"] is True
    assert clear["test SR gain (c) - (a): 95% CI low"]["value"] == pytest.approx(interval.low)
    assert clear["test SR gain (c) - (a): 95% CI high"]["value"] == pytest.approx(interval.high)
    assert clear["test SR gain (c) - (a): std error"]["value"] == pytest.approx((2 / 3) ** 0.5)
    assert clear[f"{CONDITIONS['c_pretrained']}: test SR std"]["value"] == pytest.approx(1.0)

    noisy, _ = _gain([0.10, 0.50, 0.30], [0.20, 0.60, 0.40])  # +10 points on average, seeds disagree
    assert noisy["test SR gain (c) - (a)"]["value"] == pytest.approx(10.0)
    assert noisy["test SR gain (c) - (a): 95% CI low"]["value"] < 0
    assert noisy["test SR gain (c) - (a)"]["meets_target"] is False  # mean reached, interval includes 0

    small, _ = _gain([0.30, 0.30, 0.30], [0.33, 0.33, 0.33])  # a sure gain, but under 5 points
    assert small["test SR gain (c) - (a): 95% CI low"]["value"] == pytest.approx(3.0)
    assert small["test SR gain (c) - (a)"]["meets_target"] is False


def test_plan_runs_three_seeds_and_passes_a_validation_selection_split(tmp_path):
    from benchmarks.vln_ablation import make_plan
    from benchmarks.vln_stages import check_stages, finetune_overrides
    from lodestar.agents.vln.finetune_config import FinetuneConfig
    from lodestar.runtime.config import load_config

    plan = make_plan(False, {"data": str(tmp_path)})
    assert plan.seeds == [0, 1, 2] and plan.select == "val_unseen" and plan.resamples >= 10_000
    overrides = finetune_overrides(plan, "a_scratch", 0, None)
    assert "select_split=val_unseen" in overrides and "select_split=val_unseen" in plan.stage("speaker")
    config = load_config(FinetuneConfig, ROOT / "configs" / "vln_finetune.yaml", overrides)
    assert config.select_split == "val_unseen" and "test" not in config.data.eval_splits
    seen = make_plan(False, {"data": str(tmp_path), "select": "val_seen"})
    assert "select_split=val_seen" in finetune_overrides(seen, "a_scratch", 0, None)

    for options, error in (
        ({"seeds": "0,1"}, "at least 3 distinct seeds"),
        ({"seeds": "0,0,1"}, "at least 3 distinct seeds"),
        ({"select": "test"}, "select_split 'test' is a reported split"),
        ({"finetune.select_split": "test"}, "pass select=<split>"),
        ({"resamples": "100"}, "resamples must be >= 1000"),
    ):
        with pytest.raises(SystemExit, match=error):
            make_plan(False, {"data": str(tmp_path), **options})
    check_stages(plan)  # the shipped configs pass
    for stage in ("speaker", "pretrain", "finetune"):  # no stage evaluates test while it trains
        peeking = make_plan(False, {"data": str(tmp_path), f"{stage}.data.eval_splits": "[val_unseen,test]"})
        with pytest.raises((SystemExit, ValueError), match="reported split"):
            check_stages(peeking)


def test_evaluations_are_cached_and_a_run_selected_elsewhere_is_refused(tmp_path):
    from benchmarks.vln_ablation import make_plan
    from benchmarks.vln_stages import evaluate

    run = tmp_path / "a_scratch-s0"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not a checkpoint")  # loading it would fail: only the cache is read
    scores = _scores(0.4)

    def cache(selected_by: str) -> None:
        (run / "ablation_eval.json").write_text(json.dumps({"selected_by": selected_by, "splits": scores}))

    cache("eval/val_unseen/spl")
    assert evaluate(make_plan(False, {"data": str(tmp_path)}), run) == scores
    with pytest.raises(SystemExit, match="selected on 'val_unseen', this benchmark selects on 'val_seen'"):
        evaluate(make_plan(False, {"data": str(tmp_path), "select": "val_seen"}), run)
    cache("eval/test/spl")
    with pytest.raises(SystemExit, match="selected on 'test'"):
        evaluate(make_plan(False, {"data": str(tmp_path)}), run)


def _record_synthesis(data: Path, config) -> None:
    """The record ``synthesize`` leaves beside a split (options resolved the same way)."""
    (data / "trajectories").mkdir(parents=True)
    (data / f"R2R_{config.split_name}.json").write_text("[]")
    options = {**config.plan_options(), "features": "cnn", "speaker": "digest"}
    (data / "trajectories" / f"{config.split_name}.json").write_text(json.dumps({"options": options}))


def test_synthetic_split_is_reused_only_with_the_requested_options(tmp_path):
    from benchmarks.vln_ablation import make_plan
    from benchmarks.vln_stages import ensure_synthetic

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
    from benchmarks.vln_ablation import make_plan
    from benchmarks.vln_stages import finetune_overrides, pretrain_config
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
