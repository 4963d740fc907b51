"""The ``nav-sim`` reference: a per-episode Python simulator in the style of the R2R code bases, with
the same semantics as :class:`~lodestar.envs.nav.sim.env.NavVecEnv`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lodestar.envs.nav.data.features import NUM_VIEWS, feature_key
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.sim.feature_table import VIEW_ELEVATIONS, VIEW_HEADINGS
from lodestar.envs.nav.sim.packing import edge_direction, nearest_view


class ReferenceNavSim:
    """Steps each episode in a Python loop over dict graphs; same semantics as :class:`NavVecEnv`.

    Written the way the R2R code bases write their environment: per scan, dicts of navigable
    candidates (cached once per viewpoint), shortest distances and next hops; per episode an
    observation dict that hands out the cached ``[36, D]`` feature array and instruction encoding by
    reference, with the candidate list (view index ``pointId`` per candidate) and freshly computed
    angle features relative to the agent heading (the 4 distinct values ``[sin, cos]`` of heading and
    elevation, as ``NavVecEnv``'s index observations hold them; :meth:`batch` repeats them to the
    angle feature size).

    ``observation="indices"`` returns that list of per-episode dicts, like the R2R env (the agent
    batches it later; that cost is not counted here). ``observation="features"`` also copies every
    per-episode observation into batch arrays (:meth:`batch`) with the same content and layout as
    ``NavVecEnv(observation="features", oracle=True)``.

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

    @staticmethod
    def _angle(heading: float, elevation: float) -> list[float]:
        return [math.sin(heading), math.cos(heading), math.sin(elevation), math.cos(elevation)]

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
            "cand_angles": np.array(angles, dtype=np.float32).reshape(len(cands), 4),
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
            "distance": np.zeros((n, 1), np.float32),
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
            cand[:count, d:] = np.tile(ob["cand_angles"], self.angle_size // 4)
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
