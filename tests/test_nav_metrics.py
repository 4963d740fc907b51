"""R2R metrics on hand-computed cases, the submission format and the evaluate_nav CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import evaluate_nav
import pytest

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.eval.metrics import (
    METRIC_KEYS,
    episode_metrics,
    evaluate,
    evaluate_split,
    load_predictions,
    parse_predictions,
    write_predictions,
)
from tests.nav_fixtures import line_graph, triangle_graph

LINE = line_graph([0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0])  # v0..v6, 2 m apart
REF = ["v0", "v1", "v2", "v3"]  # goal v3 at x = 6, reference length 6 m


def _cls(coverage: float, ref_len: float, pred_len: float) -> float:
    expected = coverage * ref_len
    return coverage * expected / (expected + abs(expected - pred_len))


def test_perfect_path() -> None:
    m = episode_metrics(LINE, REF, REF)
    assert m == {
        "ne": 0.0,
        "sr": 1.0,
        "osr": 1.0,
        "tl": 6.0,
        "spl": 1.0,
        "ndtw": 1.0,
        "sdtw": 1.0,
        "cls": 1.0,
    }


def test_stops_short_within_three_metres() -> None:
    m = episode_metrics(LINE, ["v0", "v1", "v2"], REF)
    # DTW of (0,2,4) against (0,2,4,6): the last reference node matches x=4 at cost 2.
    ndtw = math.exp(-2.0 / (3.0 * 4))
    coverage = (3 + math.exp(-2.0 / 3.0)) / 4
    assert m["ne"] == 2.0 and m["sr"] == 1.0 and m["osr"] == 1.0 and m["tl"] == 4.0
    assert m["spl"] == pytest.approx(1.0)  # 6 / max(4, 6)
    assert m["ndtw"] == pytest.approx(ndtw) and m["sdtw"] == pytest.approx(ndtw)
    assert m["cls"] == pytest.approx(_cls(coverage, 6.0, 4.0))


def test_overshoot() -> None:
    m = episode_metrics(LINE, ["v0", "v1", "v2", "v3", "v4"], REF)
    # DTW: the extra node x=8 pairs with the goal x=6 at cost 2.
    ndtw = math.exp(-2.0 / 12)
    assert m["ne"] == 2.0 and m["sr"] == 1.0 and m["tl"] == 8.0
    assert m["spl"] == pytest.approx(6.0 / 8.0)
    assert m["ndtw"] == pytest.approx(ndtw)
    assert m["cls"] == pytest.approx(_cls(1.0, 6.0, 8.0))


def test_oracle_success_without_success() -> None:
    m = episode_metrics(LINE, ["v0", "v1", "v2", "v3", "v4", "v5", "v6"], REF)
    assert m["ne"] == 6.0 and m["sr"] == 0.0 and m["osr"] == 1.0 and m["tl"] == 12.0
    assert m["spl"] == 0.0 and m["sdtw"] == 0.0
    # DTW: x=8,10,12 all pair with the goal x=6: 2 + 4 + 6.
    assert m["ndtw"] == pytest.approx(math.exp(-12.0 / 12))


def test_wrong_way() -> None:
    m = episode_metrics(LINE, ["v0", "v1", "v0"], REF)
    assert m["ne"] == 6.0 and m["sr"] == 0.0 and m["osr"] == 0.0 and m["tl"] == 4.0 and m["spl"] == 0.0
    coverage = (1 + 1 + math.exp(-2 / 3) + math.exp(-4 / 3)) / 4
    assert m["cls"] == pytest.approx(_cls(coverage, 6.0, 4.0))


def test_success_threshold_is_strict() -> None:
    graph = line_graph([0.0, 2.0, 4.0, 6.0, 9.0])
    m = episode_metrics(graph, ["v0", "v1", "v2", "v3", "v4"], ["v0", "v1", "v2", "v3"])
    assert m["ne"] == 3.0 and m["sr"] == 0.0 and m["osr"] == 1.0


def test_detour_on_triangle() -> None:
    tri = triangle_graph()
    m = episode_metrics(tri, ["A", "B", "C"], ["A", "C"])
    assert m["ne"] == 0.0 and m["tl"] == pytest.approx(7.0)
    assert m["spl"] == pytest.approx(5.0 / 7.0)
    # dtw: [1][1]=0, [2][1]=d(B,A)=4, [2][2]=d(B,C)+0=3, [3][2]=d(C,C)+min(3, 9, 4)=3.
    assert m["ndtw"] == pytest.approx(math.exp(-3.0 / 6.0))
    assert m["cls"] == pytest.approx(5.0 / 7.0)


def test_repeats_count_once() -> None:
    assert episode_metrics(LINE, ["v0", "v0", "v1", "v1", "v2", "v3", "v3"], REF) == episode_metrics(
        LINE, REF, REF
    )


def test_trajectory_errors() -> None:
    with pytest.raises(ValueError, match=r"instr_id 5_1: step 2 moves from 'v1' to 'v3'"):
        episode_metrics(LINE, ["v0", "v1", "v3"], REF, name="instr_id 5_1")
    with pytest.raises(ValueError, match="starts at 'v1'"):
        episode_metrics(LINE, ["v1", "v2"], REF)
    with pytest.raises(ValueError, match="'zz' is not in scan"):
        episode_metrics(LINE, ["v0", "zz"], REF)
    with pytest.raises(ValueError, match="no goal"):
        episode_metrics(LINE, ["v0"], ["v0"])


def test_evaluate_means_and_missing_or_unknown_predictions() -> None:
    episodes = [Episode(1, "line", 0.0, REF, ["a", "b"])]
    preds = {"1_0": REF, "1_1": ["v0", "v1", "v0"]}
    summary, per_instr = evaluate(episodes, {"line": LINE}, preds)
    assert set(per_instr) == {"1_0", "1_1"}
    assert summary["sr"] == 0.5 and summary["tl"] == 5.0 and summary["ne"] == 3.0
    assert list(summary) == list(METRIC_KEYS)
    with pytest.raises(KeyError, match="missing predictions for 1 of 2 instructions: 1_1"):
        evaluate(episodes, {"line": LINE}, {"1_0": REF})
    # An id the episodes do not have (another split's, a typo) is not silently left out of the scores.
    with pytest.raises(KeyError, match=r"2 prediction\(s\) for instr_id\(s\) not in split 'val': 99_0, 1_9"):
        evaluate(episodes, {"line": LINE}, {**preds, "99_0": ["v0"], "1_9": REF}, split="val")


def test_submission_format_round_trip(tmp_path: Path) -> None:
    records = [{"instr_id": "1_0", "trajectory": [["v0", 0.0, 0.0], ["v1", 1.57, 0.0]]}]
    write_predictions(tmp_path / "p.json", records)
    assert json.loads((tmp_path / "p.json").read_text()) == records
    assert load_predictions(tmp_path / "p.json") == {"1_0": ["v0", "v1"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"instr_id": "1_0"}, "JSON list"),
        ([{"instr_id": "1_0"}], "record 0 must have keys"),
        ([{"instr_id": "1_0", "trajectory": []}], "non-empty list"),
        ([{"instr_id": "1_0", "trajectory": ["v0"]}], r"step 0 must be \[viewpoint, heading, elevation\]"),
        ([{"instr_id": "1_0", "trajectory": [["v0", 0, 0]]}] * 2, "duplicate prediction for instr_id 1_0"),
    ],
)
def test_submission_format_errors(data, message: str) -> None:
    with pytest.raises(NavDataError, match=message):
        parse_predictions(data)


@pytest.fixture(scope="module")
def dataset_dir(grid_dataset: Path) -> Path:
    return grid_dataset


def _reference_predictions(dataset: NavDataset, split: str) -> list[dict]:
    return [
        {"instr_id": ep.instr_id(k), "trajectory": [[vp, 0.0, 0.0] for vp in ep.path]}
        for ep in dataset.episodes(split)
        for k in range(len(ep.instructions))
    ]


def test_evaluate_split_on_dataset(dataset_dir: Path, tmp_path: Path) -> None:
    dataset = NavDataset(dataset_dir)
    write_predictions(tmp_path / "p.json", _reference_predictions(dataset, "val_seen"))
    summary, per_instr = evaluate_split(dataset, "val_seen", tmp_path / "p.json")
    assert len(per_instr) == sum(len(ep.instructions) for ep in dataset.episodes("val_seen"))
    assert summary["sr"] == summary["spl"] == summary["ndtw"] == summary["cls"] == 1.0


def test_evaluate_nav_cli(dataset_dir: Path, tmp_path: Path, run_script) -> None:
    dataset = NavDataset(dataset_dir)
    records = _reference_predictions(dataset, "val_unseen")
    write_predictions(tmp_path / "p.json", records)
    common = ["--split", "val_unseen", "--data", dataset_dir, "--predictions", tmp_path / "p.json"]
    result = run_script(evaluate_nav.main, *common, "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert list(scores) == ["ne", "sr", "osr", "tl", "spl", "ndtw", "sdtw", "cls"]
    assert scores["sr"] == 1.0 and scores["ne"] == 0.0
    table = run_script(evaluate_nav.main, *common)
    assert table.returncode == 0 and "SPL" in table.stdout and "100.00" in table.stdout

    write_predictions(tmp_path / "p.json", records[1:])
    missing = run_script(evaluate_nav.main, *common, "--json")
    assert missing.returncode == 2
    assert (
        f"missing predictions for 1 of {len(records)} instructions: {records[0]['instr_id']}"
        in missing.stderr
    )

    stray = {"instr_id": "999999_0", "trajectory": records[0]["trajectory"]}
    write_predictions(tmp_path / "p.json", [*records, stray])
    unknown = run_script(evaluate_nav.main, *common, "--json")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "error: 1 prediction(s) for instr_id(s) not in split 'val_unseen': 999999_0" in unknown.stderr

    off_graph = {**records[0], "trajectory": [*records[0]["trajectory"], ["no-such-viewpoint", 0.0, 0.0]]}
    write_predictions(tmp_path / "p.json", [off_graph, *records[1:]])
    outside = run_script(evaluate_nav.main, *common, "--json")
    assert outside.returncode == 2
    assert (
        f"instr_id {records[0]['instr_id']}: viewpoint 'no-such-viewpoint' is not in scan" in outside.stderr
    )


def _smoke_args(fixture, work: Path) -> list[object]:
    dataset = fixture("grid_dataset")
    write_predictions(work / "p.json", _reference_predictions(NavDataset(dataset), "val_seen"))
    return ["--split", "val_seen", "--data", dataset, "--predictions", work / "p.json", "--json"]


@pytest.mark.script_run("evaluate_nav.py", _smoke_args)
def test_evaluate_nav_script_smoke(script_run) -> None:
    """The one command-line run of ``scripts/evaluate_nav.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr
    assert json.loads(script_run.stdout)["spl"] == 1.0
