"""``nav-sim``: env steps/s of the batched ``NavVecEnv`` against a per-episode Python simulator.

The reference (:mod:`benchmarks.nav_reference`) steps every episode in a Python loop over per-scan
graph dicts, the way the R2R code bases do (a cached list of navigable candidates per viewpoint,
dicts of shortest distances and next hops, one observation dict per episode that hands out the cached
``[36, D]`` feature array and the instruction encoding by reference, with the candidates' view
indices and freshly computed angle features). Both simulators run the same actions in the same
process, and the benchmark asserts that they produce the same rewards, terminations, teacher actions,
distances, last observation and (where recorded) trajectories.

Two comparisons, each against the reference producing the same observation content:

- **trainer** (the target: >= 50x at batch 1024): the env exactly as fine-tuning builds and steps it,
  from the trainer's own :func:`~lodestar.agents.vln.finetune.make_train_env` with the default
  fine-tuning config: index observations (``observation="indices"``; the follower gathers the views
  it reads from ``env.feature_table``), the oracle, float16 features, 32 angle features. The
  reference returns its list of per-episode dicts (the agent-side batching of R2R code is not
  counted for it), holds its features in the same dtype and, like the index observation, computes
  the 4 distinct angle values of each candidate (both repeat them to 32 only when materialising).
- **materialised features** (``observation="features"``, what Stable-Baselines3 and gymnasium users
  get; target >= 1x at every batch): candidate and 36-view panorama features written per step (into
  reused output buffers), twice when episodes end (``final_obs``); the reference copies each
  episode's observation into fresh batch arrays of the same layout.

Options: ``data=<dir>`` (default ``data/nav/benchmark`` when it exists, else a synthetic dataset sized
like R2R from :mod:`benchmarks.nav_synthetic`: 60 scans x ~100 viewpoints), ``split=train``,
``features=<name>`` (random features when not given), ``feature_dim=512`` (of random features),
``batches=64,256,1024``, ``observation=trainer,features``, ``steps=<n>``, ``pano=1`` (features rows),
``repeats=3``, ``threads=1`` (torch intra-op threads for NavVecEnv).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.nav_reference import ReferenceNavSim
from benchmarks.nav_synthetic import write_synthetic_dataset
from lodestar.agents.vln.finetune import make_train_env
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import NUM_VIEWS
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.runtime.bench import Figure, report

DEFAULT_DATA = Path("data/nav/benchmark")
MODES = ("trainer", "features")
TRAINER_TARGET, TARGET_BATCH = 50.0, 1024  # x the per-episode loop, at this batch
FEATURES_TARGET = 1.0  # the materialised features: never slower than the per-episode loop
REFERENCE_LABEL = {
    "trainer": "per-episode Python simulator (R2R style, per-episode dicts)",
    "features": "per-episode Python simulator (R2R style, batched arrays)",
}
DEFAULT_STEPS = {  # per batch: enough steps for episodes to end and restart many times
    "trainer": ({64: 400, 256: 200, 1024: 100}, {64: 40, 256: 20, 1024: 10}),
    "features": ({64: 200, 256: 80, 1024: 30}, {64: 10, 256: 5, 1024: 3}),
}


def random_actions(
    cand_mask: torch.Tensor, generator: torch.Generator, stop_prob: float = 0.15
) -> torch.Tensor:
    """STOP with probability ``stop_prob``, else a uniformly random navigable candidate."""
    n, slots = cand_mask.shape
    scores = torch.rand(n, slots, generator=generator)
    scores[:, -1] = -1.0
    scores = scores.masked_fill(~cand_mask, -2.0)
    moves = scores.argmax(dim=1)
    stop = (torch.rand(n, generator=generator) < stop_prob) | (scores.max(dim=1).values < 0)
    return torch.where(stop, slots - 1, moves)


@dataclass
class Setup:
    """The split both simulators run, and its view features ``[V, 36, D]`` in packing order."""

    dataset: NavDataset
    split: str
    episodes: list[Episode]
    graphs: dict[str, NavGraph]
    vocab: Vocab
    features: np.ndarray
    label: str

    def reference(self, env: NavVecEnv) -> ReferenceNavSim:
        """The reference configured like ``env``, its features in the dtype of ``env``'s table."""
        dtype = np.float16 if env.feature_table.table.dtype == torch.float16 else np.float32
        arrays = np.asarray(self.features, dtype=dtype)  # no copy when the dtype matches
        keys = NavDataset.viewpoint_keys(self.graphs.values())
        return ReferenceNavSim(
            self.graphs, dict(zip(keys, arrays, strict=True)), self.episodes, self.vocab, env.num_envs,
            max_steps=env.max_steps, angle_feature_size=env.angle_feature_size,
            max_instruction_len=env.single_observation_space["instr_ids"].shape[0],
            max_degree=env.world.max_degree, observe_pano=env.observe_pano, observation=env.observation,
            success_distance=env.success_distance, success_bonus=env.success_bonus,
            failure_penalty=env.failure_penalty,
        )  # fmt: skip


