"""``FeatureTable``: the visual features of every (viewpoint, view) of a split, gathered on device.

``NavVecEnv(observation="indices")`` observes indices into this table instead of copying features,
the way the R2R code bases hand the agent references to cached per-viewpoint feature arrays; a
policy gathers what it needs inside its forward pass. :meth:`FeatureTable.materialise` rebuilds the
``observation="features"`` tensors from an index observation, bit for bit.

Row ``g * 36 + ix`` holds view ``ix`` of global viewpoint ``g``; index ``-1`` (padded candidates and
the STOP slot) reads a zero row. Each row carries ``A`` zeroed columns after the ``D`` visual ones,
reserved for the angle features, so a materialised observation is one gather plus a small write.

View geometry (DESIGN.md section 4): view ``ix`` has absolute heading ``(ix % 12) * 30`` degrees
(clockwise) and elevation ``(ix // 12 - 1) * 30`` degrees. Panorama angles relative to the agent
heading ``h`` are computed from ``(sin h, cos h)`` with ``sin(v - h) = sin v cos h - cos v sin h``
(and likewise the cosine): separate products and sums, each rounded once, so the env and a consumer
get bit-identical values whatever their batch shapes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lodestar.envs.nav.data.features import NUM_VIEWS

VIEW_STEP = math.pi / 6  # 30 degrees between panorama views
VIEW_HEADINGS = np.arange(NUM_VIEWS) % 12 * VIEW_STEP
VIEW_ELEVATIONS = (np.arange(NUM_VIEWS) // 12 - 1) * VIEW_STEP
# Keys of an index observation that materialise() replaces by cand_feats / pano_feats.
INDEX_KEYS = ("cand_view", "cand_angles", "pano_index", "heading")


def angle_features(heading: torch.Tensor, elevation: torch.Tensor, size: int) -> torch.Tensor:
    """``[sin h, cos h, sin e, cos e]`` repeated to ``size`` (a multiple of 4) along a new last dim."""
    base = torch.stack([heading.sin(), heading.cos(), elevation.sin(), elevation.cos()], dim=-1)
    return base.repeat(*([1] * heading.dim()), size // 4)


class FeatureTable(nn.Module):
    """``[V * 36 + 1, D + A]`` view features with reserved angle columns, and the gathers over them.

    ``features`` is ``[V, 36, D]`` in the env's global viewpoint order. The table is a non-persistent
    buffer: ``.to(device)`` moves it, but it is not saved in a policy's ``state_dict``.
    """

    table: torch.Tensor
    view_offsets: torch.Tensor
    view_sincos: torch.Tensor
    elevation_sincos: torch.Tensor

    def __init__(self, features: torch.Tensor, angle_feature_size: int = 4, dtype: torch.dtype | None = None):
        super().__init__()
        if features.dim() != 3 or features.shape[1] != NUM_VIEWS:
            raise ValueError(
                f"FeatureTable: features must be [V, {NUM_VIEWS}, D], got {list(features.shape)}"
            )
        if angle_feature_size < 4 or angle_feature_size % 4:
            raise ValueError(f"angle_feature_size must be a positive multiple of 4, got {angle_feature_size}")
        num_viewpoints, _, dim = features.shape
        self.feature_dim, self.angle_feature_size = int(dim), angle_feature_size
        table = torch.zeros(
            num_viewpoints * NUM_VIEWS + 1,
            dim + angle_feature_size,
            dtype=dtype or features.dtype,
            device=features.device,
        )
        table[:-1, :dim] = features.reshape(-1, dim)
        self.register_buffer("table", table, persistent=False)
        device = features.device
        self.register_buffer("view_offsets", torch.arange(NUM_VIEWS, device=device), persistent=False)
        # sin/cos of the 12 view headings and of the 3 elevation rows.
        headings = torch.tensor(VIEW_HEADINGS[:12], dtype=torch.float32, device=device)
        elevations = torch.tensor(VIEW_ELEVATIONS[::12], dtype=torch.float32, device=device)
        self.register_buffer("view_sincos", torch.stack([headings.sin(), headings.cos()]), persistent=False)
        self.register_buffer(
            "elevation_sincos", torch.stack([elevations.sin(), elevations.cos()], dim=1), persistent=False
        )

    @property
    def num_viewpoints(self) -> int:
        return (self.table.shape[0] - 1) // NUM_VIEWS

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Float32 ``[*index.shape, D + A]`` rows (angle columns zero); index ``-1`` gives zeros."""
        # remainder maps -1 to the last (zero) row without a separate mask.
        rows = index.reshape(-1).remainder(self.table.shape[0])
        out = self.table.index_select(0, rows).view(*index.shape, self.table.shape[1])
        return out.to(torch.float32)

    def visual(self, index: torch.Tensor) -> torch.Tensor:
        """Float32 ``[*index.shape, D]`` visual features of view rows (``-1`` gives zeros)."""
        return self.gather(index)[..., : self.feature_dim]

    def pano_rows(self, pano_index: torch.Tensor) -> torch.Tensor:
        """``[N, 36]`` table rows of the panoramas of global viewpoints ``pano_index`` ``[N]``."""
        return pano_index[:, None] * NUM_VIEWS + self.view_offsets

    def pano_angles(self, heading: torch.Tensor) -> torch.Tensor:
        """``[N, 36, A]`` angle features of the 36 views relative to ``heading`` = ``[N, 2]`` (sin, cos)."""
        sin_h, cos_h = heading[:, 0:1], heading[:, 1:2]
        sin_v, cos_v = self.view_sincos
        out = heading.new_empty(heading.shape[0], 3, 12, 4)
        out[..., 0] = (sin_v * cos_h - cos_v * sin_h)[:, None]  # sin(v - h)
        out[..., 1] = (cos_v * cos_h + sin_v * sin_h)[:, None]  # cos(v - h)
        out[..., 2:] = self.elevation_sincos[:, None]
        out = out.view(-1, NUM_VIEWS, 4)
        return out if self.angle_feature_size == 4 else out.repeat(1, 1, self.angle_feature_size // 4)

    def cand_feats(self, cand_view: torch.Tensor, cand_angles: torch.Tensor) -> torch.Tensor:
        """``[N, K+1, D+A]`` candidate features, as ``NavVecEnv(observation="features")`` observes them."""
        out = self.gather(cand_view)
        out[..., self.feature_dim :] = cand_angles
        return out

    def pano_feats(self, pano_index: torch.Tensor, heading: torch.Tensor) -> torch.Tensor:
        """``[N, 36, D+A]`` panorama features with angles relative to ``heading`` ``[N, 2]`` (sin, cos)."""
        out = self.gather(self.pano_rows(pano_index))
        out[..., self.feature_dim :] = self.pano_angles(heading)
        return out

    def materialise(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The features-mode observation of an indices-mode one (other keys are passed through)."""
        out = {key: value for key, value in obs.items() if key not in INDEX_KEYS}
        try:
            out["cand_feats"] = self.cand_feats(obs["cand_view"], obs["cand_angles"])
        except KeyError as error:
            raise KeyError(f"FeatureTable.materialise: observation has no {error} key") from None
        if "pano_index" in obs:
            out["pano_feats"] = self.pano_feats(obs["pano_index"], obs["heading"])
        return out
