"""``FeatureTable``: the visual features of every (viewpoint, view) of a split, gathered on device.

``NavVecEnv(observation="indices")`` observes indices into this table instead of copying features,
the way the R2R code bases hand the agent references to cached per-viewpoint feature arrays; a
policy gathers what it needs inside its forward pass. :meth:`FeatureTable.materialise` rebuilds the
``observation="features"`` tensors from an index observation, bit for bit.

Row ``g * 36 + ix`` holds view ``ix`` of global viewpoint ``g``; index ``-1`` (padded candidates and
the STOP slot) reads a zero row. Each row carries ``A`` zeroed columns after the ``D`` visual ones,
reserved for the angle features, so a materialised observation is one gather plus a small write.
A table is filled in place (:meth:`FeatureTable.zeros` + :attr:`FeatureTable.view_features`), so
loading features needs no second copy of them.

View geometry (DESIGN.md section 4): view ``ix`` has absolute heading ``(ix % 12) * 30`` degrees
(clockwise) and elevation ``(ix // 12 - 1) * 30`` degrees. Panorama angles relative to the agent
heading ``h`` are computed from ``(sin h, cos h)`` with ``sin(v - h) = sin v cos h - cos v sin h``
(and likewise the cosine): separate products and sums, each rounded once, so the env and a consumer
get bit-identical values whatever their batch shapes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

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

    ``features`` is ``[V, 36, D]`` in the env's global viewpoint order (copied into the table); use
    :meth:`zeros` to fill a table in place instead. The table is a non-persistent buffer:
    ``.to(device)`` moves it, but it is not saved in a policy's ``state_dict``.
    """

    table: torch.Tensor
    view_offsets: torch.Tensor
    view_sincos: torch.Tensor
    elevation_sincos: torch.Tensor

    def __init__(self, features: torch.Tensor, angle_feature_size: int = 4, dtype: torch.dtype | None = None):
        if features.dim() != 3 or features.shape[1] != NUM_VIEWS:
            raise ValueError(
                f"FeatureTable: features must be [V, {NUM_VIEWS}, D], got {list(features.shape)}"
            )
        super().__init__()
        num_viewpoints, _, dim = features.shape
        self._allocate(num_viewpoints, dim, angle_feature_size, dtype or features.dtype, features.device)
        self.view_features.copy_(features)

    @classmethod
    def zeros(
        cls,
        num_viewpoints: int,
        feature_dim: int,
        angle_feature_size: int = 4,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> FeatureTable:
        """A zero table to fill through :attr:`view_features` (the only copy of the features made)."""
        table = cls.__new__(cls)
        nn.Module.__init__(table)
        table._allocate(num_viewpoints, feature_dim, angle_feature_size, dtype, torch.device(device))
        return table

    def _allocate(
        self, num_viewpoints: int, dim: int, angle_feature_size: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        if angle_feature_size < 4 or angle_feature_size % 4:
            raise ValueError(f"angle_feature_size must be a positive multiple of 4, got {angle_feature_size}")
        if num_viewpoints < 0 or dim < 1:
            raise ValueError(
                f"FeatureTable: needs V >= 0 viewpoints and D >= 1, got V={num_viewpoints}, D={dim}"
            )
        self.feature_dim, self.angle_feature_size = int(dim), angle_feature_size
        width = dim + angle_feature_size
        table = torch.zeros(num_viewpoints * NUM_VIEWS + 1, width, dtype=dtype, device=device)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("view_offsets", torch.arange(NUM_VIEWS, device=device), persistent=False)
        # sin/cos of the 12 view headings and of the 3 elevation rows.
        headings = torch.tensor(VIEW_HEADINGS[:12], dtype=torch.float32, device=device)
        elevations = torch.tensor(VIEW_ELEVATIONS[::12], dtype=torch.float32, device=device)
        self.register_buffer("view_sincos", torch.stack([headings.sin(), headings.cos()]), persistent=False)
        self.register_buffer(
            "elevation_sincos", torch.stack([elevations.sin(), elevations.cos()], dim=1), persistent=False
        )
        # Gathers from a table stored narrower than float32 go through this staging buffer, reused.
        self._staging: torch.Tensor | None = None

    @property
    def num_viewpoints(self) -> int:
        return (self.table.shape[0] - 1) // NUM_VIEWS

    @property
    def view_features(self) -> torch.Tensor:
        """``[V, 36, D]`` view of the visual columns of the table (write into it to fill the table)."""
        width = self.table.shape[1]
        return self.table[:-1].view(self.num_viewpoints, NUM_VIEWS, width)[..., : self.feature_dim]

    def gather(self, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 ``[*index.shape, D + A]`` rows (angle columns zero); index ``-1`` gives zeros.

        ``out`` (contiguous float32 of that shape) receives them without allocating.
        """
        # remainder maps -1 to the last (zero) row without a separate mask.
        rows = index.reshape(-1).remainder(self.table.shape[0])
        width = self.table.shape[1]
        if out is None:
            return self.table.index_select(0, rows).view(*index.shape, width).to(torch.float32)
        flat = out.view(-1, width)
        if self.table.dtype == torch.float32:
            torch.index_select(self.table, 0, rows, out=flat)
            return out
        staging = self._staging
        if staging is None or staging.numel() < flat.numel() or staging.device != flat.device:
            staging = self._staging = self.table.new_empty(flat.numel())
        narrow = staging[: flat.numel()].view(-1, width)
        torch.index_select(self.table, 0, rows, out=narrow)
        flat.copy_(narrow)
        return out

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

    def cand_feats(
        self, cand_view: torch.Tensor, cand_angles: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[N, K+1, D+A]`` candidate features, as ``NavVecEnv(observation="features")`` observes them.

        ``cand_angles`` is ``[N, K+1, 4]`` (an index observation's; repeated to ``A`` here) or ``[N, K+1, A]``.
        """
        a = self.angle_feature_size
        if cand_angles.shape[-1] not in (4, a):
            raise ValueError(f"cand_angles must have 4 or {a} angle features, got {list(cand_angles.shape)}")
        out = self.gather(cand_view, out)
        # Written through a [.., A / 4, 4] view: the repeat costs no temporary.
        out[..., self.feature_dim :].unflatten(-1, (-1, cand_angles.shape[-1]))[:] = cand_angles.unsqueeze(-2)
        return out

    def pano_feats(
        self, pano_index: torch.Tensor, heading: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[N, 36, D+A]`` panorama features with angles relative to ``heading`` ``[N, 2]`` (sin, cos)."""
        out = self.gather(self.pano_rows(pano_index), out)
        out[..., self.feature_dim :] = self.pano_angles(heading)
        return out

    def materialise(
        self, obs: dict[str, torch.Tensor], out: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """The features-mode observation of an indices-mode one (other keys are passed through).

        ``out`` (e.g. from :class:`OutputBuffers`) holds the ``cand_feats`` / ``pano_feats`` tensors
        to write into; without it they are allocated.
        """
        out = out or {}
        result = {key: value for key, value in obs.items() if key not in INDEX_KEYS}
        try:
            result["cand_feats"] = self.cand_feats(
                obs["cand_view"], obs["cand_angles"], out.get("cand_feats")
            )
        except KeyError as error:
            raise KeyError(f"FeatureTable.materialise: observation has no {error} key") from None
        if "pano_index" in obs:
            result["pano_feats"] = self.pano_feats(obs["pano_index"], obs["heading"], out.get("pano_feats"))
        return result


# A storage's reference count (tensors, views and numpy arrays on it). Private to torch: without it
# OutputBuffers cannot tell whether a numpy array still shares a buffer, so it never reuses one.
_storage_use_count: Callable[[Any], int] | None = getattr(torch._C, "_storage_Use_Count", None)


def _holders(tensor: torch.Tensor) -> tuple[int, int]:
    """Python references to ``tensor`` and references to its storage, as seen from this function."""
    if _storage_use_count is None:
        return sys.getrefcount(tensor), -1
    return sys.getrefcount(tensor), _storage_use_count(tensor.untyped_storage()._cdata)


class OutputBuffers:
    """Output tensors for :meth:`FeatureTable.materialise`, reused only once nothing else holds them.

    Writing a step's features into fresh tensors costs more than gathering them (the memory is
    faulted in page by page), so a features-mode env cycles through ``size`` sets of buffers. A set
    is written again only when no Python object refers to its tensors and no view or numpy array
    shares their memory: an observation a caller keeps (a rollout, a replay buffer, SB3's last
    observation) is never overwritten; :meth:`take` allocates a new set instead, and the oldest set
    leaves the pool (it lives on while it is held).
    """

    def __init__(self, table: FeatureTable, batch: int, pano: bool, size: int = 4) -> None:
        if size < 1:
            raise ValueError(f"OutputBuffers needs size >= 1, got {size}")
        self.table, self.batch, self.pano, self.size = table, batch, pano, size
        self._sets: list[dict[str, torch.Tensor]] = []
        self._idle: list[list[tuple[int, int]]] = []  # holder counts of each set when nobody holds it
        self._oldest = 0
        self.allocated = 0  # sets allocated so far (a measure of reuse)

    def _new_set(self, slots: int) -> dict[str, torch.Tensor]:
        t = self.table.table
        width = t.shape[1]
        shapes = {"cand_feats": (self.batch, slots, width)}
        if self.pano:
            shapes["pano_feats"] = (self.batch, NUM_VIEWS, width)
        self.allocated += 1
        return {
            key: torch.empty(shape, dtype=torch.float32, device=t.device) for key, shape in shapes.items()
        }

    def take(self, slots: int) -> dict[str, torch.Tensor]:
        """A set for ``slots`` candidates (``K + 1``) that nothing outside the pool holds now."""
        for buffers, idle in zip(self._sets, self._idle, strict=True):
            if buffers["cand_feats"].shape[1] == slots and [_holders(b) for b in buffers.values()] == idle:
                return buffers
        fresh = self._new_set(slots)
        idle = [_holders(b) for b in fresh.values()]
        reusable = _storage_use_count is not None
        if len(self._sets) < self.size:
            self._sets.append(fresh)
            self._idle.append(idle if reusable else [])
        else:  # the oldest set leaves the pool; whoever holds it keeps it alive
            self._sets[self._oldest], self._idle[self._oldest] = fresh, idle if reusable else []
            self._oldest = (self._oldest + 1) % self.size
        return fresh