def _setup(options: dict[str, str], tmp: str) -> Setup:
    """The dataset and split to run on, with features loaded (in file dtype) or random."""
    data = Path(options["data"]) if "data" in options else DEFAULT_DATA
    if data.is_dir():
        dataset, label = NavDataset(data), str(data)
    elif "data" in options:
        raise FileNotFoundError(f"nav-sim: dataset directory not found: {data}")
    else:
        # R2R-sized in quick mode too: the reference's per-episode cost depends on the size of its
        # dicts, so a smaller world would not measure the same ratio (generating it takes seconds).
        feature_dim = int(options.get("feature_dim", 512))
        root = write_synthetic_dataset(Path(tmp) / "nav", feature_dim=feature_dim, feature_name=None)
        dataset, label = NavDataset(root), "synthetic 60 scans"
    split = options.get("split", "train")
    episodes = dataset.episodes(split)
    graphs = {scan: dataset.graph(scan) for scan in sorted({ep.scan for ep in episodes})}
    name = options.get("features")
    if name is not None:
        features = dataset.load_features(name, list(graphs))
    else:
        count = sum(g.num_viewpoints for g in graphs.values())
        rng = np.random.default_rng(0)
        features = rng.standard_normal((count, NUM_VIEWS, int(options.get("feature_dim", 512))), np.float32)
    return Setup(dataset, split, episodes, graphs, dataset.vocab(), features, f"{label}, split {split}")


def _make_env(mode: str, setup: Setup, batch: int, pano: bool, seed: int) -> NavVecEnv:
    if mode == "trainer":  # exactly the fine-tuning runner's env (default config)
        return make_train_env(
            setup.dataset, setup.split, batch, FinetuneConfig(), "cpu", seed, setup.vocab, setup.features
        )
    return NavVecEnv(
        setup.dataset, setup.split, batch, features=setup.features, device="cpu", seed=seed,
        vocab=setup.vocab, observe_pano=pano, record_trajectories=True,
        oracle=True,  # the teacher action and distance are checked against the reference
    )  # fmt: skip


def _step_outputs(obs: Any, reward: Any, terminated: Any, truncated: Any, active: Any) -> list[np.ndarray]:
    """Per-step outputs both simulators must agree on, as arrays (teacher and distance from ``obs``)."""
    if isinstance(obs, list):  # the reference's per-episode observations
        teacher = np.array([-1 if ob is None else ob["teacher"] for ob in obs])
        distance = np.array([np.nan if ob is None else ob["distance"] for ob in obs], np.float32)
    else:
        teacher, distance = np.asarray(obs["teacher_action"]), np.asarray(obs["distance"])[:, 0]
    return [np.asarray(x) for x in (reward, terminated, truncated, teacher, distance, active)]


def _verify(env: NavVecEnv, sim: ReferenceNavSim, actions: list[torch.Tensor], seed: int, label: str) -> None:
    """One untimed pass of both simulators: same per-step outputs, last observation and trajectories."""
    names = ("reward", "terminated", "truncated", "teacher", "distance", "active")
    env.reset(seed)
    sim.reset(seed)
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(action)
        ref_obs, ref_reward, ref_term, ref_trunc, _ = sim.step(action.tolist())
        active = info["active"].numpy()
        got = _step_outputs(obs, reward, terminated, truncated, active)
        want = _step_outputs(ref_obs, ref_reward, ref_term, ref_trunc, [s["active"] for s in sim.envs])
        for name, x, y in zip(names, got, want, strict=True):
            x, y = x[active], y[active]
            same = np.allclose(x, y, atol=1e-4) if x.dtype.kind == "f" else np.array_equal(x, y)
            if not same:
                raise AssertionError(f"nav-sim {label}: '{name}' differs from the reference at step {t}")
    # The whole last observation, in features layout (the agent-side batching of the reference).
    last = env.feature_table.materialise(obs) if env.observation == "indices" else obs
    ref_last = sim.batch(ref_obs) if isinstance(ref_obs, list) else ref_obs
    for key, value in ref_last.items():
        if not np.allclose(last[key].numpy()[active], value[active], atol=1e-4):
            raise AssertionError(f"nav-sim {label}: observation '{key}' differs from the reference")
    _compare_trajectories(env, sim, label)


