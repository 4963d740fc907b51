"""``nav-sim``: env steps/s of the batched ``NavVecEnv`` against a per-episode Python simulator.

The reference steps every episode in a Python loop over per-scan graph dicts, the way the R2R code
bases do (a cached list of navigable candidates per viewpoint, dicts of shortest distances and next
hops, one observation dict per episode that hands out the cached ``[36, D]`` feature array and the
instruction encoding by reference, with the candidates' view indices and freshly computed angle
features). Both simulators run the same actions in the same process, and the benchmark asserts that
they produce the same rewards, terminations, teacher actions, distances, final observation and
trajectories.

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
like R2R: 60 scans x ~100 viewpoints), ``features=<name>`` (random features when the dataset has
none), ``feature_dim=512``, ``batches=64,256,1024``, ``observation=indices,features``, ``steps=<n>``,
``pano=1``, ``repeats=3``, ``threads=1`` (torch intra-op threads for NavVecEnv).
"""

from __future__ import annotations

import json
import math
import os
import string
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lodestar.envs.nav.data.connectivity import write_connectivity, write_scans
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import NUM_VIEWS, feature_key, write_features_hdf5
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode, write_r2r
from lodestar.envs.nav.data.tokenizer import Vocab, build_vocab
from lodestar.envs.nav.sim.env import OBSERVATION_MODES, NavVecEnv
from lodestar.envs.nav.sim.feature_table import VIEW_ELEVATIONS, VIEW_HEADINGS
from lodestar.envs.nav.sim.packing import edge_direction, nearest_view
from lodestar.runtime.bench import Figure, report

DEFAULT_DATA = Path("data/nav/benchmark")
TARGET_SPEEDUP = 50.0
TARGET_BATCH = 1024
# fmt: off
WORDS = (
    "walk", "go", "turn", "left", "right", "straight", "past", "the", "table", "sofa", "bed", "kitchen",
    "hallway", "door", "stairs", "stop", "wait", "near", "into", "out", "of", "through", "bathroom",
    "bedroom", "chair", "lamp", "and", "then", "exit", "enter", "slightly", "around", "until", "you",
    "reach", "pass", "a", "living", "room", "dining", "office", "plant", "painting", "on", "your", "at",
    "end",
)
# fmt: on


# ---------------------------------------------------------------------------------------------------
# A synthetic R2R-shaped dataset (no house geometry: jittered grids with proximity edges)


