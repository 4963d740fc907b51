"""``NavVecEnv``: a batched navigation simulator in pure torch.

Every graph of a split is packed into device tensors with one global viewpoint index space:

- a neighbour table ``[V, K]`` (``K`` = max degree) with a mask, the absolute heading/elevation and
  length of each edge, and the index of the panorama view that faces it;
- per-scan all-pairs shortest distances and teacher actions, stored flat: the entry of ``(a, b)`` in
  scan ``s`` lives at ``pair_offset[s] + local(a) * V_s + local(b)``;
- the view features ``[V * 36 + 1, D + A]`` with zeroed angle columns (the extra zero row pads
  missing candidates), so each observation is one gather plus a small angle write.

The state of every env is a handful of ``[N]`` tensors, so stepping, observing, rewarding and
teacher look-ups are gathers with no Python loop over episodes.

Action space (panoramic): ``a in [0, K)`` moves to candidate ``a`` (a navigable neighbour, in graph
order), ``a == K`` is STOP. With ``validate_actions=True`` (default) an action outside the candidate
mask raises ``ValueError``; with ``validate_actions=False`` such an action is treated as STOP.

Headings are radians, clockwise from +y (heading of ``(dx, dy)`` is ``atan2(dx, dy)``); after a move
the agent faces along the edge it travelled. View ``ix`` of a panorama has absolute heading
``(ix % 12) * 30`` degrees and elevation ``(ix // 12 - 1) * 30`` degrees.

Rewards, like the R2R RL code: each move earns the reduction of the distance to the goal (or its sign
with ``move_reward="sign"``); STOP earns ``+success_bonus`` within ``success_distance`` of the goal
and ``-failure_penalty`` otherwise. STOP terminates; reaching ``max_steps`` actions truncates.
Autoreset follows ``envs/base.py`` (SAME_STEP, ``info["final_obs"]``).

Observation (dict of tensors, leading dim ``N``; ``A`` = ``angle_feature_size``):

- ``cand_feats`` ``[N, K+1, D+A]``: feature of the view facing each candidate + angle features
  ``[sin, cos](heading relative to the agent), [sin, cos](elevation)``; padded slots and the last
  (STOP) slot are zero; ``cand_mask`` ``[N, K+1]`` (STOP always valid);
- ``pano_feats`` ``[N, 36, D+A]``: all views with angles relative to the agent heading (omitted with
  ``observe_pano=False``);
- ``instr_ids`` / ``instr_mask`` ``[N, L]``: ``<BOS> words <EOS>`` padded with ``<PAD>``;
- ``teacher_action`` ``[N]`` (next hop of the shortest path, STOP at the goal), ``distance`` ``[N]``
  to the goal in metres, ``step`` ``[N]`` actions taken in the episode.

``info`` holds, besides ``final_obs``/``episode_return``/``episode_length`` and ``active``, the
R2R metric ingredients of episodes that just ended (zero elsewhere): ``instruction_index`` (into
``env.instruction_ids``, -1 elsewhere), ``nav_error``, ``success``, ``oracle_success``,
``path_length`` and ``spl``. ``env.trajectories()`` returns finished episodes in the R2R submission
format (nDTW/CLS need the whole path; see ``envs/nav/metrics.py``).

Episodes (one per instruction) come either from a seeded shuffled stream that cycles over the split
(``sequential=False``, training) or from a single ordered pass (``sequential=True``, evaluation):
envs left without an episode become inactive (``env.active``), ignore their actions, and
``env.all_done`` turns true once every instruction has finished. Episodes whose path is a single
viewpoint (the real R2R test split hides the goal) treat the start as the goal: their teacher,
distance and rewards are meaningless, but their trajectories are valid for a submission.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import EpisodeStatistics, Observation, StepResult, VecEnv
from envs.nav.dataset import NUM_VIEWS, Episode, NavDataError, NavDataset, validate_episodes
from envs.nav.graph import NavGraph
from envs.nav.tokenizer import Vocab
from runtime.device import resolve_device

VIEW_STEP = math.pi / 6  # 30 degrees between panorama views
VIEW_HEADINGS = np.arange(NUM_VIEWS) % 12 * VIEW_STEP
VIEW_ELEVATIONS = (np.arange(NUM_VIEWS) // 12 - 1) * VIEW_STEP


def edge_direction(src: np.ndarray, dst: np.ndarray) -> tuple[float, float]:
    """Heading (clockwise from +y) and elevation of the segment ``src -> dst``."""
    dx, dy, dz = (dst - src).tolist()
    return math.atan2(dx, dy), math.atan2(dz, math.hypot(dx, dy))


def nearest_view(heading: float, elevation: float) -> int:
    """Index of the panorama view whose direction is nearest ``(heading, elevation)``."""
    column = math.floor(heading / VIEW_STEP + 0.5) % 12
    row = 0 if elevation < -VIEW_STEP / 2 else (2 if elevation > VIEW_STEP / 2 else 1)
    return row * 12 + column


def angle_features(heading: torch.Tensor, elevation: torch.Tensor, size: int) -> torch.Tensor:
    """``[sin h, cos h, sin e, cos e]`` repeated to ``size`` (a multiple of 4) along a new last dim."""
    base = torch.stack([heading.sin(), heading.cos(), elevation.sin(), elevation.cos()], dim=-1)
    return base.repeat(*([1] * heading.dim()), size // 4)


@dataclass
class PackedGraphs:
    """All graphs of a split as device tensors (see the module docstring)."""

    scans: list[str]
    viewpoint_ids: list[str]  # global index -> viewpoint id
    scan_offset: np.ndarray  # [S + 1] first global index of each scan
    max_degree: int
    neighbours: torch.Tensor  # [V, K] int64 global index (0 where masked)
    neighbour_mask: torch.Tensor  # [V, K] bool
    edge_heading: torch.Tensor  # [V, K] float32 absolute heading of the edge
    edge_elevation: torch.Tensor  # [V, K] float32
    edge_length: torch.Tensor  # [V, K] float64
    edge_view: torch.Tensor  # [V, K] int64 view facing the neighbour
    local: torch.Tensor  # [V] int64 index within its scan
    row_base: torch.Tensor  # [V] int64 pair_offset[scan] + local * V_scan
    distances: torch.Tensor  # [sum V_s^2] float64
    teacher: torch.Tensor  # [sum V_s^2] int64 candidate slot of the next hop, K at the goal

    @property
    def num_viewpoints(self) -> int:
        return len(self.viewpoint_ids)

    def global_index(self, scan: str, viewpoint: str, graph: NavGraph) -> int:
        return int(self.scan_offset[self.scans.index(scan)]) + graph.index[viewpoint]


def pack_graphs(
    graphs: Sequence[NavGraph], device: torch.device, max_degree: int | None = None
) -> PackedGraphs:
    """Pack graphs into the tables of :class:`PackedGraphs`; candidates follow graph index order."""
    # One adjacency matrix per graph (NavGraph.neighbours rebuilds it on every call).
    neighbour_lists = [[np.flatnonzero(row).tolist() for row in g.adjacency] for g in graphs]
    degree = max((len(n) for lists in neighbour_lists for n in lists), default=0)
    if max_degree is None:
        max_degree = max(degree, 1)
    elif max_degree < degree:
        raise ValueError(f"max_degree={max_degree} is below the largest viewpoint degree {degree}")
    k = max_degree
    sizes = np.array([g.num_viewpoints for g in graphs])
    scan_offset = np.concatenate([[0], np.cumsum(sizes)])
    pair_offset = np.concatenate([[0], np.cumsum(sizes**2)])
    total = int(scan_offset[-1])
    nbr = np.zeros((total, k), dtype=np.int64)
    mask = np.zeros((total, k), dtype=bool)
    heading = np.zeros((total, k), dtype=np.float64)
    elevation = np.zeros((total, k), dtype=np.float64)
    length = np.zeros((total, k), dtype=np.float64)
    view = np.zeros((total, k), dtype=np.int64)
    local = np.zeros(total, dtype=np.int64)
    row_base = np.zeros(total, dtype=np.int64)
    distances = np.zeros(int(pair_offset[-1]), dtype=np.float64)
    teacher = np.zeros(int(pair_offset[-1]), dtype=np.int64)
    for s, graph in enumerate(graphs):
        n, base = graph.num_viewpoints, int(scan_offset[s])
        slot = np.full((n, n), k, dtype=np.int64)  # slot[a, b]: candidate index of neighbour b at a
        for a, neigh in enumerate(neighbour_lists[s]):
            g = base + a
            local[g], row_base[g] = a, int(pair_offset[s]) + a * n
            for c, b in enumerate(neigh):
                h, e = edge_direction(graph.positions[a], graph.positions[b])
                nbr[g, c], mask[g, c], heading[g, c], elevation[g, c] = base + b, True, h, e
                length[g, c], view[g, c] = graph.edge_length(a, b), nearest_view(h, e)
                slot[a, b] = c
        hop = graph.next_hop
        # Unreachable goals (next_hop == -1) and the goal itself map to STOP.
        table = np.where(hop >= 0, np.take_along_axis(slot, np.maximum(hop, 0), axis=1), k)
        np.fill_diagonal(table, k)
        span = slice(int(pair_offset[s]), int(pair_offset[s + 1]))
        distances[span], teacher[span] = graph.distances.reshape(-1), table.reshape(-1)

    def dev(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array).to(device=device, dtype=dtype)

    return PackedGraphs(
        scans=[g.scan for g in graphs],
        viewpoint_ids=[vp for g in graphs for vp in g.viewpoints],
        scan_offset=scan_offset,
        max_degree=k,
        neighbours=dev(nbr, torch.int64),
        neighbour_mask=dev(mask, torch.bool),
        edge_heading=dev(heading, torch.float32),
        edge_elevation=dev(elevation, torch.float32),
        edge_length=dev(length, torch.float64),
        edge_view=dev(view, torch.int64),
        local=dev(local, torch.int64),
        row_base=dev(row_base, torch.int64),
        distances=dev(distances, torch.float64),
        teacher=dev(teacher, torch.int64),
    )


FeatureSource = str | torch.Tensor | np.ndarray | Mapping[str, np.ndarray]


def _feature_table(
    source: FeatureSource, dataset: NavDataset, graphs: Sequence[NavGraph], dtype: torch.dtype
) -> torch.Tensor:
    """``[V, 36, D]`` features in packing order from a feature name, a tensor or a key->array map."""
    keys = NavDataset.viewpoint_keys(graphs)
    if isinstance(source, str):
        table = torch.from_numpy(np.asarray(dataset.load_features(source, [g.scan for g in graphs])))
    elif isinstance(source, Mapping):
        missing = [key for key in keys if key not in source]
        if missing:
            raise NavDataError(f"features: no entry for {len(missing)} viewpoints, e.g. {missing[:5]}")
        table = torch.from_numpy(np.stack([np.asarray(source[key]) for key in keys]))
    else:
        table = torch.as_tensor(source)
    if table.dim() != 3 or table.shape[0] != len(keys) or table.shape[1] != NUM_VIEWS:
        raise NavDataError(
            f"features: expected shape [{len(keys)}, {NUM_VIEWS}, D] (viewpoints of the split in "
            f"packing order), got {list(table.shape)}"
        )
    return table.to(dtype)


class NavVecEnv(VecEnv):
    """Batched vision-language navigation over one split of a :class:`NavDataset` (see module doc)."""

    def __init__(
        self,
        dataset: NavDataset | str | Path,
        split: str | Sequence[Episode],
        num_envs: int,
        *,
        features: FeatureSource,
        device: str | torch.device = "auto",
        max_steps: int = 15,
        seed: int | None = None,
        sequential: bool = False,
        success_distance: float = 3.0,
        success_bonus: float = 2.0,
        failure_penalty: float = 2.0,
        move_reward: str = "distance",
        angle_feature_size: int = 4,
        max_instruction_len: int = 80,
        max_degree: int | None = None,
        vocab: Vocab | None = None,
        feature_dtype: torch.dtype = torch.float32,
        observe_pano: bool = True,
        validate_actions: bool = True,
        record_trajectories: bool | None = None,
    ) -> None:
        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"num_envs ({num_envs}) and max_steps ({max_steps}) must be >= 1")
        if angle_feature_size < 4 or angle_feature_size % 4:
            raise ValueError(f"angle_feature_size must be a positive multiple of 4, got {angle_feature_size}")
        if move_reward not in ("distance", "sign"):
            raise ValueError(f"move_reward must be 'distance' or 'sign', got {move_reward!r}")
        self.dataset = dataset if isinstance(dataset, NavDataset) else NavDataset(dataset)
        self.device = resolve_device(device)
        self.num_envs, self.max_steps, self.sequential = num_envs, max_steps, sequential
        self.success_distance, self.success_bonus = success_distance, success_bonus
        self.failure_penalty, self.move_reward = failure_penalty, move_reward
        self.angle_feature_size, self.observe_pano = angle_feature_size, observe_pano
        self.validate_actions = validate_actions
        self.record_trajectories = sequential if record_trajectories is None else record_trajectories

        if isinstance(split, str):
            episodes, self.split_name = self.dataset.episodes(split), split
        else:
            episodes, self.split_name = list(split), "<episodes>"
        scans = sorted({ep.scan for ep in episodes})
        graphs = [self.dataset.graph(scan) for scan in scans]
        if not isinstance(split, str):
            validate_episodes(episodes, dict(zip(scans, graphs, strict=True)), "episodes")
        self.graphs = dict(zip(scans, graphs, strict=True))
        self.world = pack_graphs(graphs, self.device, max_degree)
        k = self.world.max_degree

        feats = _feature_table(features, self.dataset, graphs, feature_dtype)
        self.feature_dim = int(feats.shape[-1])
        # One row per (viewpoint, view) with zeroed columns reserved for the angle features, plus a
        # zero row that padded candidates point to: an observation is then a single gather.
        self._table = torch.zeros(
            feats.shape[0] * NUM_VIEWS + 1, self.feature_dim + angle_feature_size, dtype=feature_dtype
        )
        self._table[:-1, : self.feature_dim] = feats.reshape(-1, self.feature_dim)
        self._table = self._table.to(self.device)
        self._zero_row = self._table.shape[0] - 1
        del feats

        self.vocab = vocab if vocab is not None else self.dataset.vocab()
        texts, starts, goals, headings, ids = [], [], [], [], []
        for ep in episodes:
            graph = self.graphs[ep.scan]
            for k_instr, text in enumerate(ep.instructions):
                texts.append(text)
                ids.append(ep.instr_id(k_instr))
                starts.append(self.world.global_index(ep.scan, ep.path[0], graph))
                goals.append(self.world.global_index(ep.scan, ep.path[-1], graph))
                headings.append(ep.heading)
        if not ids:
            raise ValueError(f"split {self.split_name!r} has no instructions")
        self.instruction_ids: list[str] = ids
        self.episodes = episodes
        self._ep_start = torch.tensor(starts, dtype=torch.int64, device=self.device)
        self._ep_goal = torch.tensor(goals, dtype=torch.int64, device=self.device)
        self._ep_heading = torch.tensor(headings, dtype=torch.float32, device=self.device)
        self._ep_shortest = self._distance(self._ep_start, self._ep_goal)
        self._ep_tokens, self._ep_token_mask = self.vocab.encode_batch(
            texts, max_instruction_len, device=self.device
        )

        d, a, n = self.feature_dim, angle_feature_size, num_envs
        spaces = {
            "cand_feats": gym.spaces.Box(-np.inf, np.inf, (k + 1, d + a), np.float32),
            "cand_mask": gym.spaces.Box(0, 1, (k + 1,), np.bool_),
            "instr_ids": gym.spaces.Box(0, len(self.vocab) - 1, (max_instruction_len,), np.int64),
            "instr_mask": gym.spaces.Box(0, 1, (max_instruction_len,), np.bool_),
            "teacher_action": gym.spaces.Box(0, k, (), np.int64),
            "distance": gym.spaces.Box(0.0, np.inf, (), np.float32),
            "step": gym.spaces.Box(0, max_steps, (), np.int64),
        }
        if observe_pano:
            spaces["pano_feats"] = gym.spaces.Box(-np.inf, np.inf, (NUM_VIEWS, d + a), np.float32)
        self.single_observation_space = gym.spaces.Dict(spaces)
        self.single_action_space = gym.spaces.Discrete(k + 1)

        dev = self.device
        self._view_heading = torch.tensor(VIEW_HEADINGS, dtype=torch.float32, device=dev)
        self._view_elevation = torch.tensor(VIEW_ELEVATIONS, dtype=torch.float32, device=dev)
        self._view_offsets = torch.arange(NUM_VIEWS, device=dev)
        self._episode = torch.zeros(n, dtype=torch.int64, device=dev)
        self._vp = torch.zeros(n, dtype=torch.int64, device=dev)
        self._goal = torch.zeros(n, dtype=torch.int64, device=dev)
        self._heading = torch.zeros(n, dtype=torch.float32, device=dev)
        self._steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self._path_length = torch.zeros(n, dtype=torch.float64, device=dev)
        self._min_distance = torch.zeros(n, dtype=torch.float64, device=dev)
        self.active = torch.zeros(n, dtype=torch.bool, device=dev)
        self._traj_vp = torch.zeros(n, max_steps + 1, dtype=torch.int64, device=dev)
        self._traj_heading = torch.zeros(n, max_steps + 1, dtype=torch.float32, device=dev)
        self._traj_len = torch.ones(n, dtype=torch.int64, device=dev)
        self._stats = EpisodeStatistics(n, dev)
        self._generator = torch.Generator()
        self._order = torch.empty(0, dtype=torch.int64)
        self._cursor = 0
        self._finished: list[tuple[torch.Tensor, ...]] = []
        self.seed = seed
        self._needs_reset = True

    # -- episode sampling ---------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Number of instructions in the split (one episode each)."""
        return len(self.instruction_ids)

    @property
    def all_done(self) -> bool:
        """Sequential mode: every instruction of the split has finished."""
        return self.sequential and self._cursor >= self.num_episodes and not bool(self.active.any())

    def _take(self, count: int) -> torch.Tensor:
        """The next ``count`` episode indices (fewer in sequential mode once the pass is exhausted)."""
        if self.sequential:
            stop = min(self._cursor + count, self.num_episodes)
            out = torch.arange(self._cursor, stop, dtype=torch.int64)
            self._cursor = stop
            return out.to(self.device)
        while self._order.numel() - self._cursor < count:
            fresh = torch.randperm(self.num_episodes, generator=self._generator)
            self._order = torch.cat([self._order[self._cursor :], fresh])
            self._cursor = 0
        out = self._order[self._cursor : self._cursor + count]
        self._cursor += count
        return out.to(self.device)

    def _start(self, rows: torch.Tensor) -> None:
        """Start new episodes on ``rows`` (int64 indices, ascending); rows left over go inactive."""
        episodes = self._take(int(rows.numel()))
        started, idle = rows[: episodes.numel()], rows[episodes.numel() :]
        self.active[idle] = False
        self.active[started] = True
        start = self._ep_start[episodes]
        self._episode[started] = episodes
        self._vp[started] = start
        self._goal[started] = self._ep_goal[episodes]
        self._heading[started] = self._ep_heading[episodes]
        self._steps[started] = 0
        self._path_length[started] = 0.0
        self._min_distance[started] = self._distance(start, self._ep_goal[episodes])
        self._traj_vp[started, 0] = start
        self._traj_len[started] = 1
        self._traj_heading[started, 0] = self._ep_heading[episodes]

    # -- look-ups -----------------------------------------------------------------------------------

    def _pair(self, vp: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.world.row_base[vp] + self.world.local[goal]

    def _distance(self, vp: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.world.distances[self._pair(vp, goal)]

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Float32 ``[*rows.shape, D + A]`` rows of the feature table (angle columns still zero)."""
        out = self._table.index_select(0, rows.reshape(-1)).view(*rows.shape, self._table.shape[1])
        return out.to(torch.float32)

    def _observe(self, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Observation of every env, or only of ``rows``."""
        vp, heading, episode, goal, steps = self._vp, self._heading, self._episode, self._goal, self._steps
        if rows is not None:
            vp, heading, episode, goal, steps = (
                vp[rows],
                heading[rows],
                episode[rows],
                goal[rows],
                steps[rows],
            )
        w, a_size, n = self.world, self.angle_feature_size, vp.shape[0]
        mask = w.neighbour_mask[vp]
        # Padded candidates and the STOP slot read the zero row; angles fill the reserved columns.
        feat_rows = torch.where(mask, vp[:, None] * NUM_VIEWS + w.edge_view[vp], self._zero_row)
        feat_rows = torch.cat([feat_rows, feat_rows.new_full((n, 1), self._zero_row)], dim=1)
        cand = self._gather(feat_rows)
        cand_ang = angle_features(w.edge_heading[vp] - heading[:, None], w.edge_elevation[vp], a_size)
        cand[:, :-1, self.feature_dim :] = cand_ang * mask[..., None]
        obs = {
            "cand_feats": cand,
            "cand_mask": torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1),
            "instr_ids": self._ep_tokens[episode],
            "instr_mask": self._ep_token_mask[episode],
            "teacher_action": w.teacher[self._pair(vp, goal)],
            "distance": self._distance(vp, goal).to(torch.float32),
            "step": steps.clone(),
        }
        if self.observe_pano:
            pano = self._gather(vp[:, None] * NUM_VIEWS + self._view_offsets)
            rel = self._view_heading[None, :] - heading[:, None]
            pano[..., self.feature_dim :] = angle_features(rel, self._view_elevation.expand_as(rel), a_size)
            obs["pano_feats"] = pano
        return obs

    # -- the VecEnv protocol ------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self.seed = seed
        if self.seed is not None:
            self._generator.manual_seed(self.seed)
        else:
            self._generator.seed()
        self._order = torch.empty(0, dtype=torch.int64)
        self._cursor = 0
        self._finished = []
        self._stats.reset()
        self._start(torch.arange(self.num_envs, device=self.device))
        self._needs_reset = False
        return self._observe()

    def _check_actions(self, actions: torch.Tensor) -> None:
        k = self.world.max_degree
        ok = (actions >= 0) & (actions <= k)
        slot = actions.clamp(0, max(k - 1, 0))
        ok &= (actions == k) | self.world.neighbour_mask[self._vp, slot]
        bad = torch.nonzero(~ok & self.active).flatten()
        if bad.numel():
            rows = bad[:5].tolist()
            details = "; ".join(
                f"env {r}: action {int(actions[r])} at viewpoint {self.world.viewpoint_ids[int(self._vp[r])]} "
                f"(valid: {torch.nonzero(self.world.neighbour_mask[self._vp[r]]).flatten().tolist()} or STOP={k})"
                for r in rows
            )
            raise ValueError(f"{bad.numel()} invalid navigation actions: {details}")

    def step(self, actions: torch.Tensor) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("NavVecEnv.step() called before reset()")
        actions = torch.as_tensor(actions, device=self.device).to(torch.int64).reshape(-1)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {actions.shape[0]}")
        if self.validate_actions:
            self._check_actions(actions)
        w, k, active = self.world, self.world.max_degree, self.active
        slot = actions.clamp(0, max(k - 1, 0))
        valid_move = (actions >= 0) & (actions < k) & w.neighbour_mask[self._vp, slot]
        move = valid_move & active
        stop = ~valid_move & active
        before = self._distance(self._vp, self._goal)
        new_vp = torch.where(move, w.neighbours[self._vp, slot], self._vp)
        after = self._distance(new_vp, self._goal)
        self._heading = torch.where(move, w.edge_heading[self._vp, slot], self._heading)
        self._path_length += torch.where(move, w.edge_length[self._vp, slot], 0.0)
        self._vp = new_vp
        self._steps += active.to(torch.int64)
        self._min_distance = torch.minimum(self._min_distance, after)

        progress = before - after
        if self.move_reward == "sign":
            progress = progress.sign()
        success = after < self.success_distance
        stop_reward = torch.where(success, self.success_bonus, -self.failure_penalty)
        reward = torch.where(move, progress, torch.where(stop, stop_reward.to(progress.dtype), 0.0))
        reward = reward.to(torch.float32)
        terminated = stop
        truncated = move & (self._steps >= self.max_steps)
        done = terminated | truncated

        if self.record_trajectories:
            # Moves append at column `_traj_len`; other rows rewrite that cell with its own value.
            column = self._traj_len.clamp(max=self.max_steps)[:, None]
            keep_vp, keep_heading = self._traj_vp.gather(1, column), self._traj_heading.gather(1, column)
            self._traj_vp.scatter_(1, column, torch.where(move[:, None], new_vp[:, None], keep_vp))
            self._traj_heading.scatter_(
                1, column, torch.where(move[:, None], self._heading[:, None], keep_heading)
            )
            self._traj_len += move.to(torch.int64)
        episode_return, episode_length = self._stats.update(reward, done)
        info = self._episode_info(done, success, after)
        info["episode_return"], info["episode_length"] = episode_return, episode_length

        done_rows = torch.nonzero(done).flatten()
        if done_rows.numel() == 0:
            obs = self._observe()
            info["final_obs"] = obs
        else:
            final = self._observe(done_rows)
            if self.record_trajectories:
                self._finished.append(
                    tuple(
                        t[done_rows].cpu()
                        for t in (self._episode, self._traj_vp, self._traj_heading, self._traj_len)
                    )
                )
            self._start(done_rows)
            obs = self._observe()
            info["final_obs"] = {key: obs[key].index_copy(0, done_rows, final[key]) for key in obs}
        info["active"] = self.active.clone()
        return obs, reward, terminated, truncated, info

    def _episode_info(self, done: torch.Tensor, success: torch.Tensor, ne: torch.Tensor) -> dict[str, Any]:
        """Per-episode metric ingredients for rows that just finished (zero elsewhere)."""
        shortest = self._ep_shortest[self._episode]
        tl = self._path_length
        denominator = torch.maximum(tl, shortest)
        spl = torch.where(
            denominator > 0,
            success.to(torch.float64) * shortest / denominator.clamp_min(1e-12),
            success.double(),
        )
        zero = torch.zeros((), dtype=torch.float32, device=self.device)
        return {
            "instruction_index": torch.where(done, self._episode, -1),
            "nav_error": torch.where(done, ne.to(torch.float32), zero),
            "success": done & success,
            "oracle_success": done & (self._min_distance < self.success_distance),
            "path_length": torch.where(done, tl.to(torch.float32), zero),
            "spl": torch.where(done, spl.to(torch.float32), zero),
        }

    def trajectories(self, clear: bool = False) -> list[dict[str, Any]]:
        """Finished episodes in the R2R submission format, in the order they finished.

        Each record is ``{"instr_id": "<path_id>_<k>", "trajectory": [[viewpoint, heading, 0.0], ...]}``
        starting at the episode's start. Requires ``record_trajectories`` (on in sequential mode).
        """
        if not self.record_trajectories:
            raise RuntimeError("trajectories are not recorded: create NavVecEnv(record_trajectories=True)")
        records = []
        ids = self.world.viewpoint_ids
        for episodes, vps, headings, lengths in self._finished:
            for ep, vp_row, heading_row, length in zip(
                episodes.tolist(), vps.tolist(), headings.tolist(), lengths.tolist(), strict=True
            ):
                trajectory = [[ids[vp_row[j]], heading_row[j], 0.0] for j in range(length)]
                records.append({"instr_id": self.instruction_ids[ep], "trajectory": trajectory})
        if clear:
            self._finished = []
        return records
