"""R2R navigation metrics, computed as the official R2R evaluation and the DUET code do.

All distances are shortest-path lengths on the scan's graph (edges weighted by Euclidean length).
For one instruction with predicted path ``P`` and reference path ``R`` (goal = last node of ``R``):

- ``ne``: distance from the last node of ``P`` to the goal; ``sr``: ``ne < 3.0`` (strict);
- ``osr``: some node of ``P`` is within ``3.0`` of the goal; ``tl``: length of ``P`` in metres;
- ``spl``: ``sr * d(start, goal) / max(tl, d(start, goal))``;
- ``ndtw``: ``exp(-DTW(P, R) / (3.0 * |R|))``; ``sdtw``: ``sr * ndtw``;
- ``cls``: coverage of ``R`` by ``P`` weighted by length score.

Consecutive repeats in a trajectory (turning in place) count once. Rates are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode

SUCCESS_DISTANCE = 3.0
METRIC_KEYS = ("ne", "sr", "osr", "tl", "spl", "ndtw", "sdtw", "cls")
RATE_KEYS = ("sr", "osr", "spl", "ndtw", "sdtw", "cls")


def path_length(dist: np.ndarray, nodes: Sequence[int]) -> float:
    """Sum of shortest-path distances between consecutive nodes."""
    return float(sum(dist[a, b] for a, b in pairwise(nodes)))


def dtw(dist: np.ndarray, pred: Sequence[int], ref: Sequence[int]) -> float:
    """Dynamic time warping cost between two node sequences (1-indexed table with infinite borders)."""
    table = np.full((len(pred) + 1, len(ref) + 1), np.inf)
    table[0, 0] = 0.0
    for i in range(1, len(pred) + 1):
        for j in range(1, len(ref) + 1):
            best = min(table[i - 1, j], table[i, j - 1], table[i - 1, j - 1])
            table[i, j] = dist[pred[i - 1], ref[j - 1]] + best
    return float(table[len(pred), len(ref)])


def ndtw(
    dist: np.ndarray, pred: Sequence[int], ref: Sequence[int], threshold: float = SUCCESS_DISTANCE
) -> float:
    """Normalized DTW: ``exp(-DTW / (threshold * |R|))``."""
    return math.exp(-dtw(dist, pred, ref) / (threshold * len(ref)))


def cls(
    dist: np.ndarray, pred: Sequence[int], ref: Sequence[int], threshold: float = SUCCESS_DISTANCE
) -> float:
    """Coverage weighted by length score (Jain et al., 2019)."""
    coverage = float(np.mean([math.exp(-min(dist[u, v] for v in pred) / threshold) for u in ref]))
    expected = coverage * path_length(dist, ref)
    pred_len = path_length(dist, pred)
    denominator = expected + abs(expected - pred_len)
    score = expected / denominator if denominator > 0 else 1.0
    return coverage * score


def dedupe(path: Sequence[str]) -> list[str]:
    """Drop consecutive repeats (turning in place does not move the agent)."""
    return [vp for k, vp in enumerate(path) if k == 0 or vp != path[k - 1]]


def episode_metrics(
    graph: NavGraph,
    pred: Sequence[str],
    ref: Sequence[str],
    threshold: float = SUCCESS_DISTANCE,
    name: str = "trajectory",
    adjacency: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one predicted viewpoint sequence against one reference path of ``graph``.

    ``name`` prefixes error messages; ``adjacency`` (``graph.adjacency``) may be passed to reuse it.
    """
    if not pred:
        raise ValueError(f"{name}: empty trajectory")
    if len(ref) < 2:
        raise ValueError(f"{name}: the reference path has no goal (a single viewpoint, as in R2R test)")
    unknown = [vp for vp in pred if vp not in graph.index]
    if unknown:
        raise ValueError(f"{name}: viewpoint {unknown[0]!r} is not in scan {graph.scan!r}")
    if pred[0] != ref[0]:
        raise ValueError(f"{name}: trajectory starts at {pred[0]!r}, but the episode starts at {ref[0]!r}")
    nodes = [graph.index[vp] for vp in dedupe(pred)]
    if adjacency is None:
        adjacency = graph.adjacency
    for step, (a, b) in enumerate(pairwise(nodes), 1):
        if not adjacency[a, b]:
            raise ValueError(
                f"{name}: step {step} moves from {graph.viewpoints[a]!r} to {graph.viewpoints[b]!r}, "
                "which are not adjacent in the navigation graph"
            )
    ref_nodes = [graph.index[vp] for vp in ref]
    dist = graph.distances
    goal = ref_nodes[-1]
    ne = float(dist[nodes[-1], goal])
    success = float(ne < threshold)
    tl = path_length(dist, nodes)
    shortest = float(dist[ref_nodes[0], goal])
    denominator = max(tl, shortest)
    n = ndtw(dist, nodes, ref_nodes, threshold)
    return {
        "ne": ne,
        "sr": success,
        "osr": float(min(dist[v, goal] for v in nodes) < threshold),
        "tl": tl,
        "spl": success * shortest / denominator if denominator > 0 else success,
        "ndtw": n,
        "sdtw": success * n,
        "cls": cls(dist, nodes, ref_nodes, threshold),
    }