def _compare_trajectories(env: NavVecEnv, sim: ReferenceNavSim, label: str) -> None:
    if not env.record_trajectories:  # the trainer's env records none (training needs none)
        return
    got = [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in env.trajectories()]
    want = [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in sim.finished]
    if got != want:
        raise AssertionError(f"nav-sim {label}: trajectories differ from the reference")


def _run_time(simulator: Any, actions: Sequence[Any], seed: int) -> float:
    """Seconds to step ``actions`` after an untimed reset."""
    simulator.reset(seed)
    start = time.perf_counter()
    for action in actions:
        simulator.step(action)
    return time.perf_counter() - start


def _measure(
    env: NavVecEnv, sim: ReferenceNavSim, steps: int, repeats: int, label: str, seed: int = 0
) -> tuple[float, float]:
    """``(NavVecEnv, reference)`` env steps/s on the same action sequence, checked to agree first."""
    generator = torch.Generator().manual_seed(seed)
    obs, actions = env.reset(seed), []
    for _ in range(steps):  # untimed pass (also a warm-up): record actions valid along the way
        actions.append(random_actions(obs["cand_mask"], generator))
        obs = env.step(actions[-1])[0]
    _verify(env, sim, actions, seed, label)
    plain = [a.tolist() for a in actions]
    # Alternate the two simulators and keep the best run of each (the machine is shared and noisy).
    vec_time, ref_time = math.inf, math.inf
    for _ in range(repeats):
        vec_time = min(vec_time, _run_time(env, actions, seed))
        ref_time = min(ref_time, _run_time(sim, plain, seed))
    _compare_trajectories(env, sim, label)
    return env.num_envs * steps / vec_time, env.num_envs * steps / ref_time


def _figure(mode: str, batch: int, pano: bool, rates: tuple[float, float]) -> Figure:
    if mode == "trainer":
        what = "trainer: index observations as fine-tuning steps them"
        target = TRAINER_TARGET if batch == TARGET_BATCH else None
    else:
        what = "materialised features" + ("" if pano else ", no panorama")
        target = FEATURES_TARGET
    return Figure(
        benchmark="nav-sim",
        metric=f"env steps/s, batch {batch} ({what})",
        value=round(rates[0], 1),
        unit="steps/s",
        reference=REFERENCE_LABEL[mode],
        reference_value=round(rates[1], 1),
        target=target,
    )


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    batches = [int(b) for b in options.get("batches", "64,256,1024").split(",")]
    modes = options.get("observation", ",".join(MODES)).split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"nav-sim: unknown observation row(s) {unknown}; choose from {MODES}")
    pano = options.get("pano", "1") not in ("0", "false", "no")
    repeats = int(options.get("repeats", 1 if quick else 3))
    runs = [(mode, batch, pano or mode == "trainer") for mode in modes for batch in batches]
    if "features" in modes and pano and not quick:
        runs.append(("features", max(batches), False))  # what the panorama costs
    # One thread by default: the reference runs on one core, and on a shared machine multi-threaded
    # gathers suffer from oversubscription far more than a single-threaded loop does.
    threads = int(options.get("threads", 1))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    figures = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            setup = _setup(options, tmp)
            references: dict[tuple[str, bool], ReferenceNavSim] = {}
            for mode, batch, with_pano in runs:
                steps = int(options.get("steps", DEFAULT_STEPS[mode][quick].get(batch, 30)))
                env = _make_env(mode, setup, batch, with_pano, seed=0)
                if (mode, with_pano) not in references:  # building its dicts takes seconds: once per row
                    references[mode, with_pano] = setup.reference(env)
                sim = references[mode, with_pano]
                sim.num_envs = batch
                label = f"batch {batch}, {mode}"
                figures.append(_figure(mode, batch, with_pano, _measure(env, sim, steps, repeats, label)))
                del env  # its feature table, before the next one is built
    finally:
        torch.set_num_threads(previous_threads)
    dim = setup.features.shape[-1]
    title = (
        f"nav-sim: NavVecEnv vs per-episode reference ({setup.label}, D={dim}, {threads} torch "
        "thread(s)); outputs and observations identical"
    )
    report(figures, title)
    return figures
