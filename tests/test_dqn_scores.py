"""Human-normalized scores and aggregate statistics, checked by hand and against the rliable package."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics as rly_metrics

from lodestar.agents.dqn.scores import (
    METRICS,
    aggregate_iqm,
    aggregate_mean,
    aggregate_median,
    aggregate_optimality_gap,
    aggregate_with_ci,
    human_normalized,
    reference_scores,
    score_matrix,
)


def test_reference_table_and_hns():
    table = reference_scores()
    assert len(table) == 57 and table["pong"].random == pytest.approx(-20.7)
    assert human_normalized("Breakout", table["breakout"].random) == pytest.approx(0.0)
    assert human_normalized("ALE/Breakout-v5", table["breakout"].human) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown Atari game"):
        human_normalized("Brekaout", 1.0)


def test_aggregates_by_hand():
    # IQM trims whole scores: int(0.25 * 5) = 1 at each end, so the mean of [1, 2, 10] (not a
    # fractional trim, which would give 4.1). The matrix's orientation does not matter.
    skewed = np.array([[0.0, 1.0, 2.0, 10.0, 20.0]])
    assert aggregate_iqm(skewed) == pytest.approx(13.0 / 3.0, abs=1e-12)
    assert aggregate_iqm(skewed.T) == pytest.approx(13.0 / 3.0, abs=1e-12)
    assert aggregate_iqm(np.array([[0.0, 1, 2, 3, 4, 5, 6, 100]])) == pytest.approx(3.5)  # [2, 3, 4, 5]
    assert aggregate_iqm(np.array([[7.0, -1.0, 3.0]])) == pytest.approx(3.0)  # int(0.75) = 0: plain mean
    # 2 runs x 3 tasks: per-task means 0.5, 3.0, 10.0
    scores = np.array([[0.0, 2.0, 0.0], [1.0, 4.0, 20.0]])
    assert aggregate_mean(scores) == pytest.approx(13.5 / 3.0)
    assert aggregate_median(scores) == pytest.approx(3.0)
    # clipped at 1: [[0, 1, 0], [1, 1, 1]] -> mean 4/6
    assert aggregate_optimality_gap(scores) == pytest.approx(1.0 - 4.0 / 6.0)
    # clipped at 2: [[0, 2, 0], [1, 2, 2]] -> mean 7/6
    assert aggregate_optimality_gap(scores, gamma=2.0) == pytest.approx(2.0 - 7.0 / 6.0)


@pytest.fixture
def global_numpy_seed() -> Iterator[None]:
    """rliable resamples from np.random's global generator: leave it as the test found it."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _score_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(2021)
    return [
        ("3x3 normal", rng.normal(0.5, 0.4, size=(3, 3))),
        ("5x10 skewed with ties", rng.lognormal(-1.0, 1.5, size=(5, 10)).round(1)),
        ("10x26 integer with negatives", rng.integers(-3, 8, size=(10, 26)).astype(np.float64)),
        ("4x7 heavy tail", np.where(rng.random((4, 7)) < 0.2, 50.0, rng.random((4, 7)))),
        ("1x5 one run", rng.normal(size=(1, 5))),
    ]


@pytest.mark.parametrize(("name", "scores"), _score_cases(), ids=[name for name, _ in _score_cases()])
def test_point_estimates_and_intervals_equal_rliable(name, scores, global_numpy_seed):
    gamma, reps, seed = 0.8, 500, 11

    def rliable_aggregates(x: np.ndarray) -> np.ndarray:
        return np.array(
            [
                rly_metrics.aggregate_iqm(x),
                rly_metrics.aggregate_median(x),
                rly_metrics.aggregate_mean(x),
                rly_metrics.aggregate_optimality_gap(x, gamma),
            ]
        )

    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates({name: scores}, rliable_aggregates, reps=reps)
    ours = aggregate_with_ci(scores, METRICS, gamma=gamma, reps=reps, seed=seed)
    assert list(ours) == ["iqm", "median", "mean", "optimality_gap"]
    np.testing.assert_allclose([e.value for e in ours.values()], points[name], rtol=0, atol=1e-9)
    # Same seed, same draws: the intervals are rliable's up to float rounding of the sums.
    np.testing.assert_allclose([e.low for e in ours.values()], intervals[name][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose([e.high for e in ours.values()], intervals[name][1], rtol=0, atol=1e-12)
    if scores.shape[0] > 1:
        assert any(e.high > e.low for e in ours.values())  # a real interval, not a point
    # The public point-estimate functions agree with the bootstrap's point estimates.
    assert aggregate_iqm(scores) == ours["iqm"].value
    assert aggregate_optimality_gap(scores, gamma) == ours["optimality_gap"].value


def test_bootstrap_resamples_runs_within_each_task():
    # Each task's runs agree, tasks differ: a stratified bootstrap can only redraw the same matrix, so
    # every interval is a point; drawing runs across tasks (or tasks themselves) would widen them.
    same = np.tile(np.array([[0.5, 1.5, 2.0, -1.0]]), (3, 1))
    for name, (value, low, high) in aggregate_with_ci(same, reps=200).items():
        assert value == low == high, name
    assert aggregate_with_ci(same, ["mean"], reps=10)["mean"].value == pytest.approx(0.75)
    varied = np.random.default_rng(0).normal(1.0, 0.3, size=(5, 4))
    for value, low, high in aggregate_with_ci(varied, reps=500).values():
        assert low < high and low <= value <= high
    narrow = aggregate_with_ci(varied, ["iqm"], reps=2_000, confidence=0.5)["iqm"]
    wide = aggregate_with_ci(varied, ["iqm"], reps=2_000, confidence=0.99)["iqm"]
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\[runs, tasks\]"):
        aggregate_with_ci(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\[runs, tasks\]"):
        aggregate_iqm(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="1 of the 4 entries are NaN or infinite"):
        aggregate_mean(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="unknown aggregate metric 'iqr'"):
        aggregate_with_ci(np.ones((2, 2)), ["iqr"])
    with pytest.raises(ValueError, match="reps must be >= 1"):
        aggregate_with_ci(np.ones((2, 2)), reps=0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        aggregate_with_ci(np.ones((2, 2)), confidence=95)


def test_score_matrix_is_runs_by_sorted_tasks():
    matrix, tasks = score_matrix({"pong": [1.0, 2.0, 3.0], "boxing": [0.5, 0.25, 0.0]})
    assert tasks == ["boxing", "pong"]
    np.testing.assert_array_equal(matrix, [[0.5, 1.0], [0.25, 2.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match="same .* number of runs, got boxing: 1, pong: 2"):
        score_matrix({"pong": [1.0, 2.0], "boxing": [0.5]})
    with pytest.raises(ValueError, match="no task scores"):
        score_matrix({})
