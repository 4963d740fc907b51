"""``nav-throughput``: fine-tuning and evaluation episodes/s of the real trainer, on ``NavVecEnv`` and on
the per-episode reference simulator, in the same run.

The same :class:`~lodestar.agents.vln.finetune.FinetuneTrainer` (``configs/vln_finetune.yaml``: its
envs, rollout length, follower, DAgger and A2C settings) is built twice, once on ``NavVecEnv`` and once
with ``env_factory=``:class:`~benchmarks.nav_reference_env.ReferenceVecEnv`, the per-episode Python
simulator in the style of the R2R code bases (:mod:`benchmarks.nav_reference`) behind the same
interface, its per-episode observations batched into tensors the way an R2R agent does it. Both start
from the same seed and parameters and see the same episodes: the benchmark checks that their losses
agree over the warm-up iterations, so both simulators carry exactly the same training work.

- **fine-tuning episodes/s**: episodes finished per second through ``train_step`` (collect the rollout,
  replay it with gradients, update), timed over ``iterations`` iterations after ``warmup``, the two
  trainers alternating in chunks so that both see the same load of a shared machine;
- **evaluation episodes/s**: greedy :func:`~lodestar.agents.vln.evaluate.evaluate_follower` over
  ``split`` (one episode per instruction, the first ``eval_episodes`` R2R paths), one follower on both
  simulators' evaluation envs (the trainers' own, built by ``make_eval_env``), alternating passes; the
  benchmark checks that both simulators walk the same trajectories.

The ratio is what the batched simulator buys a user end to end: the follower's forward and backward
passes are the same on both sides, so it is smaller than ``nav-sim``'s simulator-only ratio. No target:
the simulator's own target is ``nav-sim``'s; this benchmark reports how much of that survives in the
trainer and the evaluator.

Options: ``data=<dir>`` (default ``data/nav/benchmark`` when it has features, else a synthetic world
from :mod:`benchmarks.nav_synthetic`), ``features=<name>`` (``data.features``; default ``auto``),
``split=val_unseen`` (evaluation), ``iterations=30`` (timed, per simulator), ``warmup=2``, ``chunk=5``
(iterations per turn), ``eval_episodes=50`` (R2R paths; 0 = the whole split), ``repeats=2``
(evaluation passes per simulator), ``threads=1`` (torch intra-op threads), and any fine-tuning config
key with a dot (``learn.learner_envs=64``, ``model.hidden_dim=256``; a top-level key as
``config.<key>``, e.g. ``config.device=cuda``). ``--quick`` (a smoke test): one timed iteration and
four paths, on a small synthetic world when the default dataset has no features.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.nav_reference_env import ReferenceVecEnv
from benchmarks.nav_synthetic import write_synthetic_dataset
from lodestar.agents.vln.evaluate import Evaluation, evaluate_follower
from lodestar.agents.vln.finetune import FinetuneTrainer
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.config import load_config
from lodestar.runtime.seeding import rng_state, set_rng_state

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "vln_finetune.yaml"
DEFAULT_DATA = Path("data/nav/benchmark")
REFERENCE = "same trainer on the per-episode Python simulator (R2R style)"
OPTIONS = (
    "data",
    "features",
    "split",
    "iterations",
    "warmup",
    "chunk",
    "eval_episodes",
    "repeats",
    "threads",
)
# (full, quick): the synthetic world used when no featured dataset is there.
SYNTHETIC = ({"num_scans": 30, "unseen_scans": 6, "viewpoints_per_scan": 50, "feature_dim": 512},
             {"num_scans": 8, "unseen_scans": 2, "viewpoints_per_scan": 30, "feature_dim": 64})  # fmt: skip
DEFAULTS = (
    {"iterations": 30, "warmup": 2, "chunk": 5, "eval_episodes": 50, "repeats": 2},
    {"iterations": 1, "warmup": 1, "chunk": 1, "eval_episodes": 4, "repeats": 1},
)
LOSS_RTOL = 1e-3  # float32 angle features differ in the last bits between the simulators


@dataclass
class Setting:
    """What one run measures (see the module docstring)."""

    split: str
    iterations: int
    warmup: int
    chunk: int
    eval_episodes: int
    repeats: int
    threads: int
    overrides: list[str]


def parse_options(quick: bool, options: dict[str, str]) -> Setting:
    """Benchmark options plus fine-tuning config overrides (keys with a dot; ``config.<key>`` for others)."""
    unknown = sorted(key for key in options if key not in OPTIONS and "." not in key)
    if unknown:
        raise ValueError(
            f"nav-throughput: unknown option(s) {unknown}; choose from {list(OPTIONS)} or a config key "
            "with a dot (learn.learner_envs=64, config.device=cuda)"
        )
    defaults = DEFAULTS[quick]
    counts = {key: int(options.get(key, defaults[key])) for key in defaults}
    if counts["iterations"] < 1 or counts["warmup"] < 1 or counts["chunk"] < 1 or counts["repeats"] < 1:
        raise ValueError(f"nav-throughput: iterations, warmup, chunk and repeats must be >= 1, got {counts}")
    if counts["eval_episodes"] < 0:
        raise ValueError(f"nav-throughput: eval_episodes must be >= 0, got {counts['eval_episodes']}")
    overrides = [f"{key.removeprefix('config.')}={value}" for key, value in options.items() if "." in key]
    threads = int(options.get("threads", 1))
    return Setting(options.get("split", "val_unseen"), **counts, threads=threads, overrides=overrides)


def find_dataset(options: dict[str, str], quick: bool, tmp: str) -> tuple[Path, str]:
    """The dataset directory to run on and its label (a synthetic world when the default has no features)."""
    features = options.get("features", "auto")
    if "data" in options:
        root = Path(options["data"])
        if not root.is_dir():
            raise FileNotFoundError(f"nav-throughput: dataset directory not found: {root}")
        NavDataset(root).resolve_features(features)  # a clear error when it has none
        return root, str(root)
    if DEFAULT_DATA.is_dir():
        try:
            NavDataset(DEFAULT_DATA).resolve_features(features)
            return DEFAULT_DATA, str(DEFAULT_DATA)
        except FileNotFoundError:
            pass
    sizes = SYNTHETIC[quick]
    root = write_synthetic_dataset(Path(tmp) / "nav", **sizes, feature_name="random")
    label = f"synthetic {sizes['num_scans']} scans, D={sizes['feature_dim']} ({DEFAULT_DATA} has no features)"
    return root, label


def make_trainer(
    data: Path,
    setting: Setting,
    options: dict[str, str],
    run_dir: Path,
    env_factory: Callable[..., NavVecEnv],
) -> FinetuneTrainer:
    """The fine-tuning trainer of ``configs/vln_finetune.yaml`` on ``data``, evaluating ``setting.split``."""
    overrides = [
        f"data_dir={data}",
        f"data.features={options.get('features', 'auto')}",
        f"data.eval_splits=[{setting.split}]",
        f"select_split={setting.split}",
        f"data.eval_max_episodes={setting.eval_episodes}",
        "log_episodes=0",
        *setting.overrides,
    ]
    config = load_config(FinetuneConfig, CONFIG, overrides)
    return FinetuneTrainer(config, run_dir, env_factory=env_factory)


def check_same_training(ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> None:
    """The two trainers' losses agree iteration by iteration: both simulators carry the same work."""
    for iteration, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for key in a.keys() | b.keys():
            x, y = a.get(key, math.nan), b.get(key, math.nan)
            if not math.isclose(x, y, rel_tol=LOSS_RTOL, abs_tol=LOSS_RTOL):
                raise AssertionError(
                    f"nav-throughput: {key!r} differs between the simulators at warm-up iteration "
                    f"{iteration} ({x} on NavVecEnv, {y} on the reference): the comparison is not fair"
                )


