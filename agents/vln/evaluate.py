"""Greedy evaluation of a follower: every instruction of a split once, R2R metrics, submission file, maps.

Episodes run batched in a sequential :class:`~lodestar.envs.nav.sim.env.NavVecEnv` through the shared
:class:`~lodestar.agents.rollout.RolloutCollector`; the env records the trajectories in the R2R submission
format, and the metrics are computed from them by :mod:`lodestar.envs.nav.eval.metrics` - the same code that
``scripts/evaluate_nav.py`` runs on the written file, so both report identical numbers.

Splits whose reference paths hide the goal (real R2R ``test``: a single viewpoint) are run and
written, but not scored.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lodestar.agents.rollout import RolloutCollector, Transition
from lodestar.agents.vln.follower import Follower, FollowerPolicy
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.eval.failures import classify_all
from lodestar.envs.nav.eval.metrics import evaluate as score_predictions
from lodestar.envs.nav.eval.metrics import write_predictions
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.runtime.progress import progress

# Builds the simulator a trainer or evaluator steps, called with NavVecEnv's constructor arguments:
# NavVecEnv itself, or another simulator with its interface (the nav-throughput benchmark's reference).
EnvFactory = Callable[..., NavVecEnv]


@dataclass
class Evaluation:
    """What one greedy pass over a split produced."""

    split: str
    records: list[dict[str, Any]]  # R2R submission records, one per instruction
    summary: dict[str, float] | None  # mean NE/SR/OSR/TL/SPL/nDTW/SDTW/CLS, None when goals are hidden
    per_instruction: dict[str, dict[str, float]]
    episodes: list[Episode]
    categories: dict[str, str]  # instruction id -> envs.nav.failures category; empty when not scored

    def trajectory(self, instr_id: str) -> list[Any]:
        for record in self.records:
            if record["instr_id"] == instr_id:
                return record["trajectory"]
        raise KeyError(f"no trajectory for instruction {instr_id!r}")


def make_eval_env(
    dataset: NavDataset,
    split: str,
    episodes: Sequence[Episode] | None,
    num_envs: int,
    features: str,
    angle_feature_size: int,
    max_instruction_len: int,
    device: torch.device | str,
    max_steps: int = 15,
    feature_dtype: torch.dtype = torch.float32,
    env_factory: EnvFactory = NavVecEnv,
) -> NavVecEnv:
    """A sequential env over ``split`` (or over ``episodes`` of it, e.g. a subset).

    It has at most one row per instruction: more rows would only idle. It observes indices: the
    follower gathers the views it reads from ``env.feature_table`` (see :func:`run_greedy`).
    ``env_factory`` builds it (``NavVecEnv`` unless another simulator is benchmarked).
    """
    listed = dataset.episodes(split) if episodes is None else list(episodes)
    instructions = sum(len(ep.instructions) for ep in listed)
    source: str | Sequence[Episode] = split if episodes is None else listed
    env = env_factory(
        dataset,
        source,
        max(1, min(num_envs, instructions)),
        features=features,
        device=device,
        max_steps=max_steps,
        sequential=True,
        angle_feature_size=angle_feature_size,
        max_instruction_len=max_instruction_len,
        feature_dtype=feature_dtype,
        observation="indices",
    )
    env.split_name = split
    return env


def has_goals(episodes: Sequence[Episode]) -> bool:
    """Whether every reference path has a goal (R2R test hides it: one viewpoint)."""
    return all(len(ep.path) >= 2 for ep in episodes)


@torch.no_grad()
def run_greedy(model: Follower, env: NavVecEnv, show_progress: bool = False) -> list[dict[str, Any]]:
    """Run every instruction of ``env`` once with argmax actions; submission records in split order.

    ``show_progress``: a progress bar over the split's instructions (standalone evaluations).
    """
    policy = FollowerPolicy(model, env.num_envs, mode="greedy", features=env.feature_table)
    return run_policy(model, env, policy, f"evaluate {env.split_name}" if show_progress else None)


@torch.no_grad()
def run_policy(
    model: Follower,
    env: NavVecEnv,
    policy: FollowerPolicy,
    progress_desc: str | None = None,
    on_step: Callable[[Transition], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every instruction of the sequential ``env`` once with ``policy`` (``model`` in eval mode).

    Returns the submission records in split order. ``progress_desc`` labels a progress bar over the
    instructions (none when ``None``); ``on_step`` sees every transition (e.g. to sum the log-probabilities
    a policy returns in its extras).
    """
    if not env.sequential:
        raise ValueError("evaluation needs a sequential env (NavVecEnv(sequential=True))")
    was_training = model.training
    model.eval()
    collector = RolloutCollector(env, policy, on_episode_end=policy.on_episode_end)
    collector.reset(seed=0)
    bar = progress(total=env.num_episodes, desc=progress_desc, unit="ep") if progress_desc else None
    try:
        while not env.all_done:
            transition = collector.step()
            if on_step is not None:
                on_step(transition)
            if bar is not None:  # counting reads the device: only when a bar is shown
                bar.update(int(transition.done.sum()))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    records = env.trajectories(clear=True)
    order = {iid: k for k, iid in enumerate(env.instruction_ids)}
    return sorted(records, key=lambda r: order[r["instr_id"]])


