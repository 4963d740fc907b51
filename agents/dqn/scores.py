"""Human-normalized Atari scores and their aggregates (mean, median, IQM with bootstrap CIs).

Random and human reference scores are the Atari-57 table used by DQN Zoo and Dopamine
(undiscounted returns, 108k-frame cap, no-op starts): HNS = (score - random) / (human - random).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from lodestar.envs.atari import resolve_game


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


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle 50% of all values (rliable's IQM: trimmed 25% on each side)."""
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = len(flat)
    if n == 0:
        raise ValueError("IQM of an empty set of scores")
    # fractional trimming so that small sample sizes are handled like scipy.stats.trim_mean
    lower, upper = 0.25 * n, 0.75 * n
    weights = np.clip(np.minimum(np.arange(1, n + 1), upper) - np.maximum(np.arange(n), lower), 0, 1)
    return float((flat * weights).sum() / weights.sum())


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda m: float(np.mean(m)),
    "median": lambda m: float(np.median(m.mean(axis=0))),
    "iqm": interquartile_mean,
}


def aggregate_with_ci(
    scores: np.ndarray, reps: int = 2_000, confidence: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Point estimate and percentile bootstrap CI of mean / median / IQM.

    ``scores`` is ``[num_runs, num_games]`` (human-normalized). The bootstrap resamples runs
    independently within each game (stratified), as rliable does. Median is over per-game means.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, games] matrix, got shape {scores.shape}")
    rng = np.random.default_rng(seed)
    runs, games = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, games))
    resampled = np.take_along_axis(scores[None].repeat(reps, axis=0), idx, axis=1)
    tail = (1.0 - confidence) / 2 * 100
    result = {}
    for name, fn in AGGREGATES.items():
        samples = np.array([fn(sample) for sample in resampled])
        low, high = np.percentile(samples, [tail, 100 - tail])
        result[name] = (fn(scores), float(low), float(high))
    return result