class Turns:
    """Each trainer's own global random streams (dropout draws from them), swapped in for its turns:
    two trainers run in alternation exactly as each would run alone."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def keep(self, name: str) -> None:
        """Keep the current global streams as ``name``'s (after building it or after its turn)."""
        self.states[name] = rng_state()

    @contextmanager
    def turn(self, name: str) -> Iterator[None]:
        set_rng_state(self.states[name])
        yield
        self.keep(name)


def time_training(trainers: dict[str, FinetuneTrainer], turns: Turns, setting: Setting) -> dict[str, float]:
    """Fine-tuning episodes/s of each trainer: warm-up (checked to agree), then alternating timed chunks."""
    warm: dict[str, list[dict[str, float]]] = {}
    for name, trainer in trainers.items():
        with turns.turn(name):
            warm[name] = [trainer.train_step() for _ in range(setting.warmup)]
    check_same_training(*warm.values())
    seconds = dict.fromkeys(trainers, 0.0)
    episodes = dict.fromkeys(trainers, 0)
    done = 0
    while done < setting.iterations:
        steps = min(setting.chunk, setting.iterations - done)
        for name, trainer in trainers.items():
            with turns.turn(name):
                before, start = trainer.episodes_done, time.perf_counter()
                for _ in range(steps):
                    trainer.train_step()
                seconds[name] += time.perf_counter() - start
                episodes[name] += trainer.episodes_done - before
        done += steps
    return {name: episodes[name] / seconds[name] for name in trainers}


