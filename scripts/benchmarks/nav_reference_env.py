"""The per-episode reference simulator behind the trainer's env interface (the ``nav-throughput`` reference).

:class:`ReferenceVecEnv` takes :class:`~lodestar.envs.nav.sim.env.NavVecEnv`'s constructor arguments
and presents what the fine-tuning trainer and the greedy evaluator read from it: the index
observation of ``observation="indices"`` (same keys, dtypes, shapes and device; the teacher action
and distance with ``oracle=True``), rewards, terminations, the ``info`` keys (``final_obs``,
episode statistics, R2R metric ingredients, ``active``), ``feature_table`` for the follower's gather,
``world`` (the packed graph index space DAgger rebuilds walks in), the spaces, and for sequential
evaluation ``all_done``, ``active`` and ``trajectories()``.

The stepping is :class:`~benchmarks.nav_reference.ReferenceNavSim`'s, a Python loop over episodes on
dict graphs as the R2R code bases write it (the same simulator the ``nav-sim`` benchmark checks
against ``NavVecEnv``). Its list of per-episode observation dicts is batched into tensors here the
way an R2R agent batches them before its forward pass (a Python loop over the episodes filling
arrays: candidate view rows, angle features, masks, instruction encodings), and the per-episode
statistics of finished episodes are computed from their trajectories, as R2R agents and evaluators
do. Setup (packing the index space, loading the feature table, building the dicts) is not stepping
and costs what it costs; only ``reset`` and ``step`` are on the timed path.

Pass the class as ``env_factory`` to :class:`~lodestar.agents.vln.finetune.FinetuneTrainer`,
:func:`~lodestar.agents.vln.finetune.make_train_env` or :func:`~lodestar.agents.vln.evaluate.make_eval_env`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from benchmarks.nav_reference import ReferenceNavSim
from lodestar.envs.base import Observation, StepResult, VecEnv
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import NUM_VIEWS
from lodestar.envs.nav.data.r2r import Episode, validate_episodes
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.envs.nav.sim.packing import FeatureSource, load_feature_table, pack_graphs
from lodestar.runtime.device import resolve_device

# Stand-in shortest distance of episodes that start at their goal, as NavVecEnv uses (SPL without 0/0).
_TINY = 1e-300


class ReferenceVecEnv(VecEnv):
    """``NavVecEnv``'s trainer interface over the per-episode :class:`ReferenceNavSim` (see module doc).

    Only the index observation is offered (the mode trainers and evaluators step); a sequential env
    needs at most one row per instruction (as :func:`make_eval_env` builds it).
    """

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
        observation: str = "indices",
        validate_actions: bool = True,
        record_trajectories: bool | None = None,
        oracle: bool = False,
    ) -> None:
        if observation != "indices":
            raise ValueError(
                f"ReferenceVecEnv offers the trainer's index observations only, got observation={observation!r}"
            )
        if move_reward not in ("distance", "sign"):
            raise ValueError(f"move_reward must be 'distance' or 'sign', got {move_reward!r}")
        self.dataset = dataset if isinstance(dataset, NavDataset) else NavDataset(dataset)
        self.device = resolve_device(device)
        self.num_envs, self.max_steps, self.sequential, self.seed = num_envs, max_steps, sequential, seed
        self.success_distance, self.success_bonus = success_distance, success_bonus
        self.failure_penalty, self.move_reward = failure_penalty, move_reward
        self.angle_feature_size, self.observe_pano, self.observation = (
            angle_feature_size,
            observe_pano,
            observation,
        )
        self.validate_actions, self.oracle = validate_actions, oracle
        self.record_trajectories = sequential if record_trajectories is None else record_trajectories

        if isinstance(split, str):
            episodes, self.split_name = self.dataset.episodes(split), split
        else:
            episodes, self.split_name = list(split), "<episodes>"
        scans = sorted({ep.scan for ep in episodes})
        self.graphs = {scan: self.dataset.graph(scan) for scan in scans}
        if not isinstance(split, str):
            validate_episodes(episodes, self.graphs, "episodes")
        self.episodes = episodes
        # The index space of the feature table (and of DAgger's walks): NavVecEnv's packing.
        if max_degree is None:
            max_degree = max(self.dataset.max_degree(), 1)
        self.world = pack_graphs(list(self.graphs.values()), self.device, max_degree)
        table = load_feature_table(
            features, self.dataset, list(self.graphs.values()), feature_dtype, angle_feature_size
        )
        self.feature_table = table.to(self.device)
        self.feature_dim = self.feature_table.feature_dim
        self.vocab = vocab if vocab is not None else self.dataset.vocab()

        # The reference hands out each viewpoint's [36, D] array by reference: views of the table.
        views = table.view_features.numpy()
        keys = NavDataset.viewpoint_keys(self.graphs.values())
        self.sim = ReferenceNavSim(
            self.graphs, dict(zip(keys, views, strict=True)), episodes, self.vocab, num_envs,
            max_steps=max_steps, angle_feature_size=angle_feature_size,
            max_instruction_len=max_instruction_len, max_degree=max_degree, sequential=sequential,
            observe_pano=observe_pano, observation="indices", success_distance=success_distance,
            success_bonus=success_bonus, failure_penalty=failure_penalty,
        )  # fmt: skip
        self.instruction_ids = [item[0] for item in self.sim.items]
        if not self.instruction_ids:
            raise ValueError(f"split {self.split_name!r} has no instructions")
        if sequential and num_envs > self.num_episodes:
            raise ValueError(
                f"ReferenceVecEnv: {num_envs} rows for {self.num_episodes} instructions in sequential mode "
                "(rows without an episode would never start; use at most one row per instruction)"
            )
        self._item_of = {instr_id: i for i, instr_id in enumerate(self.instruction_ids)}
        # First feature-table row (global viewpoint * 36) of every viewpoint, and edge lengths.
        self._view_base = {
            scan: {vp: (int(self.world.scan_offset[s]) + i) * NUM_VIEWS for i, vp in enumerate(g.viewpoints)}
            for s, (scan, g) in enumerate(self.graphs.items())
        }
        self._edge_length = {
            scan: {vp: {c[0]: c[3] for c in cands} for vp, cands in nav.items()}
            for scan, nav in self.sim.navigable.items()
        }
        # NavVecEnv's spaces, from its own method: they depend only on settings this env shares.
        self.single_observation_space = gym.spaces.Dict(NavVecEnv._spaces(self, max_instruction_len))
        self.single_action_space = gym.spaces.Discrete(self.world.max_degree + 1)
        self.active = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._return = np.zeros(num_envs, np.float32)
        self._cand_mask: torch.Tensor | None = None

    @property
    def max_degree(self) -> int:
        return self.world.max_degree

    @property
    def num_episodes(self) -> int:
        """Number of instructions in the split (one episode each)."""
        return len(self.instruction_ids)

    @property
    def all_done(self) -> bool:
        """Sequential mode: every instruction of the split has finished."""
        sim = self.sim
        return self.sequential and sim.cursor >= len(sim.items) and not any(s["active"] for s in sim.envs)

    # -- the agent-side batching of per-episode observations ----------------------------------------

    def _batch(self, obs: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Per-episode observation dicts -> the index observation tensors of ``NavVecEnv``."""
        n, slots, length = len(obs), self.max_degree + 1, self.sim.instr_len
        cand_view = np.full((n, slots), -1, np.int64)
        cand_angles = np.zeros((n, slots, 4), np.float32)
        cand_mask = np.zeros((n, slots), bool)
        cand_mask[:, -1] = True  # STOP
        instr_ids = np.empty((n, length), np.int64)
        step = np.empty(n, np.int64)
        teacher = np.empty(n, np.int64)
        distance = np.empty((n, 1), np.float32)
        pano_index = np.empty(n, np.int64)
        heading = np.empty((n, 2), np.float32)
        for row, ob in enumerate(obs):
            cands, base = ob["candidate"], self._view_base[ob["scan"]][ob["viewpoint"]]
            count = len(cands)
            cand_view[row, :count] = [base + cand[4] for cand in cands]
            cand_angles[row, :count] = ob["cand_angles"]
            cand_mask[row, :count] = True
            instr_ids[row] = ob["instr_encoding"]
            step[row] = ob["step"]
            teacher[row], distance[row, 0] = ob["teacher"], ob["distance"]
            pano_index[row] = base // NUM_VIEWS
            heading[row] = np.sin(ob["heading"]), np.cos(ob["heading"])
        arrays = {
            "cand_view": cand_view,
            "cand_angles": cand_angles,
            "cand_mask": cand_mask,
            "step": step,
            "instr_ids": instr_ids,
            "instr_mask": instr_ids != self.sim.pad_id,
        }
        if self.oracle:
            arrays.update(teacher_action=teacher, distance=distance)
        if self.observe_pano:
            arrays.update(pano_index=pano_index, heading=heading)
        return {key: torch.from_numpy(value).to(self.device) for key, value in arrays.items()}

    # -- the VecEnv protocol ------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self.seed = seed
        # No seed: a fresh one, as NavVecEnv draws its stream from an unseeded generator.
        first = self.sim.reset(self.seed if self.seed is not None else torch.Generator().seed())
        self._return.fill(0.0)
        self.active.fill_(True)
        obs = self._batch(first)  # index mode: a list of per-episode dicts
        self._cand_mask = obs["cand_mask"]
        return obs

    def _checked(self, actions: torch.Tensor) -> list[int]:
        """Actions as a list; moves off the candidate mask raise (or become STOP), like NavVecEnv."""
        if self._cand_mask is None:
            raise RuntimeError("ReferenceVecEnv.step() called before reset()")
        actions = torch.as_tensor(actions).reshape(-1).to("cpu", torch.int64)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {actions.shape[0]}")
        k = self.max_degree
        legal = (
            self._cand_mask.cpu().gather(1, actions.clamp(0, k)[:, None])[:, 0]
            & (actions >= 0)
            & (actions <= k)
        )
        legal |= ~self.active.cpu()  # inactive rows ignore their actions
        if not bool(legal.all()):
            if self.validate_actions:
                bad = torch.nonzero(~legal).flatten()[:5].tolist()
                raise ValueError(f"{int((~legal).sum())} invalid navigation actions, e.g. envs {bad}")
            actions = torch.where(legal, actions, k)
        return actions.tolist()

    def step(self, actions: torch.Tensor) -> StepResult:
        plain = self._checked(actions)
        obs_list, reward, terminated, truncated, sim_info = self.sim.step(plain)
        if self.move_reward == "sign":
            reward = np.where(terminated, reward, np.sign(reward)).astype(np.float32)
        done = terminated | truncated
        done_rows = np.flatnonzero(done).tolist()
        obs = self._batch(obs_list)
        info = self._episode_info(reward, done, done_rows, sim_info["final_obs"])
        if done_rows:
            final = self._batch([sim_info["final_obs"][row] for row in done_rows])
            rows = torch.as_tensor(done_rows, device=self.device)
            info["final_obs"] = {key: value.index_copy(0, rows, final[key]) for key, value in obs.items()}
        else:
            info["final_obs"] = obs
        self.active = torch.tensor([s["active"] for s in self.sim.envs], dtype=torch.bool, device=self.device)
        info["active"] = self.active.clone()
        self._cand_mask = obs["cand_mask"]
        as_tensor = (torch.from_numpy(x).to(self.device) for x in (reward, terminated, truncated))
        return obs, *as_tensor, info

    def _episode_info(
        self, reward: np.ndarray, done: np.ndarray, done_rows: list[int], final: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Episode statistics and R2R metric ingredients of the rows that finished (zero elsewhere),
        computed from the finished episodes' trajectories."""
        n, sim = self.num_envs, self.sim
        self._return += reward
        episode_return = np.where(done, self._return, np.float32(0.0)).astype(np.float32)
        self._return[done] = 0.0
        columns = {
            "episode_length": np.zeros(n, np.int64),
            "instruction_index": np.full(n, -1, np.int64),
            "nav_error": np.zeros(n, np.float32),
            "success": np.zeros(n, bool),
            "oracle_success": np.zeros(n, bool),
            "path_length": np.zeros(n, np.float32),
            "spl": np.zeros(n, np.float32),
        }
        # The reference appends finished episodes in row order.
        records = sim.finished[len(sim.finished) - len(done_rows) :]
        for row, record in zip(done_rows, records, strict=True):
            item = self._item_of[record["instr_id"]]
            _, scan, start, goal, _, _ = sim.items[item]
            to_goal, lengths = sim.distances[scan], self._edge_length[scan]
            walk = [position[0] for position in record["trajectory"]]
            error = final[row]["distance"]
            path = sum(lengths[a][b] for a, b in pairwise(walk))
            success = error < self.success_distance
            shortest = max(to_goal[start][goal], _TINY)
            columns["episode_length"][row] = final[row]["step"]
            columns["instruction_index"][row] = item
            columns["nav_error"][row] = error
            columns["success"][row] = success
            columns["oracle_success"][row] = min(to_goal[vp][goal] for vp in walk) < self.success_distance
            columns["path_length"][row] = path
            columns["spl"][row] = success * shortest / max(path, shortest)
        if not self.record_trajectories:  # training: nothing keeps them (NavVecEnv records none)
            sim.finished.clear()
        info: dict[str, Any] = {"episode_return": torch.from_numpy(episode_return).to(self.device)}
        info.update((key, torch.from_numpy(value).to(self.device)) for key, value in columns.items())
        return info

    def trajectories(self, clear: bool = False) -> list[dict[str, Any]]:
        """Finished episodes in the R2R submission format, in the order they finished."""
        if not self.record_trajectories:
            raise RuntimeError(
                "trajectories are not recorded: create ReferenceVecEnv(record_trajectories=True)"
            )
        records = list(self.sim.finished)
        if clear:
            self.sim.finished.clear()
        return records
