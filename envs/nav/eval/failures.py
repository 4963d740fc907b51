"""Where navigation episodes go wrong: a coarse, geometric breakdown of failures for error analysis.

Every scored episode falls in exactly one category, decided from its predicted path ``P`` and the
reference path ``R`` (distances are shortest-path metres on the scan's graph, as in the metrics):

- ``success``: stopped within 3 m of the goal;
- ``missed_stop``: passed within 3 m of the goal but stopped elsewhere (an oracle stop would have
  succeeded: the route was understood, the stopping description was not);
- ``did_not_move``: stopped at the start;
- ``stopped_short``: every viewpoint of ``P`` lies on the route (within 1 m of a viewpoint of ``R``),
  and it stopped before the goal;
- ``strayed_first_step``: the first move already left the route (the initial orientation or exit
  was misread);
- ``strayed_later``: left the route after following it for at least one move (a turn, doorway or
  landmark later in the instruction was misread).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.eval.metrics import SUCCESS_DISTANCE, dedupe

CATEGORIES = (
    "success",
    "missed_stop",
    "did_not_move",
    "stopped_short",
    "strayed_first_step",
    "strayed_later",
)
ON_ROUTE = 1.0  # metres: a viewpoint this close to a reference viewpoint is on the route


def classify(
    graph: NavGraph, pred: Sequence[str], ref: Sequence[str], threshold: float = SUCCESS_DISTANCE
) -> str:
    """The category of one predicted viewpoint sequence against its reference path (see the module doc)."""
    dist = graph.distances
    nodes = [graph.index[vp] for vp in dedupe(pred)]
    route = [graph.index[vp] for vp in ref]
    goal = route[-1]
    if dist[nodes[-1], goal] < threshold:
        return "success"
    if min(dist[v, goal] for v in nodes) < threshold:
        return "missed_stop"
    if len(nodes) == 1:
        return "did_not_move"
    off_route = [k for k, v in enumerate(nodes) if min(dist[v, r] for r in route) > ON_ROUTE]
    if not off_route:
        return "stopped_short"
    return "strayed_first_step" if off_route[0] == 1 else "strayed_later"


def classify_all(
    episodes: Sequence[Episode],
    graphs: Mapping[str, NavGraph],
    predictions: Mapping[str, Sequence[str]],
    threshold: float = SUCCESS_DISTANCE,
) -> dict[str, str]:
    """Instruction id -> category for every instruction of ``episodes`` (all must have a prediction)."""
    categories = {}
    for ep in episodes:
        for k in range(len(ep.instructions)):
            iid = ep.instr_id(k)
            if iid not in predictions:
                raise KeyError(f"missing prediction for instruction {iid}")
            categories[iid] = classify(graphs[ep.scan], predictions[iid], ep.path, threshold)
    return categories


def breakdown(categories: Mapping[str, str]) -> dict[str, float]:
    """The fraction of episodes in each category (all categories present, summing to 1)."""
    total = max(len(categories), 1)
    values = list(categories.values())
    return {name: values.count(name) / total for name in CATEGORIES}


def format_breakdown(fractions: Mapping[str, float], title: str = "") -> str:
    """A two-column table of :func:`breakdown` in percent."""
    lines = [title] if title else []
    lines += [f"  {name:<20} {100 * fractions[name]:6.1f} %" for name in CATEGORIES]
    return "\n".join(lines)
