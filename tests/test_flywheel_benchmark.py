"""The ``flywheel`` benchmark: round 0 adopted from vln-ablation's arm (c), its option checks, its report
(round gains and pragmatic inference, each claimed only outside the noise of the seeds), and the
whole benchmark on the ``tiny`` world."""

from __future__ import annotations

import json
from pathlib import Path

import flywheel
import pytest

from benchmarks import flywheel as bench
from lodestar.agents.vln.speaker_training import SpeakerTrainConfig
from lodestar.envs.nav.eval.failures import CATEGORIES as FAILURES
from lodestar.pretrain.trainer import PretrainConfig
from lodestar.runtime.config import load_config, save_config
from tests.follower_fixtures import FEATURE_NAME, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.speaker_fixtures import copy_world

ROOT = Path(__file__).resolve().parent.parent


def _ablation_dir(root: Path, split: str = "synthetic") -> Path:
    """A vln-ablation work directory as far as round 0 reads it: its pretraining run's config."""
    config = load_config(
        PretrainConfig, ROOT / "configs" / "vln_pretrain.yaml", [f"data.optional_sources=[{split}]"]
    )
    save_config(config, root / "pretrain" / "config.yaml")
    return root


def _wheel(data: Path, run: Path, *overrides: str) -> flywheel.Flywheel:
    config = load_config(
        flywheel.FlywheelConfig,
        flywheel.CONFIG,
        [f"data_dir={data}", f"run_dir={run}", f"features={FEATURE_NAME}", *overrides],
    )
    return flywheel.Flywheel(config)


