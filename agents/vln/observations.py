"""Follower inputs at every step of given routes, identical to what ``NavVecEnv`` would observe there.

:class:`~lodestar.agents.vln.trajectories.PathFeaturizer` gives, per step, the panorama with angles relative
to the agent's heading. The follower also needs every navigable candidate: the visual feature of
the panorama view facing the neighbour plus the angle features of the edge relative to the heading,
padded to ``max_degree`` slots, and a zero STOP slot last - exactly ``NavVecEnv``'s ``cand_feats``.
Pretraining (action prediction along human and synthetic paths) and DAgger replay (states visited
by the learner) both read their inputs from here, with no loop over paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lodestar.agents.vln.trajectories import PathFeaturizer, TrajectoryFeatures
from lodestar.envs.nav.sim.feature_table import angle_features


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
