"""DAgger aggregation: states visited by the learner, labelled by the shortest-path teacher, replayed.

:class:`DaggerWriter` is a :class:`~lodestar.agents.rollout.RolloutCollector` sink. For the env rows driven by
the learner it records, step by step, the action executed and the teacher's action in that state;
when an episode ends it rebuilds the walk (start viewpoint, then one neighbour per move, on the
device) and appends the episode to a :class:`~lodestar.replay.trajectory.TrajectoryStore`: instruction tokens,
the viewpoints where decisions were taken, the teacher labels, and per step the agent's heading
(extra ``"heading"``) - everything needed to observe those states again.

:func:`replay_inputs` turns a sampled batch back into follower inputs (candidates and panoramas
exactly as the simulator shows them) with the teacher labels as targets.
"""

from __future__ import annotations

from typing import Any

import torch

from lodestar.agents.rollout import Transition
from lodestar.agents.vln.observations import StepInputs, step_inputs
from lodestar.agents.vln.trajectories import PathBatch, PathFeaturizer
from lodestar.envs.base import dict_observation
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.replay.trajectory import TrajectoryBatch, TrajectoryStore


def viewpoint_map(env: NavVecEnv, featurizer: PathFeaturizer) -> torch.Tensor:
    """``[V_env]`` featurizer index of every env viewpoint (the two may pack different scan sets)."""
    w = env.world
    index = []
    for s, scan in enumerate(w.scans):
        for g in range(int(w.scan_offset[s]), int(w.scan_offset[s + 1])):
            index.append(featurizer.global_index(scan, w.viewpoint_ids[g]))
    return torch.tensor(index, dtype=torch.int64, device=env.device)


class DaggerWriter:
    """Sink that writes the learner-driven rows' finished episodes into ``store`` (see module doc)."""

    def __init__(
        self, store: TrajectoryStore, env: NavVecEnv, featurizer: PathFeaturizer, rows: torch.Tensor
    ) -> None:
        if not env.oracle:
            raise ValueError("DAgger labels are teacher actions: build the env with NavVecEnv(oracle=True)")
        self.store, self.env = store, env
        n, device = env.num_envs, env.device
        self.rows = rows.to(device=device, dtype=torch.bool)
        if self.rows.shape != (n,):
            raise ValueError(f"rows must be a bool mask over the {n} envs, got shape {tuple(rows.shape)}")
        self.to_featurizer = viewpoint_map(env, featurizer)
        starts, headings = [], []
        for ep in env.episodes:
            start = env.world.global_index(ep.scan, ep.path[0], env.graphs[ep.scan])
            starts += [start] * len(ep.instructions)
            headings += [ep.heading] * len(ep.instructions)
        if len(starts) != env.num_episodes:
            raise RuntimeError("episode bookkeeping of the env changed: instruction counts differ")
        self.start = torch.tensor(starts, dtype=torch.int64, device=device)
        self.start_heading = torch.tensor(headings, dtype=torch.float32, device=device)
        width = env.max_steps + 1
        self.executed = torch.zeros(n, width, dtype=torch.int64, device=device)
        self.labels = torch.zeros(n, width, dtype=torch.int64, device=device)
        self.length = torch.zeros(n, dtype=torch.int64, device=device)
        self.written = 0

    def __call__(self, t: Transition) -> None:
        rows = torch.arange(self.env.num_envs, device=self.length.device)
        column = self.length.clamp(max=self.executed.shape[1] - 1)
        self.executed[rows, column] = t.action
        self.labels[rows, column] = dict_observation(t.obs)["teacher_action"]
        self.length += 1
        done = t.done & self.rows
        if bool(done.any()):
            self._emit(torch.nonzero(done).flatten(), t)
        self.length.masked_fill_(t.done, 0)

    def _emit(self, rows: torch.Tensor, t: Transition) -> None:
        w, k = self.env.world, self.env.world.max_degree
        instruction = t.info["instruction_index"][rows]
        lengths = self.length[rows]
        executed = self.executed[rows]
        width = int(lengths.max())
        vps = torch.empty(len(rows), width, dtype=torch.int64, device=rows.device)
        headings = torch.empty(len(rows), width, dtype=torch.float32, device=rows.device)
        vps[:, 0], headings[:, 0] = self.start[instruction], self.start_heading[instruction]
        for step in range(1, width):
            prev, action = vps[:, step - 1], executed[:, step - 1]
            move = action < k
            slot = action.clamp(max=k - 1)
            vps[:, step] = torch.where(move, w.neighbours[prev, slot], prev)
            headings[:, step] = torch.where(move, w.edge_heading[prev, slot], headings[:, step - 1])
        obs = dict_observation(t.obs)
        tokens, token_mask = obs["instr_ids"][rows], obs["instr_mask"][rows]
        self.store.extend_padded(
            tokens,
            token_mask.sum(1),
            self.to_featurizer[vps],
            self.labels[rows, :width],
            lengths,
            {"heading": headings},
        )
        self.written += len(rows)

    def state_dict(self) -> dict[str, Any]:
        return {
            "executed": self.executed.cpu(),
            "labels": self.labels.cpu(),
            "length": self.length.cpu(),
            "written": self.written,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.length.device
        self.executed, self.labels = state["executed"].to(device), state["labels"].to(device)
        self.length, self.written = state["length"].to(device), int(state["written"])


def replay_inputs(
    featurizer: PathFeaturizer, batch: TrajectoryBatch
) -> tuple[torch.Tensor, torch.Tensor, StepInputs, torch.Tensor]:
    """``(tokens, token_mask, step inputs, teacher labels)`` of stored learner episodes.

    The stored walk is re-featurized from its start heading; the headings the featurizer derives
    from the moves are the ones the agent had (checked against the stored ones in the tests).
    """
    device = featurizer.device
    lengths = batch.lengths.to(device)
    vps = batch.viewpoints.to(device)
    last = vps.gather(1, (lengths - 1).unsqueeze(1))
    vps = torch.where(batch.step_mask.to(device), vps, last)  # pad with the last viewpoint, as PathBatch does
    start_heading = batch.extras["heading"][:, 0].to(device)
    traj = featurizer(PathBatch(vps, lengths, start_heading), with_pano=True)
    labels = batch.actions.to(device)
    return (
        batch.instruction.to(device),
        batch.instruction_mask.to(device),
        step_inputs(featurizer, traj),
        labels,
    )
