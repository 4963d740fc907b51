"""``nav-sim``: env steps/s of the batched ``NavVecEnv`` against a per-episode Python simulator.

The reference (:mod:`benchmarks.nav_reference`) steps every episode in a Python loop over per-scan
graph dicts, the way the R2R code bases do (a cached list of navigable candidates per viewpoint,
dicts of shortest distances and next hops, one observation dict per episode that hands out the cached
``[36, D]`` feature array and the instruction encoding by reference, with the candidates' view
indices and freshly computed angle features). Both simulators run the same actions in the same
process, and the benchmark asserts that they produce the same rewards, terminations, teacher actions,
distances, final observation and trajectories.

Two comparisons, each against the reference producing the same observation content:

- **index observations** (``NavVecEnv(observation="indices")``, the target: >= 50x at batch 1024):
  candidate view indices into ``env.feature_table``, candidate angle features, panorama index and
  heading, instruction tokens, teacher action, distance, step. The reference returns its list of
  per-episode dicts (the agent-side batching of R2R code is not counted for it).
- **materialised features** (``observation="features"``, reported without a target): candidate and
  36-view panorama features copied per step; the reference copies each episode's observation into
  the same batch arrays. Both are bound by writing ~75 MB of panorama per step at batch 1024 with
  D=512 (twice when episodes end, for ``final_obs``); the "memory floor" figure times nothing but
  fresh copies of one observation and its final observation. Fresh tensors that large page-fault:
  numpy puts them on huge pages by default, torch only with ``THP_MEM_ALLOC_ENABLE=1`` in the
  environment of the process (the title says which), which changes these figures several-fold.

Options: ``data=<dir>`` (default ``data/nav/benchmark`` when it exists, else a synthetic dataset sized
like R2R from :mod:`benchmarks.nav_synthetic`: 60 scans x ~100 viewpoints), ``features=<name>``
(random features when the dataset has none), ``feature_dim=512``, ``batches=64,256,1024``,
``observation=indices,features``, ``steps=<n>``, ``pano=1``, ``repeats=3``, ``threads=1`` (torch
intra-op threads for NavVecEnv).
"""

from __future__ import annotations

import math
import os
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
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import NUM_VIEWS
from lodestar.envs.nav.sim.env import OBSERVATION_MODES, NavVecEnv
from lodestar.runtime.bench import Figure, report

DEFAULT_DATA = Path("data/nav/benchmark")
TARGET_SPEEDUP = 50.0
TARGET_BATCH = 1024


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


def _dataset(options: dict[str, str], tmp: str) -> tuple[NavDataset, dict[str, np.ndarray], str]:
    """The dataset to run on and a feature map for its train viewpoints (loaded or random)."""
    feature_dim = int(options.get("feature_dim", 512))
    data = Path(options["data"]) if "data" in options else DEFAULT_DATA
    if data.is_dir():
        dataset, label = NavDataset(data), str(data)
    elif "data" in options:
        raise FileNotFoundError(f"nav-sim: dataset directory not found: {data}")
    else:
        # R2R-sized in quick mode too: the reference's per-episode cost depends on the size of its
        # dicts, so a smaller world would not measure the same ratio (generating it takes seconds).
        root = write_synthetic_dataset(Path(tmp) / "nav", feature_dim=feature_dim, feature_name=None)
        dataset, label = NavDataset(root), "synthetic 60 scans"
    scans = sorted({ep.scan for ep in dataset.episodes("train")})
    graphs = [dataset.graph(scan) for scan in scans]
    name = options.get("features")
    if name is not None:
        table = dataset.load_features(name, scans)
        features = dict(zip(NavDataset.viewpoint_keys(graphs), table.astype(np.float32), strict=True))
    else:
        rng = np.random.default_rng(0)
        features = {
            key: rng.standard_normal((NUM_VIEWS, feature_dim), dtype=np.float32)
            for key in NavDataset.viewpoint_keys(graphs)
        }
    return dataset, features, label


def _step_outputs(obs: Any, reward: Any, terminated: Any, truncated: Any, active: Any) -> list[np.ndarray]:
    """Per-step outputs both simulators must agree on, as arrays (teacher and distance from ``obs``)."""
    if isinstance(obs, list):  # the reference's per-episode observations
        teacher = np.array([-1 if ob is None else ob["teacher"] for ob in obs])
        distance = np.array([np.nan if ob is None else ob["distance"] for ob in obs], np.float32)
    else:
        teacher, distance = np.asarray(obs["teacher_action"]), np.asarray(obs["distance"])
    return [np.asarray(x) for x in (reward, terminated, truncated, teacher, distance, active)]


def _verify(env: NavVecEnv, sim: ReferenceNavSim, actions: list[torch.Tensor], seed: int, label: str) -> None:
    """One untimed pass of both simulators: same per-step outputs, final observation and trajectories."""
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
    got = [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in env.trajectories()]
    want = [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in sim.finished]
    if got != want:
        raise AssertionError(f"nav-sim {label}: trajectories differ from the reference")


