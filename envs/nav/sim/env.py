"""``NavVecEnv``: a batched navigation simulator in pure torch.

Every graph of a split is packed into device tensors with one global viewpoint index space
(:class:`PackedGraphs`: neighbour table ``[V, K]`` with mask, edge headings/elevations/lengths, the
view facing each neighbour, per-scan all-pairs distances and teacher actions). From it
``envs/nav/sim/transitions.py`` builds the look-up records a step reads, laid out for few cache misses:
one per (viewpoint, action) with the outcome of the action, one per (episode goal, viewpoint) with
distance, teacher action and STOP reward, and one per *heading state* with the candidate part of the
observation. The agent always faces either its episode's start heading or the heading of the edge it
last travelled, so its heading is an index into those states. The view features live in a
:class:`~lodestar.envs.nav.sim.feature_table.FeatureTable` (``env.feature_table``).

The state of every env is a column of one field-major ``[11, N]`` table, so stepping, observing,
rewarding, teacher look-ups and episode starts are gathers and index copies with no Python loop over
episodes. At large batch the cost of a step is the number of tensor operations and the cache misses
of the gathers, not arithmetic: the hot path gathers into preallocated buffers read through views
made once, and ``observation="indices"`` copies nothing of size ``D``.

Action space (panoramic): ``a in [0, K)`` moves to candidate ``a`` (a navigable neighbour, in graph
order), ``a == K`` is STOP. With ``validate_actions=True`` (default, for trainers: a bad action is a
bug) an action outside the candidate mask raises ``ValueError``; with ``validate_actions=False`` such
an action is treated as STOP. The gymnasium id ``Lodestar/Nav-v0`` (and the SB3 adapter made from it)
defaults to ``validate_actions=False``, so every sample of ``action_space`` is legal to send there.

Spaces depend on the configuration and the dataset, never on the split: ``K`` is the largest degree
of any viewpoint of the whole dataset (:meth:`NavDataset.max_degree`, or ``max_degree=``, which must
cover every graph), ``L`` is ``max_instruction_len``, and index bounds of ``observation="indices"``
count every viewpoint of the dataset. A policy trained on one split therefore runs on all of them.

Headings are radians, clockwise from +y (heading of ``(dx, dy)`` is ``atan2(dx, dy)``); after a move
the agent faces along the edge it travelled. View ``ix`` of a panorama has absolute heading
``(ix % 12) * 30`` degrees and elevation ``(ix // 12 - 1) * 30`` degrees.

Rewards, like the R2R RL code: each move earns the reduction of the distance to the goal (or its sign
with ``move_reward="sign"``); STOP earns ``+success_bonus`` within ``success_distance`` of the goal
and ``-failure_penalty`` otherwise. STOP terminates; reaching ``max_steps`` actions truncates.
Autoreset follows ``envs/base.py`` (SAME_STEP, ``info["final_obs"]``).

Observation (dict of tensors, leading dim ``N``; ``A`` = ``angle_feature_size``), in both modes:

- ``cand_mask`` ``[N, K+1]`` (STOP always valid);
- ``instr_ids`` / ``instr_mask`` ``[N, L]``: ``<BOS> words <EOS>`` padded with ``<PAD>``;
- ``step`` ``[N]`` actions taken in the episode (space ``Discrete(max_steps + 1)``).

The default observation carries no oracle. ``oracle=True`` adds the shortest-path teacher action and
the distance to the goal: training signals (teacher forcing, DAgger labels, reward shaping), never
policy inputs:

- ``teacher_action`` ``[N]`` (next hop of the shortest path, STOP at the goal; ``Discrete(K+1)``),
  ``distance`` ``[N, 1]`` to the goal in metres.

``observation="features"`` (default) adds materialised visual features:

- ``cand_feats`` ``[N, K+1, D+A]``: feature of the view facing each candidate + angle features
  ``[sin, cos](heading relative to the agent), [sin, cos](elevation)``; padded slots and the last
  (STOP) slot are zero;
- ``pano_feats`` ``[N, 36, D+A]``: all views with angles relative to the agent heading (omitted with
  ``observe_pano=False``).

``observation="indices"`` adds compact tensors instead (nothing of size ``D`` is copied per step):

- ``cand_view`` ``[N, K+1]`` int64 row of ``env.feature_table`` (``viewpoint * 36 + view``) of each
  candidate, ``-1`` for padded slots and STOP; ``cand_angles`` ``[N, K+1, 4]``: the 4 distinct angle
  features ``[sin, cos](relative heading), [sin, cos](elevation)`` (zero where masked), which the
  features mode repeats to ``A`` (an index observation copies nothing of size ``A`` either);
- with ``observe_pano``: ``pano_index`` ``[N]`` global viewpoint of the panorama (``Discrete``) and
  ``heading`` ``[N, 2]`` ``(sin, cos)`` of the agent heading.

``env.feature_table.materialise(obs)`` turns an indices observation into exactly (bit for bit) the
features observation; a policy can instead gather on device in its forward pass.

Observation tensors are never written by the env while anything still holds them, and some are
shared between consecutive observations (``instr_ids``/``instr_mask`` change only when episodes
start): treat them as read-only. Index observations are new tensors every step. The features mode
writes ``cand_feats``/``pano_feats`` (and those of ``final_obs``) into a small pool of output buffers
(:class:`~lodestar.envs.nav.sim.feature_table.OutputBuffers`): a buffer is written again only once no
Python object refers to it and no view or numpy array shares its memory, so a kept observation
(a rollout, a replay buffer, SB3's last observation) stays as it was, and a stepping loop that drops
its observations allocates nothing per step (fresh tensors that large cost more than the gather).

``info`` holds, besides ``final_obs``/``episode_return``/``episode_length`` and ``active``, the
R2R metric ingredients of episodes that just ended (zero elsewhere): ``instruction_index`` (into
``env.instruction_ids``, -1 elsewhere), ``nav_error``, ``success``, ``oracle_success``,
``path_length`` and ``spl``. ``env.trajectories()`` returns finished episodes in the R2R submission
format (nDTW/CLS need the whole path; see ``envs/nav/eval/metrics.py``), replayed from a per-step log of
positions (``envs/nav/sim/trajectory_log.py``).

Episodes (one per instruction) come either from a seeded shuffled stream that cycles over the split
(``sequential=False``, training) or from a single ordered pass (``sequential=True``, evaluation):
envs left without an episode become inactive (``env.active``), ignore their actions, and
``env.all_done`` turns true once every instruction has finished. Episodes whose path is a single
viewpoint (the real R2R test split hides the goal) treat the start as the goal: their teacher,
distance and rewards are meaningless, but their trajectories are valid for a submission.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lodestar.envs.base import Observation, StepResult, VecEnv
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import NUM_VIEWS
from lodestar.envs.nav.data.r2r import Episode, validate_episodes
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.sim.feature_table import OutputBuffers
from lodestar.envs.nav.sim.packing import (
    FeatureSource,
    load_feature_table,
    pack_graphs,
)
from lodestar.envs.nav.sim.trajectory_log import TrajectoryLog
from lodestar.envs.nav.sim.transitions import RECORD_WIDTH, build_step_tables
from lodestar.runtime.device import resolve_device

OBSERVATION_MODES = ("features", "indices")


# The state is one field-major int64 table ``[11, N]``: 8 integer fields, then 3 float64 fields
# (``_floats`` views their bits). VP..LOCAL follow the record's NEXT_VP..NEXT_LOCAL so a step writes
# them with one copy; HEAD is the heading state, GOAL the first goal record of the episode's goal
# (its record at the agent's viewpoint is GOAL + LOCAL), REACHED whether the episode came within the
# success distance. Starting episodes is then one gather and one copy.
_EPISODE, _STEPS, _HEAD, _VP, _BASE, _LOCAL, _GOAL, _REACHED = range(8)
_DIST, _PATH, _SPL_SHORTEST = range(3)
_NUM_INTS = 8
# Stand-in shortest distance of episodes that start at their goal: SPL = s / max(tl, s) is then 1
# without moving and 0 (in float32) after any move, with no 0/0.
_TINY = 1e-300


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
        observation: str = "features",
        validate_actions: bool = True,
        record_trajectories: bool | None = None,
        oracle: bool = False,
    ) -> None:
        if num_envs < 1 or max_steps < 1:
            raise ValueError(f"num_envs ({num_envs}) and max_steps ({max_steps}) must be >= 1")
        if angle_feature_size < 4 or angle_feature_size % 4:
            raise ValueError(f"angle_feature_size must be a positive multiple of 4, got {angle_feature_size}")
        if move_reward not in ("distance", "sign"):
            raise ValueError(f"move_reward must be 'distance' or 'sign', got {move_reward!r}")
        if observation not in OBSERVATION_MODES:
            raise ValueError(f"observation must be one of {OBSERVATION_MODES}, got {observation!r}")
        self.dataset = dataset if isinstance(dataset, NavDataset) else NavDataset(dataset)
        self.device = resolve_device(device)
        self.num_envs, self.max_steps, self.sequential = num_envs, max_steps, sequential
        self.success_distance, self.success_bonus = success_distance, success_bonus
        self.failure_penalty, self.move_reward = failure_penalty, move_reward
        self.angle_feature_size, self.observe_pano = angle_feature_size, observe_pano
        self.observation = observation
        self.validate_actions = validate_actions
        # Adds the shortest-path teacher action and distance to goal: training signals, never policy inputs.
        self.oracle = oracle
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
        # Padded to the dataset's largest degree, not the split's, so every split has the same spaces.
        if max_degree is None:
            max_degree = max(self.dataset.max_degree(), 1)
        self.world = pack_graphs(graphs, self.device, max_degree)

        # Built on the CPU (read straight into the table), then moved: one copy in host memory.
        table = load_feature_table(features, self.dataset, graphs, feature_dtype, angle_feature_size)
        self.feature_table = table.to(self.device)
        self.feature_dim = self.feature_table.feature_dim
        self._outputs = OutputBuffers(self.feature_table, num_envs, observe_pano)

        self.vocab = vocab if vocab is not None else self.dataset.vocab()
        self._index_episodes(episodes, max_instruction_len)

        self.single_observation_space = gym.spaces.Dict(self._spaces(max_instruction_len))
        self.single_action_space = gym.spaces.Discrete(self.world.max_degree + 1)

        n, dev = num_envs, self.device
        self._bind_buffers(n)
        self._return = torch.zeros(n, dtype=torch.float32, device=dev)  # running raw episode return
        self._zero32 = torch.zeros((), dtype=torch.float32, device=dev)
        self._zero64 = torch.zeros((), dtype=torch.float64, device=dev)
        # Fill of (instruction_index, episode_length) for rows that did not finish.
        self._no_episode = torch.tensor([[-1], [0]], dtype=torch.int64, device=dev)
        self.active = torch.zeros(n, dtype=torch.bool, device=dev)
        self._has_idle = False
        self._generator = torch.Generator()
        self._order = torch.empty(0, dtype=torch.int64, device=dev)
        self._cursor = 0
        self._trajectories = TrajectoryLog(
            self.world.viewpoint_ids,
            self.instruction_ids,
            self._ep_state[_VP],
            self._ep_state[_HEAD],
            self._tables.head_angle,
        )
        self.seed = seed
        self._needs_reset = True

    def _index_episodes(self, episodes: list[Episode], max_instruction_len: int) -> None:
        """One episode per instruction: tokens, start and goal, the step tables, the start states."""
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
        dev, w = self.device, self.world
        self._ep_start = torch.tensor(starts, dtype=torch.int64, device=dev)
        self._ep_goal = torch.tensor(goals, dtype=torch.int64, device=dev)
        tokens, self._ep_token_mask = self.vocab.encode_batch(texts, max_instruction_len, device=dev)
        # Stored narrow (a quarter of the cache lines per gathered row), widened when observed.
        narrow = torch.int16 if len(self.vocab) <= torch.iinfo(torch.int16).max else torch.int32
        self._ep_tokens = tokens.to(narrow)
        self._tables = build_step_tables(
            w,
            self._ep_start,
            torch.tensor(headings, dtype=torch.float32, device=dev),
            self._ep_goal,
            self.success_distance,
            self.success_bonus,
            self.failure_penalty,
        )
        # The state every episode starts in: the [11, instructions] columns of the state table.
        instr = torch.arange(len(ids), device=dev)
        shortest = self._distance(self._ep_start, self._ep_goal)
        ep_ints = torch.stack([
            instr, torch.zeros_like(instr), self._tables.num_edges + instr, self._ep_start,
            self._tables.transition_base(self._ep_start), w.local[self._ep_start], self._tables.goal_base,
            (shortest < self.success_distance).long(),
        ])  # fmt: skip
        ep_floats = torch.stack([shortest, torch.zeros_like(shortest), shortest.clamp_min(_TINY)])
        self._ep_state = torch.cat([ep_ints, ep_floats.view(torch.int64)])

    def _bind_buffers(self, n: int) -> None:
        """The state table and the gather buffers, with their views made once.

        A step at large batch costs mostly per-call overhead of tensor operations, so the hot path
        gathers into these buffers (``out=``) and reads fields through views made here.
        """
        dev, tables = self.device, self._tables
        self._state = torch.zeros(len(self._ep_state), n, dtype=torch.int64, device=dev)
        self._ints, self._floats = self._state[:_NUM_INTS], self._state[_NUM_INTS:].view(torch.float64)
        s = self._ints
        self._s_episode, self._s_steps, self._s_head, self._s_vp, self._s_base = s[:_LOCAL]
        self._s_local, self._s_goal, self._s_reached = s[_LOCAL:]
        self._s_dist, self._s_path, self._s_spl_shortest = self._floats
        self._s_next = s[_VP : _LOCAL + 1]  # written from the record's next state
        self._s_index_length = s[_EPISODE : _STEPS + 1]
        self._s_position = s[_HEAD : _VP + 1]
        self._tokens = torch.zeros(n, self._ep_tokens.shape[1], dtype=self._ep_tokens.dtype, device=dev)
        self._token_mask = torch.zeros(n, self._ep_tokens.shape[1], dtype=torch.bool, device=dev)
        self._t = torch.empty(n, dtype=torch.int64, device=dev)
        self._records = torch.empty(n, RECORD_WIDTH, dtype=torch.int64, device=dev)
        self._rec = tables.record_views(self._records)
        self._goal_index = torch.empty(n, dtype=torch.int64, device=dev)
        self._goal_records = torch.empty(n, tables.goals.shape[1], dtype=torch.int64, device=dev)
        self._gv = tables.goal_views(self._goal_records)
        # Observation keys gathered straight from views of the observation-record table (one
        # contiguous output each, the record's cache lines shared), and keys copied from buffers.
        self._obs_gathered = tables.observation_views(tables.observations)
        if not self.observe_pano:
            del self._obs_gathered["heading"], self._obs_gathered["pano_index"]
        self._obs_copied = {"step": self._s_steps}
        if self.oracle:
            self._obs_copied["teacher_action"] = self._gv.teacher

    def _spaces(self, max_instruction_len: int) -> dict[str, gym.Space]:
        """Spaces of one env's observation: set by the configuration and the dataset, not the split.

        Scalars are ``Discrete`` (``step``, ``teacher_action``, ``pano_index``) or ``(1,)`` Boxes
        (``distance``): SB3 and gymnasium's checkers reject 0-d Boxes. Index bounds count every
        viewpoint of the dataset (a split's feature table holds fewer rows).
        """
        k, d, a = self.world.max_degree, self.feature_dim, self.angle_feature_size
        spaces: dict[str, gym.Space] = {}
        dataset_viewpoints = sum(g.num_viewpoints for g in self.dataset.graphs().values())
        # A split of episodes could name a scan missing from a partial scans.txt.
        viewpoints = max(dataset_viewpoints, self.world.num_viewpoints)
        if self.observation == "features":
            spaces["cand_feats"] = gym.spaces.Box(-np.inf, np.inf, (k + 1, d + a), np.float32)
        else:
            spaces["cand_view"] = gym.spaces.Box(-1, viewpoints * NUM_VIEWS - 1, (k + 1,), np.int64)
            spaces["cand_angles"] = gym.spaces.Box(-1.0, 1.0, (k + 1, 4), np.float32)
        spaces.update(
            # gymnasium's Box takes bool dtypes at runtime; its annotations list only float/int ones.
            cand_mask=gym.spaces.Box(0, 1, (k + 1,), np.bool_),  # type: ignore[arg-type]
            instr_ids=gym.spaces.Box(0, len(self.vocab) - 1, (max_instruction_len,), np.int64),
            instr_mask=gym.spaces.Box(0, 1, (max_instruction_len,), np.bool_),  # type: ignore[arg-type]
            step=gym.spaces.Discrete(self.max_steps + 1),
        )
        if self.oracle:
            spaces["teacher_action"] = gym.spaces.Discrete(k + 1)
            spaces["distance"] = gym.spaces.Box(0.0, np.inf, (1,), np.float32)
        if self.observe_pano and self.observation == "features":
            spaces["pano_feats"] = gym.spaces.Box(-np.inf, np.inf, (NUM_VIEWS, d + a), np.float32)
        elif self.observe_pano:
            spaces["pano_index"] = gym.spaces.Discrete(viewpoints)
            spaces["heading"] = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        return spaces

    # -- state views --------------------------------------------------------------------------------

    @property
    def _episode(self) -> torch.Tensor:
        """``[N]`` instruction index of each env's episode."""
        return self._ints[_EPISODE]

    @property
    def _vp(self) -> torch.Tensor:
        """``[N]`` global viewpoint of each env."""
        return self._ints[_VP]

    @property
    def _heading(self) -> torch.Tensor:
        """``[N]`` float32 absolute heading of each env."""
        return self._tables.head_angle[self._ints[_HEAD]]

    @property
    def _goal(self) -> torch.Tensor:
        """``[N]`` global goal viewpoint of each env."""
        return self._ep_goal[self._ints[_EPISODE]]

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
            out = torch.arange(self._cursor, stop, dtype=torch.int64, device=self.device)
            self._cursor = stop
            return out
        while self._order.numel() - self._cursor < count:
            fresh = torch.randperm(self.num_episodes, generator=self._generator).to(self.device)
            self._order = torch.cat([self._order[self._cursor :], fresh])
            self._cursor = 0
        out = self._order[self._cursor : self._cursor + count]
        self._cursor += count
        return out

    def _start(self, rows: torch.Tensor) -> None:
        """Start new episodes on ``rows`` (int64 indices, ascending); rows left over go inactive."""
        episodes = self._take(int(rows.numel()))
        started = rows
        if episodes.numel() < rows.numel():
            started = rows[: episodes.numel()]
            self.active[rows[episodes.numel() :]] = False
            self._has_idle = True
        self._state.index_copy_(1, started, self._ep_state.index_select(1, episodes))
        if self.record_trajectories:
            self._trajectories.started(started, episodes)
        # Instructions change only here. The narrow buffers are updated in place (reading the token
        # table only for the started rows); observations share the widened copies, never written.
        self._tokens.index_copy_(0, started, self._ep_tokens.index_select(0, episodes))
        self._token_mask.index_copy_(0, started, self._ep_token_mask.index_select(0, episodes))
        self._instr_ids, self._instr_mask = self._tokens.to(torch.int64), self._token_mask.clone()

    # -- look-ups -----------------------------------------------------------------------------------

    def _pair(self, vp: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.world.row_base[vp] + self.world.local[goal]

    def _distance(self, vp: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.world.distances[self._pair(vp, goal)]

    def _observe_indices(self) -> dict[str, torch.Tensor]:
        """The indices-mode observation of every env (no tensor the env later writes in place).

        The goal records of the current state stay in ``self._goal_records`` (step() reads them).
        """
        head = self._s_head
        torch.add(self._s_goal, self._s_local, out=self._goal_index)
        torch.index_select(self._tables.goals, 0, self._goal_index, out=self._goal_records)
        obs = {key: view.index_select(0, head) for key, view in self._obs_gathered.items()}
        obs.update((key, view.clone()) for key, view in self._obs_copied.items())
        obs["instr_ids"], obs["instr_mask"] = self._instr_ids, self._instr_mask
        if self.oracle:
            obs["distance"] = self._gv.distance.to(torch.float32).unsqueeze(1)
        return obs

    def _observe(self) -> dict[str, torch.Tensor]:
        """The observation of every env in this env's observation mode."""
        obs = self._observe_indices()
        return obs if self.observation == "indices" else self._materialise(obs)

    def _materialise(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The features observation of an index one, written into output buffers nobody holds."""
        return self.feature_table.materialise(obs, self._outputs.take(self.world.max_degree + 1))

    # -- the VecEnv protocol ------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self.seed = seed
        if self.seed is not None:
            self._generator.manual_seed(self.seed)
        else:
            self._generator.seed()
        self._order = torch.empty(0, dtype=torch.int64, device=self.device)
        self._cursor = 0
        self._trajectories.clear()
        self._return.zero_()
        self.active.fill_(True)
        self._has_idle = False
        # Rows that get no episode stay idle in the state they hold; give every row a valid one
        # first so the idle column they look up is a real viewpoint's, not the zeroed table's.
        self._state.copy_(self._ep_state[:, :1].expand_as(self._state))
        self._start(torch.arange(self.num_envs, device=self.device))
        self._needs_reset = False
        return self._observe()

    def _raise_invalid(self, actions: torch.Tensor, bad: torch.Tensor) -> None:
        k, w = self.world.max_degree, self.world
        rows = torch.nonzero(bad).flatten()
        details = "; ".join(
            f"env {r}: action {int(actions[r])} at viewpoint {w.viewpoint_ids[int(self._vp[r])]} "
            f"(valid: {torch.nonzero(w.neighbour_mask[self._vp[r]]).flatten().tolist()} or STOP={k})"
            for r in rows[:5].tolist()
        )
        raise ValueError(f"{rows.numel()} invalid navigation actions: {details}")

    def step(self, actions: torch.Tensor) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("NavVecEnv.step() called before reset()")
        actions = torch.as_tensor(actions, device=self.device)
        if actions.dtype != torch.int64 or actions.dim() != 1:
            actions = actions.reshape(-1).to(torch.int64)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {actions.shape[0]}")
        rec, goal, t, k = self._rec, self._gv, self._t, self.world.max_degree
        torch.clamp(actions, -1, k + 1, out=t).add_(self._s_base)
        if self._has_idle:
            torch.where(self.active, t, self._s_base + (k + 2), out=t)
        torch.index_select(self._tables.records, 0, t, out=self._records)
        if self.validate_actions and bool(rec.invalid.any()):
            self._raise_invalid(actions, rec.invalid)
        terminated = rec.stop.clone()
        self._s_next.copy_(rec.next_state)
        torch.where(rec.move, rec.head, self._s_head, out=self._s_head)
        self._s_steps.add_(self.active if self._has_idle else 1)
        self._s_path.add_(rec.length)
        truncated = rec.move & (self._s_steps >= self.max_steps)
        done = terminated | truncated
        if self.record_trajectories:
            self._trajectories.stepped(self._s_position)
        # The observation after the move (the final one of episodes that end now) also gathers the
        # goal records (distance, STOP reward, success) read below, until the next observation.
        final = self._observe_indices()
        progress = self._s_dist - goal.distance
        self._s_dist.copy_(goal.distance)
        self._s_reached.bitwise_or_(goal.success)
        if self.move_reward == "sign":
            progress = progress.sign()
        # A STOP does not move, so its progress is zero and the STOP reward replaces it.
        reward = torch.where(terminated, goal.stop_reward, progress).to(torch.float32)
        info = self._episode_info(reward, done)

        done_rows = torch.nonzero(done, as_tuple=True)[0]
        if done_rows.numel() == 0:
            obs = final
        else:
            if self.record_trajectories:
                self._trajectories.finished(done_rows)
            self._start(done_rows)
            obs = self._observe_indices()
        if self.observation == "features":
            obs = self._materialise(obs)
            final = obs if done_rows.numel() == 0 else self._materialise(final)
        info["final_obs"] = final
        info["active"] = self.active.clone()
        return obs, reward, terminated, truncated, info

    def _episode_info(self, reward: torch.Tensor, done: torch.Tensor) -> dict[str, Any]:
        """Episode statistics and metric ingredients of rows that just finished (zero elsewhere)."""
        self._return += reward
        episode_return = torch.where(done, self._return, self._zero32)
        self._return.masked_fill_(done, 0.0)
        index, length = torch.where(done, self._s_index_length, self._no_episode).unbind()
        success = done & self._gv.success
        tl, shortest = self._s_path, self._s_spl_shortest
        spl = shortest / torch.maximum(tl, shortest) * success
        stacked = torch.stack([self._gv.distance, tl, spl])
        nav_error, path_length, spl = torch.where(done, stacked, self._zero64).to(torch.float32).unbind()
        return {
            "episode_return": episode_return,
            "episode_length": length,
            "instruction_index": index,
            "nav_error": nav_error,
            "success": success,
            "oracle_success": torch.logical_and(done, self._s_reached),
            "path_length": path_length,
            "spl": spl,
        }

    def trajectories(self, clear: bool = False) -> list[dict[str, Any]]:
        """Finished episodes in the R2R submission format, in the order they finished.

        Each record is ``{"instr_id": "<path_id>_<k>", "trajectory": [[viewpoint, heading, 0.0], ...]}``
        starting at the episode's start. Requires ``record_trajectories`` (on in sequential mode).
        """
        if not self.record_trajectories:
            raise RuntimeError("trajectories are not recorded: create NavVecEnv(record_trajectories=True)")
        return self._trajectories.records(clear)