def time_evaluation(trainers: dict[str, FinetuneTrainer], setting: Setting) -> tuple[dict[str, float], int]:
    """Greedy evaluation episodes/s of one follower on each trainer's evaluation env, and the episodes
    of one pass; the simulators must walk the same trajectories."""
    model = trainers["ours"].model  # one follower on both: the same decisions, the same work
    seconds = dict.fromkeys(trainers, 0.0)
    count = 0
    for _ in range(setting.repeats):
        evaluations: dict[str, Evaluation] = {}
        for name, trainer in trainers.items():
            start = time.perf_counter()
            evaluations[name] = evaluate_follower(model, trainer.eval_envs[setting.split])
            seconds[name] += time.perf_counter() - start
        walks = [[[step[0] for step in r["trajectory"]] for r in e.records] for e in evaluations.values()]
        same = sum(a == b for a, b in zip(*walks, strict=True)) / max(len(walks[0]), 1)
        # A logit tie broken differently by the last bit of an angle feature may change a rare walk.
        if same < 0.99:
            raise AssertionError(
                f"nav-throughput: only {same:.1%} of the greedy trajectories agree between the simulators"
            )
        count = len(walks[0])
    return {name: count * setting.repeats / seconds[name] for name in trainers}, count


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    setting = parse_options(quick, options)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(setting.threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data, label = find_dataset(options, quick, tmp)
            factories: dict[str, Callable[..., NavVecEnv]] = {"ours": NavVecEnv, "reference": ReferenceVecEnv}
            trainers, turns = {}, Turns()
            for name, factory in factories.items():
                trainers[name] = make_trainer(data, setting, options, Path(tmp) / name, factory)
                turns.keep(name)
            train = time_training(trainers, turns, setting)
            evaluation, instructions = time_evaluation(trainers, setting)
            config, device = trainers["ours"].config, trainers["ours"].device
            for trainer in trainers.values():
                trainer.close()
    finally:
        torch.set_num_threads(previous_threads)
    learn = config.learn
    envs = learn.teacher_envs + learn.learner_envs
    figures = [
        Figure(
            benchmark="nav-throughput",
            metric=f"fine-tuning episodes/s (train_step, {envs} envs x {learn.rollout_steps} steps, "
            f"{setting.iterations} iterations)",
            value=round(train["ours"], 2),
            unit="episodes/s",
            reference=REFERENCE,
            reference_value=round(train["reference"], 2),
            device=device.type,
        ),
        Figure(
            benchmark="nav-throughput",
            metric=f"evaluation episodes/s (greedy, {setting.split}, {instructions} episodes, "
            f"{min(config.eval_num_envs, instructions)} envs)",
            value=round(evaluation["ours"], 2),
            unit="episodes/s",
            reference=REFERENCE,
            reference_value=round(evaluation["reference"], 2),
            device=device.type,
        ),
    ]
    title = (
        f"nav-throughput: FinetuneTrainer / evaluate_follower on NavVecEnv vs the per-episode reference "
        f"({label}, {setting.threads} torch thread(s)); losses and trajectories checked to agree"
    )
    report(figures, title)
    return figures