def _copy_floor(obs: dict[str, torch.Tensor], steps: int, repeats: int) -> float:
    """Seconds to merely allocate and fill fresh copies of one observation and its final observation."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            for _ in range(2):
                {key: value.clone() for key, value in obs.items()}
        best = min(best, time.perf_counter() - start)
    return best


def _run_time(simulator: Any, actions: Sequence[Any], seed: int) -> float:
    """Seconds to step ``actions`` after an untimed reset."""
    simulator.reset(seed)
    start = time.perf_counter()
    for action in actions:
        simulator.step(action)
    return time.perf_counter() - start


@dataclass
class Measurement:
    """Env steps/s of NavVecEnv, of the reference, and of the copy floor (features mode only)."""

    vec_rate: float
    ref_rate: float
    floor_rate: float | None


def _measure(
    dataset: NavDataset,
    features: dict[str, np.ndarray],
    sim: ReferenceNavSim,
    batch: int,
    steps: int,
    pano: bool,
    observation: str,
    repeats: int,
    seed: int = 0,
) -> Measurement:
    """Env steps/s of NavVecEnv and of the reference on the same action sequence (and the copy floor)."""
    env = NavVecEnv(
        dataset, "train", batch, features=features, device="cpu", seed=seed, max_degree=sim.max_degree,
        observe_pano=pano, observation=observation, record_trajectories=True,
    )  # fmt: skip
    sim.num_envs, sim.observe_pano, sim.observation = batch, pano, observation
    label = f"batch {batch}, {observation}"
    generator = torch.Generator().manual_seed(seed)
    obs, actions = env.reset(), []
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
    floor = None
    if observation == "features":
        floor = batch * steps / _copy_floor(env.reset(seed), steps, repeats)
    return Measurement(batch * steps / vec_time, batch * steps / ref_time, floor)


REFERENCE_LABEL = {
    "indices": "per-episode Python simulator (R2R style, per-episode dicts)",
    "features": "per-episode Python simulator (R2R style, batched arrays)",
}


def _figures(m: Measurement, mode: str, batch: int, with_pano: bool, largest: bool) -> list[Figure]:
    what = ("index observations" if mode == "indices" else "materialised features") + (
        "" if with_pano else ", no panorama"
    )
    target = TARGET_SPEEDUP if mode == "indices" and batch == TARGET_BATCH and with_pano else None
    figures = [
        Figure(
            benchmark="nav-sim",
            metric=f"env steps/s, batch {batch} ({what})",
            value=round(m.vec_rate, 1),
            unit="steps/s",
            reference=REFERENCE_LABEL[mode],
            reference_value=round(m.ref_rate, 1),
            target=target,
        )
    ]
    if m.floor_rate is not None and largest:
        figures.append(
            Figure(
                benchmark="nav-sim",
                metric=f"env steps/s vs memory floor, batch {batch} ({what})",
                value=round(m.vec_rate, 1),
                unit="steps/s",
                reference="fresh copies of obs + final_obs only",
                reference_value=round(m.floor_rate, 1),
            )
        )
    return figures


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    batches = [int(b) for b in options.get("batches", "64,256,1024").split(",")]
    modes = options.get("observation", "indices,features").split(",")
    unknown = sorted(set(modes) - set(OBSERVATION_MODES))
    if unknown:
        raise ValueError(f"nav-sim: unknown observation mode(s) {unknown}; choose from {OBSERVATION_MODES}")
    pano = options.get("pano", "1") not in ("0", "false", "no")
    default_steps = {
        "indices": {64: 400, 256: 200, 1024: 100} if not quick else {64: 100, 256: 50, 1024: 40},
        "features": {64: 200, 256: 80, 1024: 30} if not quick else {64: 20, 256: 10, 1024: 5},
    }
    repeats = int(options.get("repeats", 3))
    runs = [(mode, batch, pano) for mode in modes for batch in batches]
    if "features" in modes and pano and not quick:
        runs.append(("features", max(batches), False))  # what the panorama costs
    # One thread by default: the reference runs on one core, and on a shared machine multi-threaded
    # gathers suffer from oversubscription far more than a single-threaded loop does.
    threads = int(options.get("threads", 1))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dataset, features, label = _dataset(options, tmp)
            episodes = dataset.episodes("train")
            graphs = {scan: dataset.graph(scan) for scan in sorted({ep.scan for ep in episodes})}
            sim = ReferenceNavSim(graphs, features, episodes, dataset.vocab(), 1)
            figures = []
            for mode, batch, with_pano in runs:
                steps = int(options.get("steps", default_steps[mode].get(batch, 30)))
                m = _measure(dataset, features, sim, batch, steps, with_pano, mode, repeats)
                figures += _figures(m, mode, batch, with_pano, batch == max(batches))
    finally:
        torch.set_num_threads(previous_threads)
    dim = next(iter(features.values())).shape[1]
    huge_pages = "on" if os.environ.get("THP_MEM_ALLOC_ENABLE", "0") not in ("", "0") else "off"
    title = (
        f"nav-sim: NavVecEnv vs per-episode reference ({label}, D={dim}, {threads} torch thread(s), "
        f"torch huge pages {huge_pages}); outputs and trajectories identical"
    )
    report(figures, title)
    return figures
