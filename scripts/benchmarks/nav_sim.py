"""``nav-sim``: env steps/s of the batched ``NavVecEnv`` against a per-episode Python simulator.

The reference steps every episode in a Python loop over per-scan graph dicts, the way the R2R code
bases do (a dict of neighbours per viewpoint, dicts of shortest distances and paths, one observation
dict per episode copied into batch arrays for the agent). It computes the same observation content
as ``NavVecEnv`` (candidate features and angles, panorama, instruction tokens, teacher action,
distance, final observations at episode ends), and the benchmark asserts that both simulators follow
identical trajectories for the same actions.

Options: ``data=<dir>`` (default ``data/nav/benchmark`` when it exists, else a synthetic dataset sized
like R2R: 60 scans x ~100 viewpoints), ``features=<name>`` (random features when the dataset has
none), ``feature_dim=512``, ``batches=64,256,1024``, ``steps=<n>``, ``pano=1``, ``repeats=3``,
``threads=1`` (torch intra-op threads for NavVecEnv).

On CPU both simulators are bound by writing the observation tensors: at batch 1024 with D=512 one
step produces ~75 MB of panorama features (twice when episodes end, for ``final_obs``), and fresh
allocations of that size page-fault. The "memory floor" figures time nothing but fresh copies of
the same observation tensors, to show how close NavVecEnv is to that bound.
"""

from __future__ import annotations

import json
import math
import string
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from envs.nav.dataset import (
    NUM_VIEWS,
    Episode,
    NavDataset,
    feature_key,
    write_connectivity,
    write_features_hdf5,
    write_r2r,
    write_scans,
)
from envs.nav.graph import NavGraph
from envs.nav.simulator import VIEW_ELEVATIONS, VIEW_HEADINGS, NavVecEnv, edge_direction, nearest_view
from envs.nav.tokenizer import Vocab, build_vocab
from runtime.bench import Figure, report