def test_adopted_round_zero_uses_the_ablation_arm_c_and_keeps_its_records_in_the_run(
    random_feature_world: Path, tmp_path: Path
) -> None:
    ablation = _ablation_dir(tmp_path / "ablation", split="my_synthetic")
    wheel = _wheel(random_feature_world, tmp_path / "run", f"round0={ablation}")
    zero, one = wheel.round(0), wheel.round(1)
    assert (zero.labelled, zero.kept, zero.speaker_split) == ("my_synthetic", "my_synthetic", "train")
    assert zero.plan.work == ablation and zero.plan.synthetic == "my_synthetic"
    assert zero.follower_runs() == [ablation / f"c_pretrained-s{s}" for s in (0, 1, 2)]
    assert zero.dir == tmp_path / "run" / "round_0"  # stages.json, metrics.json: the flywheel's own
    # Later rounds are the flywheel's: their own directory and follower runs.
    assert one.plan.work == one.dir == tmp_path / "run" / "round_1"
    assert one.follower_runs()[0] == tmp_path / "run" / "round_1" / "follower-s0"

    missing = _wheel(random_feature_world, tmp_path / "run", f"round0={tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="no pretraining run there"):
        missing.round(0)


def test_an_adopted_stage_trained_with_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    speaker_config = ROOT / "configs" / "vln_speaker.yaml"
    asked = load_config(SpeakerTrainConfig, speaker_config, ["name=speaker"])
    save_config(
        load_config(SpeakerTrainConfig, speaker_config, ["lr=0.5", "torch_threads=1"]),
        tmp_path / "a" / "config.yaml",
    )
    with pytest.raises(ValueError, match=r"lr=0.5 \(round 0: 0.001\)"):
        flywheel.check_adopted_config(tmp_path / "a", SpeakerTrainConfig, asked)
    # Where and how fast it ran (threads, device, name) does not change what it learned.
    save_config(
        load_config(SpeakerTrainConfig, speaker_config, ["torch_threads=1", "device=cpu"]),
        tmp_path / "b" / "config.yaml",
    )
    flywheel.check_adopted_config(tmp_path / "b", SpeakerTrainConfig, asked)
    flywheel.check_adopted_config(tmp_path / "not_started", SpeakerTrainConfig, asked)


def test_options_are_checked_and_round_zero_is_adopted_when_the_ablation_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = bench.make_settings(False, {"seeds": "3,4,5", "threshold": "0.7"})
    assert settings.config.seeds == [3, 4, 5] and settings.config.threshold == 0.7
    assert settings.config.round0 == "" and settings.rerank == 8
    _ablation_dir(tmp_path / bench.ABLATION_WORK)
    assert bench.make_settings(False, {}).config.round0 == str(bench.ABLATION_WORK)
    assert bench.make_settings(False, {"round0": ""}).config.round0 == ""
    for options, message in [
        ({"rerank": "1"}, "rerank is K >= 2"),
        ({"select_split": "test"}, "validation split"),
        ({"weights": "0,2"}, "in \\[0, 1\\]"),
        ({"resamples": "10"}, "resamples must be >= 1000"),
        ({"threshold": "3"}, "threshold must be in"),
    ]:
        with pytest.raises(SystemExit, match=message):
            bench.make_settings(False, options)


def _round(k: int, seeds_sr: list[float]) -> dict:
    splits = flywheel.summarize_seeds(
        [{s: {"sr": x, "spl": x, "ndtw": x} for s in ("test", "val_seen", "val_unseen")} for x in seeds_sr],
        list(range(len(seeds_sr))),
    )
    return {"round": k, "labelled": 100, "kept": 60, "splits": splits,
            "speaker_bleu4": {s: 0.3 for s in ("test", "val_seen", "val_unseen")}, "seconds": {"speaker": 5.0}}  # fmt: skip


def _target(figures: list, metric: str) -> bool | None:
    return next(f for f in figures if f.metric == metric).meets_target


def test_round_gain_target_is_on_the_last_round_and_needs_an_interval_above_zero() -> None:
    clear = [_round(0, [0.40, 0.41, 0.42]), _round(1, [0.40, 0.42, 0.44]), _round(2, [0.45, 0.46, 0.47])]
    figures, lines = bench.round_report(clear, resamples=2000)
    assert _target(figures, "round 2 - round 0: test SR gain") is True
    assert _target(figures, "round 1 - round 0: test SR gain") is None  # no target on middle rounds
    kept = next(f for f in figures if f.metric == "round 2: synthetic pairs kept")
    assert kept.ratio == pytest.approx(0.6)
    assert "round 2: speaker 5" in "\n".join(lines)
    # The same mean gain (+5 points) from seeds spread across zero is not claimed.
    noisy = [_round(0, [0.40, 0.41, 0.42]), _round(1, [0.1, 0.8, 0.48])]
    figures, _ = bench.round_report(noisy, resamples=2000)
    assert _target(figures, "round 1 - round 0: test SR gain") is False


def _reranked(greedy_sr: float, reranked_sr: float) -> dict:
    return {"weight": 0.5, "greedy": {"sr": greedy_sr, "spl": greedy_sr, "tl": 10.0},
            "reranked": {"sr": reranked_sr, "spl": reranked_sr, "tl": 12.0}}  # fmt: skip


def test_rerank_gain_is_paired_per_seed_and_reports_sr_spl_tl() -> None:
    # Seeds differ a lot, reranking adds 3 points to each: a clear paired gain.
    figures, lines = bench.rerank_report(
        [_reranked(0.2, 0.23), _reranked(0.5, 0.53), _reranked(0.8, 0.83)], 8, 2000
    )
    gain = next(f for f in figures if f.metric == "test SR gain of pragmatic inference over greedy")
    assert gain.value == pytest.approx(3.0) and gain.meets_target is True
    tl = next(f for f in figures if f.metric == "test TL, reranked decoding")
    assert tl.value == pytest.approx(12.0) and tl.reference_value == pytest.approx(10.0)
    assert "K=8" in lines[1]
    figures, _ = bench.rerank_report(
        [_reranked(0.5, 0.44), _reranked(0.5, 0.5), _reranked(0.5, 0.62)], 8, 2000
    )
    assert _target(figures, "test SR gain of pragmatic inference over greedy") is False


def test_failure_breakdown_is_the_mean_over_seeds_per_round_and_category() -> None:
    def seed(success: float) -> dict:
        rest = {f"failures/{name}": 0.0 for name in FAILURES}
        one = {**rest, "failures/success": success, "failures/strayed_later": 1.0 - success}
        return {split: dict(one) for split in ("test", "val_unseen")}

    figures, lines = bench.failure_report([[seed(0.2), seed(0.4)], [seed(0.6), seed(0.6)]])
    value = {f.metric: f.value for f in figures}
    assert value["round 0: test episodes ending as success"] == pytest.approx(30.0)
    assert value["round 1: val_unseen episodes ending as strayed_later"] == pytest.approx(40.0)
    assert len(figures) == 2 * 2 * len(FAILURES) and "where episodes end" in lines[1]


def test_filter_report_sets_kept_against_dropped_pairs() -> None:
    record = {"threshold": 0.5, "pairs": 10, "kept_fraction": 0.4,
              "kept": {"pairs": 4, "instruction_words": 30.0, "path_hops": 5.0, "path_metres": 9.0, "ndtw": 0.8},
              "dropped": {"pairs": 6, "instruction_words": 35.0, "path_hops": 5.5, "path_metres": 10.0, "ndtw": 0.2}}  # fmt: skip
    figures, lines = bench.filter_report({1: record})
    assert figures[0].value == 0.8 and figures[0].reference_value == 0.2
    assert "round 1: kept 4 of 10 (40.0%, nDTW >= 0.5)" in lines[-1] and "ndtw 0.80 vs 0.20" in lines[-1]


@pytest.mark.slow
def test_quick_benchmark_runs_two_rounds_and_reranks_on_the_tiny_world(
    random_feature_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = copy_world(random_feature_world, tmp_path / "world")
    options = {"run": str(tmp_path / "run"), "data": str(data), "features": FEATURE_NAME, "seeds": "0,1"}
    figures = bench.run(True, options)
    metrics = {f.metric for f in figures}
    assert {"round 1 - round 0: test SR gain", "test SR gain of pragmatic inference over greedy"} <= metrics
    assert "round 1: kept pairs' mean filter nDTW" in metrics
    assert "round 1: filter wall time" in metrics and "round 1: test episodes ending as success" in metrics
    out = capsys.readouterr().out
    assert out.count("BENCH ") == len(figures) and "pragmatic inference on test" in out
    cached = json.loads((tmp_path / "run" / "round_1" / "rerank-s1.json").read_text())
    assert cached["key"]["candidates"] == 3 and cached["weight"] in cached["key"]["weights"]
