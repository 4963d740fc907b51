"""Human-normalized scores and aggregate statistics."""

from __future__ import annotations

import numpy as np
import pytest

from lodestar.agents.dqn.scores import (
    aggregate_with_ci,
    human_normalized,
    interquartile_mean,
    reference_scores,
)


def test_reference_table_and_hns():
    table = reference_scores()
    assert len(table) == 57 and table["pong"].random == pytest.approx(-20.7)
    assert human_normalized("Breakout", table["breakout"].random) == pytest.approx(0.0)
    assert human_normalized("ALE/Breakout-v5", table["breakout"].human) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown Atari game"):
        human_normalized("Brekaout", 1.0)


def test_iqm_matches_trimmed_mean():
    values = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])
    assert interquartile_mean(values) == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))
    # fractional trimming: 5 values -> a quarter of an item trimmed at each edge of the middle half
    assert interquartile_mean(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(3.0)


def test_bootstrap_ci_contains_point_and_is_degenerate_for_identical_runs():
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 0.3, size=(5, 4))
    result = aggregate_with_ci(scores, reps=500)
    for value, low, high in result.values():
        assert low <= value <= high
    same = np.tile(np.array([[0.5, 1.5, 2.0]]), (3, 1))
    value, low, high = aggregate_with_ci(same, reps=100)["mean"]
    assert value == low == high == pytest.approx(4.0 / 3.0)
    with pytest.raises(ValueError, match=r"\[runs, games\]"):
        aggregate_with_ci(np.array([1.0, 2.0]))
