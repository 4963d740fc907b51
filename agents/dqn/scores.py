"""Human-normalized Atari scores and their aggregates, computed exactly as the ``rliable`` package does.

Random and human reference scores are the Atari-57 table used by DQN Zoo and Dopamine
(undiscounted returns, 108k-frame cap, no-op starts): HNS = (score - random) / (human - random).

Aggregates take a score matrix ``[num_runs, num_tasks]`` (runs = seeds, tasks = games) and follow
``rliable.metrics`` (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice"):

- IQM: the 25% trimmed mean of all ``runs x tasks`` scores (``scipy.stats.trim_mean`` with
  ``proportiontocut=0.25, axis=None``: ``int(0.25 * n)`` whole scores cut at each end, never a fraction);
- median: the median over tasks of each task's mean over runs;
- mean: the mean over tasks of each task's mean over runs;
- optimality gap: ``gamma`` minus the mean of all scores clipped from above at ``gamma``.

Intervals follow ``rliable.library.get_interval_estimates`` with its ``StratifiedBootstrap`` and the
percentile method: every resample draws, for each task separately, ``num_runs`` runs with replacement
(the tasks are the strata), and the interval is the central ``confidence`` mass of the resampled
statistic (``np.percentile``, linear interpolation). The draws match rliable's draw for draw: rliable
draws ``np.random.choice(num_runs, (num_runs, num_tasks))`` per resample from NumPy's legacy global
generator, so a legacy ``RandomState(seed)`` here gives the intervals rliable gives after
``np.random.seed(seed)``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import NamedTuple

import numpy as np

from lodestar.envs.atari import resolve_game

DEFAULT_REPS = 50_000  # rliable's default number of bootstrap replications
METRICS = ("iqm", "median", "mean", "optimality_gap")
# Resampled scores held at once while bootstrapping (float64): bounds memory for large matrices.
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class ReferenceScores:
    random: float
    human: float


def reference_scores() -> dict[str, ReferenceScores]:
    """ROM id -> random/human scores."""
    text = resources.files("lodestar.agents.dqn").joinpath("atari57_random_human.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {row["game"]: ReferenceScores(float(row["random"]), float(row["human"])) for row in rows}


def human_normalized(game: str, score: float) -> float:
    """HNS of a raw score; a game outside the Atari-57 table is a ``KeyError`` naming it."""
    rom = resolve_game(game)
    table = reference_scores()
    if rom not in table:
        raise KeyError(f"game {game!r} ({rom}) has no random/human reference score in the Atari-57 table")
    ref = table[rom]
    return (score - ref.random) / (ref.human - ref.random)


# -- metrics over a batch of score matrices [..., runs, tasks] -> [...] -----------------------------------
# One vectorized form serves both the point estimate (no leading axes) and the bootstrap (one leading
# axis of resamples), so the two cannot drift apart.


def _batched_iqm(scores: np.ndarray) -> np.ndarray:
    flat = scores.reshape(*scores.shape[:-2], -1)
    n = flat.shape[-1]
    cut = int(0.25 * n)  # scipy.stats.trim_mean: whole scores only, rounded down
    return np.sort(flat, axis=-1)[..., cut : n - cut].mean(axis=-1)


def _batched_median(scores: np.ndarray) -> np.ndarray:
    return np.median(scores.mean(axis=-2), axis=-1)


def _batched_mean(scores: np.ndarray) -> np.ndarray:
    return scores.mean(axis=-2).mean(axis=-1)


def _batched_optimality_gap(scores: np.ndarray, gamma: float) -> np.ndarray:
    return gamma - np.minimum(scores, gamma).mean(axis=(-2, -1))


def _batched_metric(name: str, gamma: float) -> Callable[[np.ndarray], np.ndarray]:
    if name == "iqm":
        return _batched_iqm
    if name == "median":
        return _batched_median
    if name == "mean":
        return _batched_mean
    if name == "optimality_gap":
        return partial(_batched_optimality_gap, gamma=gamma)
    raise ValueError(f"unknown aggregate metric {name!r}; expected one of {', '.join(METRICS)}")


def _score_matrix(scores: np.ndarray) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, tasks] matrix, got shape {matrix.shape}")
    bad = int((~np.isfinite(matrix)).sum())
    if bad:
        raise ValueError(f"scores must be finite: {bad} of the {matrix.size} entries are NaN or infinite")
    return matrix


def aggregate_iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all ``[runs, tasks]`` scores (rliable's ``aggregate_iqm``)."""
    return float(_batched_iqm(_score_matrix(scores)))


