"""The failure breakdown on a hand-built graph: one path per category."""

from __future__ import annotations

import numpy as np
import pytest

from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.eval.failures import CATEGORIES, breakdown, classify, classify_all, format_breakdown

# A corridor v0..v6 (2 m apart along x); a dead end b1 3 m off v0; a side room c1 -> c2 off v2.
NAMES = ["v0", "v1", "v2", "v3", "v4", "v5", "v6", "b1", "c1", "c2"]
XY = [(0, 0), (2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0), (0, 3), (4, 3), (4, 6)]
EDGES = [(i, i + 1) for i in range(6)] + [(0, 7), (2, 8), (8, 9)]
GRAPH = NavGraph("t", NAMES, np.array([[x, y, 1.5] for x, y in XY], dtype=float), EDGES)
ROUTE = ["v0", "v1", "v2", "v3", "v4"]  # goal v4 at x = 8


@pytest.mark.parametrize(
    ("pred", "category"),
    [
        (ROUTE, "success"),
        (["v0", "v1", "v2", "v3", "v4", "v5"], "success"),  # 2 m past the goal: within 3 m
        (["v0", "v1", "v2", "v3", "v4", "v5", "v6"], "missed_stop"),  # passed it, stopped 4 m away
        (["v0", "v0", "v0"], "did_not_move"),  # turning in place only
        (["v0", "v1", "v1", "v2"], "stopped_short"),  # on the route, 4 m before the goal
        (["v0", "b1"], "strayed_first_step"),
        (["v0", "v1", "v2", "c1", "c2"], "strayed_later"),
        (["v0", "b1", "v0", "v1", "v2"], "strayed_first_step"),  # came back, but the first move was off
    ],
)
def test_each_path_falls_in_its_category(pred: list[str], category: str) -> None:
    assert classify(GRAPH, pred, ROUTE) == category


def test_breakdown_counts_every_instruction_once() -> None:
    episodes = [Episode(1, "t", 0.0, ROUTE, ["a", "b", "c"]), Episode(2, "t", 0.0, ROUTE[:3], ["d"])]
    predictions = {"1_0": ROUTE, "1_1": ["v0", "b1"], "1_2": ["v0"], "2_0": ["v0", "v1", "v2", "c1", "c2"]}
    categories = classify_all(episodes, {"t": GRAPH}, predictions)
    # episode 2's goal is v2: c1 is 3 m from it, not within 3 m, but the path passed v2 itself
    assert categories == {
        "1_0": "success",
        "1_1": "strayed_first_step",
        "1_2": "did_not_move",
        "2_0": "missed_stop",
    }
    fractions = breakdown(categories)
    assert list(fractions) == list(CATEGORIES) and sum(fractions.values()) == pytest.approx(1.0)
    assert fractions["success"] == 0.25 and fractions["stopped_short"] == 0.0
    assert "missed_stop" in format_breakdown(fractions, "val") and "25.0 %" in format_breakdown(fractions)
    with pytest.raises(KeyError, match="1_2"):
        classify_all(episodes, {"t": GRAPH}, {k: v for k, v in predictions.items() if k != "1_2"})