def evaluate(
    episodes: Sequence[Episode],
    graphs: Mapping[str, NavGraph],
    predictions: Mapping[str, Sequence[str]],
    threshold: float = SUCCESS_DISTANCE,
    split: str | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over every instruction of ``episodes`` and the per-instruction scores.

    ``predictions`` maps instruction ids to viewpoint sequences, one for every instruction of
    ``episodes`` and no other: an id the episodes do not have (another split's, a typo) is an error
    rather than silently left out of the scores. ``split`` names the episodes in that message.
    """
    wanted = [(ep, ep.instr_id(k)) for ep in episodes for k in range(len(ep.instructions))]
    missing = [iid for _, iid in wanted if iid not in predictions]
    if missing:
        raise KeyError(
            f"missing predictions for {len(missing)} of {len(wanted)} instructions: {_shown(missing)}"
        )
    known = {iid for _, iid in wanted}
    unknown = [iid for iid in predictions if iid not in known]
    if unknown:
        where = f"split {split!r}" if split is not None else "the evaluated episodes"
        raise KeyError(f"{len(unknown)} prediction(s) for instr_id(s) not in {where}: {_shown(unknown)}")
    if not wanted:
        raise ValueError("no instructions to evaluate")
    adjacency = {scan: graphs[scan].adjacency for scan in {ep.scan for ep, _ in wanted}}
    per_instr = {
        iid: episode_metrics(
            graphs[ep.scan], predictions[iid], ep.path, threshold, f"instr_id {iid}", adjacency[ep.scan]
        )
        for ep, iid in wanted
    }
    summary = {key: float(np.mean([scores[key] for scores in per_instr.values()])) for key in METRIC_KEYS}
    return summary, per_instr


def evaluate_split(
    dataset: NavDataset,
    split: str,
    predictions: Mapping[str, Sequence[str]] | str | Path,
    threshold: float = SUCCESS_DISTANCE,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """:func:`evaluate` on one split of a dataset; ``predictions`` may be a submission file path."""
    if isinstance(predictions, (str, Path)):
        predictions = load_predictions(predictions)
    episodes = dataset.episodes(split)
    graphs = dataset.graphs(sorted({ep.scan for ep in episodes}))
    return evaluate(episodes, graphs, predictions, threshold, split=split)


def _shown(ids: Sequence[str], limit: int = 10) -> str:
    """The first ``limit`` ids, comma-separated, for an error message."""
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


def load_predictions(path: str | Path) -> dict[str, list[str]]:
    """Read an R2R submission file into ``{instr_id: [viewpoint, ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NavDataError(f"{path}: not valid JSON ({exc})") from None
    return parse_predictions(data, str(path))


def parse_predictions(data: Any, source: str = "predictions") -> dict[str, list[str]]:
    """Validate submission-format records and return ``{instr_id: [viewpoint, ...]}``."""
    if not isinstance(data, list):
        raise NavDataError(f"{source}: expected a JSON list of {{'instr_id', 'trajectory'}} records")
    out: dict[str, list[str]] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "instr_id" not in item or "trajectory" not in item:
            raise NavDataError(f"{source}: record {i} must have keys 'instr_id' and 'trajectory'")
        iid = str(item["instr_id"])
        if iid in out:
            raise NavDataError(f"{source}: duplicate prediction for instr_id {iid}")
        traj = item["trajectory"]
        if not isinstance(traj, list) or not traj:
            raise NavDataError(f"{source}: instr_id {iid}: 'trajectory' must be a non-empty list")
        for step, entry in enumerate(traj):
            if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not isinstance(entry[0], str):
                raise NavDataError(
                    f"{source}: instr_id {iid}: trajectory step {step} must be [viewpoint, heading, elevation]"
                )
        out[iid] = [entry[0] for entry in traj]
    return out


def write_predictions(path: str | Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write submission-format records (as returned by ``NavVecEnv.trajectories()``)."""
    parse_predictions(list(records), str(path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(list(records)), encoding="utf-8")


def format_table(summary: Mapping[str, float], title: str = "") -> str:
    """A one-row human table; rates are shown as percentages."""
    cells = [
        (key.upper(), f"{100 * summary[key]:.2f}" if key in RATE_KEYS else f"{summary[key]:.2f}")
        for key in METRIC_KEYS
    ]
    widths = [max(len(a), len(b)) for a, b in cells]
    lines = [title] if title else []
    lines.append("  ".join(a.rjust(w) for (a, _), w in zip(cells, widths, strict=True)))
    lines.append("  ".join(b.rjust(w) for (_, b), w in zip(cells, widths, strict=True)))
    return "\n".join(lines)