def aggregate_median(scores: np.ndarray) -> float:
    """Median over tasks of the per-task mean over runs (rliable's ``aggregate_median``)."""
    return float(_batched_median(_score_matrix(scores)))


def aggregate_mean(scores: np.ndarray) -> float:
    """Mean over tasks of the per-task mean over runs (rliable's ``aggregate_mean``)."""
    return float(_batched_mean(_score_matrix(scores)))


def aggregate_optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """``gamma`` minus the mean of all scores clipped at ``gamma`` (rliable's ``aggregate_optimality_gap``)."""
    return float(_batched_optimality_gap(_score_matrix(scores), gamma))


class Estimate(NamedTuple):
    """A point estimate and its bootstrap confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float


def aggregate_with_ci(
    scores: np.ndarray,
    metrics: Sequence[str] = METRICS,
    *,
    gamma: float = 1.0,
    reps: int = DEFAULT_REPS,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Point estimates of ``metrics`` and their stratified-bootstrap percentile intervals.

    ``scores`` is ``[num_runs, num_tasks]`` (e.g. human-normalized scores of seeds x games). All metrics
    are computed on the same ``reps`` resamples, as rliable does when its ``func`` returns several
    aggregates at once; ``gamma`` is the optimality-gap threshold. The result equals
    ``rliable.library.get_interval_estimates({...: scores}, func, reps=reps,
    confidence_interval_size=confidence)`` run after ``np.random.seed(seed)`` (module docstring).
    """
    matrix = _score_matrix(scores)
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not metrics:
        raise ValueError("no aggregate metric asked for")
    fns = [_batched_metric(name, gamma) for name in metrics]
    runs, tasks = matrix.shape
    # Legacy RandomState on purpose: rliable's resampling draws from np.random's legacy generator, and
    # randint(0, runs, (k, runs, tasks)) yields the same stream as k draws of choice(runs, (runs, tasks)).
    rng = np.random.RandomState(seed)
    columns = np.arange(tasks)
    samples = np.empty((reps, len(fns)))
    chunk = max(1, _CHUNK_ELEMENTS // matrix.size)
    for start in range(0, reps, chunk):
        count = min(chunk, reps - start)
        resampled = matrix[rng.randint(0, runs, size=(count, runs, tasks)), columns]
        for j, fn in enumerate(fns):
            samples[start : start + count, j] = fn(resampled)
    # The same percentile arithmetic as arch's conf_int (which rliable calls), to the last bit.
    alpha = (1.0 - confidence) / 2
    percentiles = [100 * alpha, 100 * (1.0 - alpha)]
    result = {}
    for j, (name, fn) in enumerate(zip(metrics, fns, strict=True)):
        low, high = np.percentile(samples[:, j], percentiles)
        result[name] = Estimate(float(fn(matrix)), float(low), float(high))
    return result


def score_matrix(scores_by_task: Mapping[str, Sequence[float]]) -> tuple[np.ndarray, list[str]]:
    """The ``[num_runs, num_tasks]`` matrix of per-task run scores, tasks in sorted order.

    Every task needs the same number of runs (a stratified bootstrap resamples a rectangle); a
    ``ValueError`` names the run counts otherwise.
    """
    if not scores_by_task:
        raise ValueError("no task scores to aggregate")
    tasks = sorted(scores_by_task)
    counts = {task: len(scores_by_task[task]) for task in tasks}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        listed = ", ".join(f"{task}: {count}" for task, count in counts.items())
        raise ValueError(f"every task needs the same (non-zero) number of runs, got {listed}")
    matrix = np.array([[float(v) for v in scores_by_task[task]] for task in tasks]).T
    return matrix, tasks