DEFAULT_DATA = Path("data/nav/benchmark")
TARGET_SPEEDUP = 50.0
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
        success_distance: float = 3.0,
        success_bonus: float = 2.0,
        failure_penalty: float = 2.0,
    ) -> None:
        self.num_envs, self.max_steps, self.angle_size = num_envs, max_steps, angle_feature_size
        self.sequential, self.observe_pano = sequential, observe_pano
        self.success_distance, self.success_bonus, self.failure_penalty = (
            success_distance,
            success_bonus,
            failure_penalty,
        )
        self.features = features
        # Static geometry per scan: navigable neighbours in graph order with heading/elevation/length/view.
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
        _, scan, start, goal, heading, tokens = self.items[item]
        self.envs[env] = {
            "active": True,
            "item": item,
            "scan": scan,
            "vp": start,
            "goal": goal,
            "heading": heading,
            "step": 0,
            "tokens": tokens,
            "trajectory": [[start, heading, 0.0]],
            "return": 0.0,
        }

    def _angle(self, heading: float, elevation: float) -> list[float]:
        return [math.sin(heading), math.cos(heading), math.sin(elevation), math.cos(elevation)] * (
            self.angle_size // 4
        )

    def _observe_one(self, state: dict, out: dict[str, np.ndarray], row: int) -> None:
        scan, vp, heading = state["scan"], state["vp"], state["heading"]
        feats = self.features[feature_key(scan, vp)]
        d = feats.shape[1]
        cands = self.navigable[scan][vp]
        cand = out["cand_feats"][row]
        cand[:] = 0.0
        mask = out["cand_mask"][row]
        mask[:] = False
        for c, (_, h, e, _, view) in enumerate(cands):
            cand[c, :d] = feats[view]
            cand[c, d:] = self._angle(h - heading, e)
            mask[c] = True
        mask[self.max_degree] = True
        if self.observe_pano:
            pano = out["pano_feats"][row]
            pano[:, :d] = feats
            rel = VIEW_HEADINGS - heading
            base = np.stack([np.sin(rel), np.cos(rel), np.sin(VIEW_ELEVATIONS), np.cos(VIEW_ELEVATIONS)], -1)
            pano[:, d:] = np.tile(base, self.angle_size // 4)
        goal = state["goal"]
        if vp == goal:
            teacher = self.max_degree
        else:
            nxt = self.paths[scan][vp][goal]
            teacher = next(c for c, cand_info in enumerate(cands) if cand_info[0] == nxt)
        out["teacher_action"][row] = teacher
        out["distance"][row] = self.distances[scan][vp][goal]
        out["step"][row] = state["step"]
        out["instr_ids"][row] = state["tokens"]

    def _new_batch(self) -> dict[str, np.ndarray]:
        n, k, d = (
            self.num_envs,
            self.max_degree,
            next(iter(self.features.values())).shape[1] + self.angle_size,
        )
        batch = {
            "cand_feats": np.zeros((n, k + 1, d), np.float32),
            "cand_mask": np.zeros((n, k + 1), bool),
            "instr_ids": np.zeros((n, self.instr_len), np.int64),
            "teacher_action": np.zeros(n, np.int64),
            "distance": np.zeros(n, np.float32),
            "step": np.zeros(n, np.int64),
        }
        if self.observe_pano:
            batch["pano_feats"] = np.zeros((n, NUM_VIEWS, d), np.float32)
        return batch

    def _observe(self) -> dict[str, np.ndarray]:
        out = self._new_batch()
        for row, state in enumerate(self.envs):
            if "vp" in state:  # rows that never had an episode stay zero
                self._observe_one(state, out, row)
        out["instr_mask"] = out["instr_ids"] != self.pad_id
        return out

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        self.generator.manual_seed(seed)
        self.order, self.cursor, self.finished = [], 0, []
        self.envs: list[dict] = [{"active": False} for _ in range(self.num_envs)]
        self._start_rows(list(range(self.num_envs)))
        return self._observe()

    def _start_rows(self, rows: list[int]) -> None:
        items = self._take(len(rows))
        for idx, env in enumerate(rows):
            self._start(env, items[idx] if idx < len(items) else None)

    def step(self, actions: Sequence[int]) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
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
        final = self._new_batch() if done_rows else None
        for env in done_rows:
            self._observe_one(self.envs[env], final, env)
            item = self.envs[env]["item"]
            self.finished.append(
                {"instr_id": self.items[item][0], "trajectory": self.envs[env]["trajectory"]}
            )
        self._start_rows(done_rows)
        obs = self._observe()
        final_obs = obs
        if final is not None:
            final["instr_mask"] = final["instr_ids"] != self.pad_id
            final_obs = {key: value.copy() for key, value in obs.items()}
            for key in final_obs:
                final_obs[key][done_rows] = final[key][done_rows]
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


def _dataset(quick: bool, options: dict[str, str], tmp: str) -> tuple[NavDataset, dict[str, np.ndarray], str]:
    """The dataset to run on and a feature map for its train viewpoints (loaded or random)."""
    feature_dim = int(options.get("feature_dim", 512))
    data = Path(options["data"]) if "data" in options else DEFAULT_DATA
    if data.is_dir():
        dataset, label = NavDataset(data), str(data)
    elif "data" in options:
        raise FileNotFoundError(f"nav-sim: dataset directory not found: {data}")
    else:
        sizes = (
            dict(num_scans=12, viewpoints_per_scan=60)
            if quick
            else dict(num_scans=60, viewpoints_per_scan=100)
        )
        root = write_synthetic_dataset(Path(tmp) / "nav", feature_dim=feature_dim, feature_name=None, **sizes)
        dataset, label = NavDataset(root), f"synthetic {sizes['num_scans']} scans"
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


def _compare(vec: list, ref: list, env: NavVecEnv, sim: ReferenceNavSim, batch: int) -> None:
    """Assert both simulators produced the same per-step outputs and the same trajectories."""
    for t, (a, b) in enumerate(zip(vec, ref, strict=True)):
        for name, x, y in zip(
            ("reward", "terminated", "truncated", "teacher", "distance", "active"), a, b, strict=True
        ):
            x = x.numpy()
            same = np.allclose(x, y, atol=1e-4) if x.dtype.kind == "f" else np.array_equal(x, y)
            if not same:
                raise AssertionError(
                    f"nav-sim batch {batch}: '{name}' differs from the reference at step {t}"
                )
    got = [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in env.trajectories()]
    want = [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in sim.finished]
    if got != want:
        raise AssertionError(f"nav-sim batch {batch}: trajectories differ from the reference")


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


def _measure(
    dataset: NavDataset,
    features: dict[str, np.ndarray],
    sim: ReferenceNavSim,
    batch: int,
    steps: int,
    pano: bool,
    repeats: int,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Env steps/s of NavVecEnv and of the reference on the same action sequence, and the copy floor."""
    env = NavVecEnv(
        dataset, "train", batch, features=features, device="cpu", seed=seed, max_degree=sim.max_degree,
        observe_pano=pano, record_trajectories=True,
    )  # fmt: skip
    sim.num_envs, sim.observe_pano = batch, pano
    generator = torch.Generator().manual_seed(seed)
    obs, actions = env.reset(), []
    for _ in range(steps):  # untimed pass (also a warm-up): record actions valid along the way
        actions.append(random_actions(obs["cand_mask"], generator))
        obs = env.step(actions[-1])[0]
    plain = [a.tolist() for a in actions]

    def run_vec() -> list:
        out = []
        env.reset(seed)
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
            out.append(
                (reward, terminated, truncated, obs["teacher_action"], obs["distance"], info["active"])
            )
        return out

    def run_ref() -> list:
        out = []
        sim.reset(seed)
        for action in plain:
            ref_obs, reward, terminated, truncated, _ = sim.step(action)
            active = np.array([state["active"] for state in sim.envs])
            out.append(
                (reward, terminated, truncated, ref_obs["teacher_action"], ref_obs["distance"], active)
            )
        return out

    # Best of `repeats` timings for each simulator (the machine is shared and noisy).
    vec_time, ref_time = math.inf, math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        vec_out = run_vec()
        vec_time = min(vec_time, time.perf_counter() - start)
        start = time.perf_counter()
        ref_out = run_ref()
        ref_time = min(ref_time, time.perf_counter() - start)

    _compare(vec_out, ref_out, env, sim, batch)
    last, ref_last = env._observe(), sim._observe()
    for key, value in ref_last.items():
        if not np.allclose(last[key].numpy(), value, atol=1e-4):
            raise AssertionError(f"nav-sim batch {batch}: observation '{key}' differs from the reference")
    floor = _copy_floor(last, steps, repeats)
    return batch * steps / vec_time, batch * steps / ref_time, batch * steps / floor


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    batches = [int(b) for b in options.get("batches", "64,256,1024").split(",")]
    pano = options.get("pano", "1") not in ("0", "false", "no")
    default_steps = {64: 200, 256: 80, 1024: 30} if not quick else {64: 20, 256: 10, 1024: 5}
    repeats = int(options.get("repeats", 2 if quick else 3))
    # One thread by default: the reference runs on one core, and on a shared machine multi-threaded
    # gathers suffer from oversubscription far more than a single-threaded loop does.
    threads = int(options.get("threads", 1))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    # The default observation, plus the largest batch without the panorama to show what it costs.
    runs = [(batch, pano) for batch in batches]
    if pano and not quick:
        runs.append((max(batches), False))
    reference = "per-episode Python simulator (R2R style)"
    with tempfile.TemporaryDirectory() as tmp:
        dataset, features, label = _dataset(quick, options, tmp)
        episodes = dataset.episodes("train")
        graphs = {scan: dataset.graph(scan) for scan in sorted({ep.scan for ep in episodes})}
        sim = ReferenceNavSim(graphs, features, episodes, dataset.vocab(), 1)
        figures = []
        for batch, with_pano in runs:
            steps = int(options.get("steps", default_steps.get(batch, 30)))
            vec_rate, ref_rate, floor_rate = _measure(
                dataset, features, sim, batch, steps, with_pano, repeats
            )
            suffix = "" if with_pano else " (no panorama)"
            figures.append(
                Figure(
                    benchmark="nav-sim",
                    metric=f"env steps/s, batch {batch}{suffix}",
                    value=round(vec_rate, 1),
                    unit="steps/s",
                    reference=reference,
                    reference_value=round(ref_rate, 1),
                    target=TARGET_SPEEDUP if batch == 1024 and with_pano == pano else None,
                )
            )
            if batch == max(batches):
                figures.append(
                    Figure(
                        benchmark="nav-sim",
                        metric=f"env steps/s vs memory floor, batch {batch}{suffix}",
                        value=round(vec_rate, 1),
                        unit="steps/s",
                        reference="fresh copies of obs + final_obs only",
                        reference_value=round(floor_rate, 1),
                    )
                )
    torch.set_num_threads(previous_threads)
    dim = next(iter(features.values())).shape[1]
    title = f"nav-sim: NavVecEnv vs per-episode reference ({label}, D={dim}, {threads} torch thread(s))"
    report(figures, title + "; trajectories identical")
    return figures