def random_graph(rng: np.random.Generator, scan: str, num_viewpoints: int) -> NavGraph:
    """A connected graph on a jittered 2 m grid (on a gentle ramp, so some edges tilt), ids like Matterport."""
    cols = max(2, math.ceil(math.sqrt(num_viewpoints)))
    cells = np.array([(i % cols, i // cols) for i in range(num_viewpoints)], dtype=np.float64)
    xy = cells * 2.0 + rng.uniform(-0.4, 0.4, size=cells.shape)
    z = 1.5 + rng.uniform(0.0, 0.7) * cells[:, 0] + rng.uniform(-0.05, 0.05, num_viewpoints)
    positions = np.column_stack([xy, z])
    gap = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    close = [(i, j) for i in range(num_viewpoints) for j in range(i + 1, num_viewpoints) if gap[i, j] < 3.2]
    keep = {e for e in close if rng.random() < 0.6}
    # A random spanning tree over the close pairs keeps the graph connected.
    adjacency: dict[int, list[int]] = {i: [] for i in range(num_viewpoints)}
    for i, j in close:
        adjacency[i].append(j)
        adjacency[j].append(i)
    seen, frontier = {0}, [0]
    while frontier:
        i = frontier.pop(int(rng.integers(len(frontier))))
        for j in rng.permutation(adjacency[i]).tolist():
            if j not in seen:
                seen.add(j)
                frontier.append(j)
                keep.add((min(i, j), max(i, j)))
    viewpoints = ["".join(rng.choice(list("0123456789abcdef"), 32)) for _ in range(num_viewpoints)]
    graph = NavGraph(scan, viewpoints, positions, sorted(keep))
    if not graph.is_connected():
        raise RuntimeError(f"synthetic scan {scan} is not connected (grid too sparse)")
    return graph


def sample_episodes(
    rng: np.random.Generator,
    graph: NavGraph,
    count: int,
    first_id: int,
    min_edges: int = 4,
    max_edges: int = 6,
) -> list[Episode]:
    """Shortest paths of ``min_edges``-``max_edges`` edges with three random word-salad instructions."""
    episodes: list[Episode] = []
    for _ in range(count * 200):
        if len(episodes) == count:
            break
        a, b = rng.integers(graph.num_viewpoints, size=2).tolist()
        path = graph.shortest_path(a, b)
        if not min_edges <= len(path) - 1 <= max_edges:
            continue
        instructions = [" ".join(rng.choice(WORDS, int(rng.integers(8, 30)))) + "." for _ in range(3)]
        episodes.append(
            Episode(
                path_id=first_id + len(episodes),
                scan=graph.scan,
                heading=float(rng.uniform(0, 2 * math.pi)),
                path=path,
                instructions=instructions,
                distance=graph.distance(a, b),
            )
        )
    return episodes


def write_synthetic_dataset(
    root: str | Path,
    num_scans: int = 60,
    viewpoints_per_scan: int = 100,
    feature_dim: int = 512,
    paths_per_scan: int = 20,
    unseen_scans: int = 0,
    seed: int = 0,
    feature_name: str | None = "random",
    min_count: int = 1,
    exclude_one: bool = False,
    path_edges: tuple[int, int] = (4, 6),
) -> Path:
    """Write a synthetic dataset directory (connectivity, R2R splits, features, vocab).

    Train scans give ``train`` and ``val_seen`` paths; the last ``unseen_scans`` scans give
    ``val_unseen``. With ``exclude_one`` each connectivity file gets one extra viewpoint with
    ``included: false`` (linked to viewpoint 0), which loaders must drop.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    conn = root / "connectivity"
    scans = ["".join(rng.choice(list(string.ascii_letters + string.digits), 11)) for _ in range(num_scans)]
    splits: dict[str, list[Episode]] = {"train": [], "val_seen": [], "val_unseen": []}
    features: dict[str, np.ndarray] = {}
    next_id = 0
    for s, scan in enumerate(scans):
        size = int(rng.integers(max(6, viewpoints_per_scan * 3 // 4), viewpoints_per_scan * 5 // 4 + 1))
        graph = random_graph(rng, scan, size)
        write_connectivity(conn / f"{scan}_connectivity.json", graph)
        if exclude_one:
            _append_excluded(conn / f"{scan}_connectivity.json", rng)
        unseen = s >= num_scans - unseen_scans
        for split, share in (("val_unseen", 1.0),) if unseen else (("train", 0.75), ("val_seen", 0.25)):
            count = max(1, round(paths_per_scan * share))
            episodes = sample_episodes(rng, graph, count, next_id, *path_edges)
            next_id += len(episodes)
            splits[split].extend(episodes)
        if feature_name is not None:
            for vp in graph.viewpoints:
                features[feature_key(scan, vp)] = rng.standard_normal(
                    (NUM_VIEWS, feature_dim), dtype=np.float32
                )
    write_scans(conn, scans)
    for split, episodes in splits.items():
        if episodes:
            write_r2r(root / f"R2R_{split}.json", episodes)
    if feature_name is not None:
        write_features_hdf5(root / "features" / f"{feature_name}.hdf5", features)
    build_vocab(root, "train", min_count=min_count)
    return root


def _append_excluded(path: Path, rng: np.random.Generator) -> None:
    data = json.loads(path.read_text())
    n = len(data) + 1
    for k, item in enumerate(data):
        item["unobstructed"].append(k == 0)
        item["visible"].append(k == 0)
    pose = list(data[0]["pose"])
    pose[3] += 0.5
    extra = {
        "image_id": "".join(rng.choice(list("0123456789abcdef"), 32)),
        "pose": pose,
        "included": False,
        "visible": [k == 0 for k in range(n)],
        "unobstructed": [k == 0 for k in range(n)],
        "height": 1.5,
    }
    data.append(extra)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------------------------------------------
# The reference: a per-episode Python simulator in the style of the R2R code bases


class ReferenceNavSim:
    """Steps each episode in a Python loop over dict graphs; same semantics as :class:`NavVecEnv`.

    Written the way the R2R code bases write their environment: per scan, dicts of navigable
    candidates (cached once per viewpoint), shortest distances and next hops; per episode an
    observation dict that hands out the cached ``[36, D]`` feature array and instruction encoding by
    reference, with the candidate list (view index ``pointId`` per candidate) and freshly computed
    angle features relative to the agent heading.

    ``observation="indices"`` returns that list of per-episode dicts, like the R2R env (the agent
    batches it later; that cost is not counted here). ``observation="features"`` also copies every
    per-episode observation into batch arrays (:meth:`batch`) with the same content and layout as
    ``NavVecEnv(observation="features")``.

    Episodes are drawn like ``NavVecEnv`` (sequential pass, or a cycling ``torch.randperm`` stream
    seeded the same way) so that both simulators see the same episodes for the same seed.
    """

    def __init__(
        self,
        graphs: dict[str, NavGraph],
        features: dict[str, np.ndarray],
        episodes: Sequence[Episode],
        vocab: Vocab,
        num_envs: int,
        max_steps: int = 15,
        angle_feature_size: int = 4,
        max_instruction_len: int = 80,
        max_degree: int | None = None,
        sequential: bool = False,
        observe_pano: bool = True,
        observation: str = "features",
        success_distance: float = 3.0,
        success_bonus: float = 2.0,
        failure_penalty: float = 2.0,
    ) -> None:
        if observation not in ("features", "indices"):
            raise ValueError(f"observation must be 'features' or 'indices', got {observation!r}")
        self.num_envs, self.max_steps, self.angle_size = num_envs, max_steps, angle_feature_size
        self.sequential, self.observe_pano, self.observation = sequential, observe_pano, observation
        self.success_distance, self.success_bonus, self.failure_penalty = (
            success_distance,
            success_bonus,
            failure_penalty,
        )
        self.features = features
        self.feature_dim = next(iter(features.values())).shape[1]
        # Static geometry per scan: navigable neighbours in graph order as
        # (viewpointId, heading, elevation, length, pointId).
        self.navigable: dict[str, dict[str, list[tuple[str, float, float, float, int]]]] = {}
        self.distances: dict[str, dict[str, dict[str, float]]] = {}
        self.paths: dict[str, dict[str, dict[str, str]]] = {}  # next viewpoint towards a goal
        for scan, g in graphs.items():
            nav, adjacency = {}, g.adjacency
            for i, vp in enumerate(g.viewpoints):
                cands = []
                for j in np.flatnonzero(adjacency[i]).tolist():
                    h, e = edge_direction(g.positions[i], g.positions[j])
                    cands.append((g.viewpoints[j], h, e, g.edge_length(i, j), nearest_view(h, e)))
                nav[vp] = cands
            self.navigable[scan] = nav
            self.distances[scan] = {
                a: {b: float(g.distances[i, j]) for j, b in enumerate(g.viewpoints)}
                for i, a in enumerate(g.viewpoints)
            }
            self.paths[scan] = {
                a: {b: g.viewpoints[int(g.next_hop[i, j])] for j, b in enumerate(g.viewpoints)}
                for i, a in enumerate(g.viewpoints)
            }
        degree = max(len(c) for nav in self.navigable.values() for c in nav.values())
        self.max_degree = degree if max_degree is None else max_degree
        self.items = []
        for ep in episodes:
            for k, text in enumerate(ep.instructions):
                tokens = vocab.encode(text, max_instruction_len)
                padded = np.full(max_instruction_len, vocab.pad_id, dtype=np.int64)
                padded[: len(tokens)] = tokens
                self.items.append((ep.instr_id(k), ep.scan, ep.path[0], ep.path[-1], ep.heading, padded))
        self.instr_len, self.pad_id = max_instruction_len, vocab.pad_id
        self.generator = torch.Generator()
        self.finished: list[dict] = []

    # Episode stream, as NavVecEnv draws it.
    def _take(self, count: int) -> list[int]:
        if self.sequential:
            out = list(range(self.cursor, min(self.cursor + count, len(self.items))))
            self.cursor += len(out)
            return out
        while len(self.order) - self.cursor < count:
            self.order = (
                self.order[self.cursor :] + torch.randperm(len(self.items), generator=self.generator).tolist()
            )
            self.cursor = 0
        out = self.order[self.cursor : self.cursor + count]
        self.cursor += count
        return out

    def _start(self, env: int, item: int | None) -> None:
        if item is None:
            self.envs[env]["active"] = False
            return
        instr_id, scan, start, goal, heading, tokens = self.items[item]
        self.envs[env] = {
            "active": True,
            "instr_id": instr_id,
            "scan": scan,
            "vp": start,
            "goal": goal,
            "heading": heading,
            "step": 0,
            "tokens": tokens,
            "trajectory": [[start, heading, 0.0]],
        }

    def _angle(self, heading: float, elevation: float) -> list[float]:
        return [math.sin(heading), math.cos(heading), math.sin(elevation), math.cos(elevation)] * (
            self.angle_size // 4
        )

    def _episode_obs(self, state: dict) -> dict:
        """The R2R-style observation of one episode (feature array and candidates by reference)."""
        scan, vp, heading, goal = state["scan"], state["vp"], state["heading"], state["goal"]
        cands = self.navigable[scan][vp]
        if vp == goal:
            teacher = self.max_degree
        else:
            nxt = self.paths[scan][vp][goal]
            teacher = next(c for c, cand in enumerate(cands) if cand[0] == nxt)
        angles = [self._angle(h - heading, e) for _, h, e, _, _ in cands]
        return {
            "instr_id": state["instr_id"],
            "scan": scan,
            "viewpoint": vp,
            "heading": heading,
            "feature": self.features[feature_key(scan, vp)],
            "candidate": cands,
            "cand_angles": np.array(angles, dtype=np.float32).reshape(len(cands), self.angle_size),
            "instr_encoding": state["tokens"],
            "teacher": teacher,
            "distance": self.distances[scan][vp][goal],
            "step": state["step"],
        }

    def _observe(self) -> list[dict | None] | dict[str, np.ndarray]:
        # Rows that never had an episode observe nothing (None); inactive rows keep their last state.
        obs = [self._episode_obs(state) if "vp" in state else None for state in self.envs]
        return self.batch(obs) if self.observation == "features" else obs

    def batch(self, obs: Sequence[dict | None]) -> dict[str, np.ndarray]:
        """Per-episode observations copied into the batch arrays of ``NavVecEnv`` features mode."""
        n, k, d = len(obs), self.max_degree, self.feature_dim
        out = {
            "cand_feats": np.zeros((n, k + 1, d + self.angle_size), np.float32),
            "cand_mask": np.zeros((n, k + 1), bool),
            "instr_ids": np.full((n, self.instr_len), self.pad_id, np.int64),
            "teacher_action": np.zeros(n, np.int64),
            "distance": np.zeros(n, np.float32),
            "step": np.zeros(n, np.int64),
        }
        if self.observe_pano:
            out["pano_feats"] = np.zeros((n, NUM_VIEWS, d + self.angle_size), np.float32)
            elevation = np.stack([np.sin(VIEW_ELEVATIONS), np.cos(VIEW_ELEVATIONS)], -1)
        for row, ob in enumerate(obs):
            if ob is None:
                continue
            feature, count = ob["feature"], len(ob["candidate"])
            cand = out["cand_feats"][row]
            cand[:count, :d] = feature[[c[4] for c in ob["candidate"]]]
            cand[:count, d:] = ob["cand_angles"]
            out["cand_mask"][row, :count] = True
            out["cand_mask"][row, k] = True
            out["instr_ids"][row] = ob["instr_encoding"]
            out["teacher_action"][row] = ob["teacher"]
            out["distance"][row] = ob["distance"]
            out["step"][row] = ob["step"]
            if self.observe_pano:
                pano = out["pano_feats"][row]
                pano[:, :d] = feature
                rel = VIEW_HEADINGS - ob["heading"]
                angles = np.concatenate([np.stack([np.sin(rel), np.cos(rel)], -1), elevation], -1)
                pano[:, d:] = np.tile(angles, self.angle_size // 4)
        out["instr_mask"] = out["instr_ids"] != self.pad_id
        return out

    def reset(self, seed: int) -> list[dict | None] | dict[str, np.ndarray]:
        self.generator.manual_seed(seed)
        self.order, self.cursor, self.finished = [], 0, []
        self.envs: list[dict] = [{"active": False} for _ in range(self.num_envs)]
        self._start_rows(list(range(self.num_envs)))
        return self._observe()

    def _start_rows(self, rows: list[int]) -> None:
        items = self._take(len(rows))
        for idx, env in enumerate(rows):
            self._start(env, items[idx] if idx < len(items) else None)

    def step(self, actions: Sequence[int]) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        n = self.num_envs
        reward, terminated, truncated = np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
        for env, action in enumerate(actions):
            state = self.envs[env]
            if not state["active"]:
                continue
            scan, goal = state["scan"], state["goal"]
            before = self.distances[scan][state["vp"]][goal]
            state["step"] += 1
            if action == self.max_degree:
                terminated[env] = True
                reward[env] = self.success_bonus if before < self.success_distance else -self.failure_penalty
            else:
                nxt, heading, _, _, _ = self.navigable[scan][state["vp"]][action]
                state["vp"], state["heading"] = nxt, heading
                state["trajectory"].append([nxt, heading, 0.0])
                reward[env] = before - self.distances[scan][nxt][goal]
                truncated[env] = state["step"] >= self.max_steps
        done_rows = [env for env in range(n) if terminated[env] or truncated[env]]
        final = {env: self._episode_obs(self.envs[env]) for env in done_rows}
        for env in done_rows:
            self.finished.append(
                {"instr_id": self.envs[env]["instr_id"], "trajectory": self.envs[env]["trajectory"]}
            )
        self._start_rows(done_rows)
        obs = self._observe()
        if not done_rows:
            final_obs = obs
        elif self.observation == "indices":
            final_obs = [final.get(env, ob) for env, ob in enumerate(obs)]
        else:
            final_obs = {key: value.copy() for key, value in obs.items()}
            rows = self.batch(list(final.values()))
            for key in final_obs:
                final_obs[key][done_rows] = rows[key]
        return obs, reward, terminated, truncated, {"final_obs": final_obs}


# ---------------------------------------------------------------------------------------------------
# The benchmark


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
