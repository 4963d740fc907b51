"""Follower inputs at every step of given routes, identical to what ``NavVecEnv`` would observe there.

:class:`~lodestar.agents.vln.trajectories.PathFeaturizer` gives, per step, the panorama with angles relative
to the agent's heading. The follower also needs every navigable candidate: the visual feature of
the panorama view facing the neighbour plus the angle features of the edge relative to the heading,
padded to ``max_degree`` slots, and a zero STOP slot last - exactly ``NavVecEnv``'s ``cand_feats``.
Pretraining (action prediction along human and synthetic paths) and DAgger replay (states visited
by the learner) both read their inputs from here, with no loop over paths.

:func:`view_features` gives the follower its inputs from a simulator observation of either mode:
trainers and evaluators step ``NavVecEnv(observation="indices")`` and gather, on the env's device,
only what the follower consumes from ``env.feature_table`` (the panorama only for a follower that
reads it), the same numbers ``observation="features"`` would have materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lodestar.agents.vln.trajectories import PathFeaturizer, TrajectoryFeatures
from lodestar.envs.nav.sim.feature_table import FeatureTable, angle_features


@dataclass
class StepInputs:
    """Per-step follower inputs of ``B`` routes of up to ``T`` steps (``C = max_degree + 1``)."""

    cand_feats: torch.Tensor  # [B, T, C, D + A]
    cand_mask: torch.Tensor  # [B, T, C] bool, STOP (last) always True
    pano_feats: torch.Tensor | None  # [B, T, 36, D + A]
    step_mask: torch.Tensor  # [B, T] bool

    def select(self, rows: torch.Tensor) -> StepInputs:
        return StepInputs(
            self.cand_feats[rows],
            self.cand_mask[rows],
            None if self.pano_feats is None else self.pano_feats[rows],
            self.step_mask[rows],
        )


def step_inputs(featurizer: PathFeaturizer, traj: TrajectoryFeatures, keep_pano: bool = True) -> StepInputs:
    """Candidates (and the panorama) at every step of featurized routes.

    ``traj`` must come from ``featurizer(paths, with_pano=True)``: candidate visual features are read
    from the panorama views facing each neighbour.
    """
    if traj.pano_feats is None:
        raise ValueError("step_inputs needs panorama features: call the featurizer with with_pano=True")
    w, visual = featurizer.world, featurizer.visual_dim
    vps = traj.viewpoints
    mask = w.neighbour_mask[vps]  # [B, T, K]
    views = w.edge_view[vps]  # [B, T, K]
    pano_visual = traj.pano_feats[..., :visual]
    cand_visual = pano_visual.gather(2, views.unsqueeze(-1).expand(*views.shape, visual))
    angles = angle_features(
        w.edge_heading[vps] - traj.headings.unsqueeze(-1),
        w.edge_elevation[vps],
        featurizer.angle_feature_size,
    )
    cand = torch.cat([cand_visual, angles], dim=-1) * mask.unsqueeze(-1).to(cand_visual.dtype)
    cand = torch.cat([cand, cand.new_zeros(*cand.shape[:2], 1, cand.shape[-1])], dim=2)
    cand_mask = torch.cat([mask, torch.ones_like(mask[..., :1])], dim=-1)
    return StepInputs(cand, cand_mask, traj.pano_feats if keep_pano else None, traj.step_mask)


def view_features(
    obs: dict[str, torch.Tensor], features: FeatureTable | None, with_pano: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(cand_feats [N, K+1, D+A], pano_feats [N, 36, D+A] or None)`` of a ``NavVecEnv`` observation.

    A features observation passes through. An index observation is gathered from ``features`` (the
    env's ``feature_table``) bit for bit as the features mode would materialise it; its panorama only
    when ``with_pano`` (a follower with ``pano="none"`` never reads it).
    """
    if "cand_feats" in obs:
        return obs["cand_feats"], obs.get("pano_feats")
    if "cand_view" not in obs:
        raise KeyError("observation has neither cand_feats (features mode) nor cand_view (indices mode)")
    if features is None:
        raise ValueError(
            "an index observation (NavVecEnv(observation='indices')) needs the env's feature table: "
            "pass features=env.feature_table"
        )
    cand = features.cand_feats(obs["cand_view"], obs["cand_angles"])
    if not with_pano or "pano_index" not in obs:
        return cand, None
    return cand, features.pano_feats(obs["pano_index"], obs["heading"])