def evaluate_follower(model: Follower, env: NavVecEnv, show_progress: bool = False) -> Evaluation:
    """Greedy pass over ``env``'s split plus the R2R metrics of the result (``show_progress``: a bar)."""
    records = run_greedy(model, env, show_progress)
    episodes = list(env.episodes)
    summary: dict[str, float] | None = None
    per_instruction: dict[str, dict[str, float]] = {}
    categories: dict[str, str] = {}
    if has_goals(episodes):
        predictions = {r["instr_id"]: [step[0] for step in r["trajectory"]] for r in records}
        summary, per_instruction = score_predictions(episodes, env.graphs, predictions)
        categories = classify_all(episodes, env.graphs, predictions)
    return Evaluation(env.split_name, records, summary, per_instruction, episodes, categories)


def write_submission(evaluation: Evaluation, path: str | Path) -> Path:
    """Write the R2R submission JSON (``[{"instr_id", "trajectory"}]``)."""
    write_predictions(path, evaluation.records)
    return Path(path)


def log_sample_episodes(
    logger: Any,
    dataset: NavDataset,
    evaluation: Evaluation,
    step: int,
    count: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    failures_only: bool = False,
    prefix: str = "eval",
) -> list[str]:
    """Top-down maps, first-person GIFs and instructions of ``count`` sampled episodes to TensorBoard.

    Tags are ``<prefix>/<split>/episodes/<instr_id>/`` (see :mod:`lodestar.runtime.logger`: ``eval``
    during training, ``final`` for a standalone evaluation); ``failures_only`` samples among the failed
    episodes and tags them ``<prefix>/<split>/failures/<category>/<instr_id>/`` (see
    :mod:`lodestar.envs.nav.eval.failures`). Needs the generator's
    ``houses/<scan>.json`` (procedural worlds); returns the logged ids. Raises ``FileNotFoundError``
    for datasets without house plans (real R2R).
    """
    from lodestar.envs.nav.perception.viz import log_episode
    from lodestar.envs.nav.world.build import load_house

    by_path = {str(ep.path_id): ep for ep in evaluation.episodes}
    ids = [r["instr_id"] for r in evaluation.records]
    if failures_only:
        ids = [iid for iid in ids if evaluation.categories.get(iid, "success") != "success"]
    chosen = random.Random(seed).sample(ids, min(count, len(ids)))
    for iid in chosen:
        path_id, _, k = iid.rpartition("_")
        episode = by_path[path_id]
        house, _ = load_house(dataset.root, episode.scan)
        # The same seed picks the same episodes at every validation, so each tag shows progress.
        log_episode(
            logger,
            f"{prefix}/{evaluation.split}/failures/{evaluation.categories[iid]}/{iid}"
            if failures_only
            else f"{prefix}/{evaluation.split}/episodes/{iid}",
            step,
            house,
            dataset.graph(episode.scan),
            episode,
            evaluation.trajectory(iid),
            int(k),
            device,
        )
    return chosen
