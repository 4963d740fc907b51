"""Batched featurization of R2R paths: what an agent sees and does at every step of a route.

A path of ``n`` viewpoints has ``n`` steps: at step ``t < n - 1`` the agent stands at viewpoint ``t``
and moves to viewpoint ``t + 1``; at the last step it stops. For every step this module produces,
with the conventions of :class:`lodestar.envs.nav.sim.env.NavVecEnv` (same view table, same angle features,
same candidate order):

- ``action_feats [B, T, D + A]``: the visual feature of the view facing the next viewpoint and the
  angle features of that direction relative to the current heading; all zeros for STOP, like the
  simulator's STOP candidate;
- ``pano_feats [B, T, 36, D + A]``: the 36 views at the current viewpoint with angle features
  relative to the current heading;
- ``actions [B, T]``: the candidate slot taken (``max_degree`` = STOP, ``-1`` on padding);
- ``headings [B, T]`` and ``step_mask [B, T]``.

The heading starts at the episode heading and, after each move, faces along the edge travelled.
Indexing paths (viewpoint ids -> global indices) is a one-off Python pass per split; featurizing a
batch is a handful of gathers on the device with no loop over paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import NUM_VIEWS
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.sim.feature_table import VIEW_ELEVATIONS, VIEW_HEADINGS, angle_features
from lodestar.envs.nav.sim.packing import pack_graphs


@dataclass
class PathBatch:
    """Routes as global viewpoint indices: ``viewpoints [B, T]`` padded with each path's last viewpoint."""

    viewpoints: torch.Tensor  # [B, T] int64
    lengths: torch.Tensor  # [B] int64 number of viewpoints on each path (>= 1)
    headings: torch.Tensor  # [B] float32 start heading (radians, clockwise from +y)

    def __len__(self) -> int:
        return int(self.viewpoints.shape[0])

    def select(self, index: torch.Tensor) -> PathBatch:
        """The paths at ``index``, trimmed to their longest length."""
        lengths = self.lengths[index]
        width = int(lengths.max()) if lengths.numel() else 1
        return PathBatch(self.viewpoints[index, :width], lengths, self.headings[index])


@dataclass
class TrajectoryFeatures:
    """Per-step inputs of a batch of paths (see the module docstring)."""

    action_feats: torch.Tensor  # [B, T, D + A] float32
    pano_feats: torch.Tensor | None  # [B, T, 36, D + A] float32, None when not requested
    actions: torch.Tensor  # [B, T] int64
    headings: torch.Tensor  # [B, T] float32
    step_mask: torch.Tensor  # [B, T] bool
    lengths: torch.Tensor  # [B] int64
    viewpoints: torch.Tensor  # [B, T] int64

    @property
    def feature_dim(self) -> int:
        return int(self.action_feats.shape[-1])


class PathFeaturizer:
    """Turns :class:`PathBatch` es into :class:`TrajectoryFeatures` on one device.

    ``features`` is ``[V, 36, D]`` for the viewpoints of ``graphs`` in packing order (scan by scan,
    see :meth:`lodestar.envs.nav.data.dataset.NavDataset.viewpoint_keys`). It is stored once on the device in
    ``feature_dtype`` (float16 halves the memory of large worlds) and returned as float32.
    """

    def __init__(
        self,
        graphs: Sequence[NavGraph],
        features: torch.Tensor | np.ndarray,
        device: torch.device | str = "cpu",
        angle_feature_size: int = 4,
        feature_dtype: torch.dtype = torch.float32,
    ) -> None:
        if angle_feature_size < 4 or angle_feature_size % 4:
            raise ValueError(f"angle_feature_size must be a positive multiple of 4, got {angle_feature_size}")
        self.device = torch.device(device)
        self.graphs = {g.scan: g for g in graphs}
        self.world = pack_graphs(list(graphs), self.device)
        self._scan_offset = {scan: int(self.world.scan_offset[i]) for i, scan in enumerate(self.world.scans)}
        table = torch.as_tensor(features)
        expected = self.world.num_viewpoints
        if table.dim() != 3 or table.shape[0] != expected or table.shape[1] != NUM_VIEWS:
            raise NavDataError(
                f"features: expected shape [{expected}, {NUM_VIEWS}, D] for the viewpoints of "
                f"{len(self.graphs)} scans in packing order, got {list(table.shape)}"
            )
        self.visual_dim = int(table.shape[-1])
        self.angle_feature_size = angle_feature_size
        # One row per (viewpoint, view) plus a zero row that STOP and padding read; the angle
        # columns are reserved (zero) so that a step's features come out of a single gather.
        self._table = torch.zeros(
            table.shape[0] * NUM_VIEWS + 1, self.visual_dim + angle_feature_size, dtype=feature_dtype
        )
        self._table[:-1, : self.visual_dim] = table.reshape(-1, self.visual_dim)
        self._table = self._table.to(self.device)
        self._zero_row = self._table.shape[0] - 1
        self._view_heading = torch.tensor(VIEW_HEADINGS, dtype=torch.float32, device=self.device)
        self._view_elevation = torch.tensor(VIEW_ELEVATIONS, dtype=torch.float32, device=self.device)
        self._views = torch.arange(NUM_VIEWS, device=self.device)

    @classmethod
    def from_dataset(
        cls,
        dataset: NavDataset,
        scans: Sequence[str],
        feature_name: str,
        device: torch.device | str = "cpu",
        angle_feature_size: int = 4,
        feature_dtype: torch.dtype = torch.float32,
    ) -> PathFeaturizer:
        """A featurizer over ``scans`` with the features ``<dataset>/features/<feature_name>``."""
        scans = sorted(set(scans))
        graphs = [dataset.graph(scan) for scan in scans]
        features = torch.from_numpy(np.asarray(dataset.load_features(feature_name, scans)))
        return cls(graphs, features, device, angle_feature_size, feature_dtype)

    @property
    def feature_dim(self) -> int:
        """Width of every per-view vector: visual features plus angle features."""
        return self.visual_dim + self.angle_feature_size

    @property
    def max_degree(self) -> int:
        """Candidate slots per viewpoint; this index is STOP in ``actions``."""
        return self.world.max_degree

    def global_index(self, scan: str, viewpoint: str) -> int:
        graph = self.graphs.get(scan)
        if graph is None:
            raise KeyError(f"scan {scan!r} is not among the featurizer's {len(self.graphs)} scans")
        if viewpoint not in graph.index:
            raise KeyError(f"viewpoint {viewpoint!r} is not in scan {scan!r}")
        return self._scan_offset[scan] + graph.index[viewpoint]

    def index_paths(self, routes: Sequence[tuple[str, Sequence[str], float]]) -> PathBatch:
        """A :class:`PathBatch` of ``(scan, viewpoint ids, start heading)`` routes."""
        if not routes:
            raise ValueError("no paths to index")
        width = max(len(path) for _, path, _ in routes)
        vps = np.zeros((len(routes), width), dtype=np.int64)
        lengths = np.zeros(len(routes), dtype=np.int64)
        for row, (scan, path, _) in enumerate(routes):
            if not path:
                raise ValueError(f"path {row} in scan {scan!r} has no viewpoints")
            ids = [self.global_index(scan, vp) for vp in path]
            vps[row, : len(ids)], vps[row, len(ids) :] = ids, ids[-1]
            lengths[row] = len(ids)
        headings = np.array([heading for _, _, heading in routes], dtype=np.float32)
        return PathBatch(
            torch.from_numpy(vps).to(self.device),
            torch.from_numpy(lengths).to(self.device),
            torch.from_numpy(headings).to(self.device),
        )

    def index_episodes(self, episodes: Sequence[Episode]) -> PathBatch:
        return self.index_paths([(ep.scan, ep.path, ep.heading) for ep in episodes])

    def __call__(self, paths: PathBatch, with_pano: bool = True) -> TrajectoryFeatures:
        """Featurize a batch of paths (see the module docstring)."""
        w, k = self.world, self.world.max_degree
        vps, lengths = paths.viewpoints, paths.lengths
        t = vps.shape[1]
        steps = torch.arange(t, device=self.device)
        step_mask = steps[None, :] < lengths[:, None]
        moving = steps[None, :] < (lengths[:, None] - 1)  # steps that move to the next viewpoint
        nxt = torch.cat([vps[:, 1:], vps[:, -1:]], dim=1)
        match = (w.neighbours[vps] == nxt[..., None]) & w.neighbour_mask[vps]  # [B, T, K]
        if bool((moving & ~match.any(-1)).any()):
            row, col = (int(i) for i in torch.nonzero(moving & ~match.any(-1))[0])
            a, z = w.viewpoint_ids[int(vps[row, col])], w.viewpoint_ids[int(nxt[row, col])]
            raise NavDataError(f"path {row}: step {a} -> {z} is not an edge of the navigation graph")
        slot = match.to(torch.int64).argmax(-1)
        actions = torch.where(moving, slot, torch.where(step_mask, k, -1))

        safe_slot = slot.clamp(max=k - 1)
        edge_heading = w.edge_heading[vps, safe_slot]
        # Heading at step t: the start heading, then the direction of the edge travelled to get there.
        headings = torch.cat([paths.headings[:, None], edge_heading[:, :-1]], dim=1)
        rows = torch.where(moving, vps * NUM_VIEWS + w.edge_view[vps, safe_slot], self._zero_row)
        action_angles = angle_features(
            edge_heading - headings, w.edge_elevation[vps, safe_slot], self.angle_feature_size
        )
        action_feats = self._gather(rows)
        action_feats[..., self.visual_dim :] = action_angles * moving[..., None]

        pano = None
        if with_pano:
            view_rows = torch.where(
                step_mask[..., None], vps[..., None] * NUM_VIEWS + self._views, self._zero_row
            )
            rel = self._view_heading - headings[..., None]
            pano_angles = angle_features(rel, self._view_elevation.expand_as(rel), self.angle_feature_size)
            pano = self._gather(view_rows)
            pano[..., self.visual_dim :] = pano_angles * step_mask[..., None, None]
        return TrajectoryFeatures(
            action_feats=action_feats,
            pano_feats=pano,
            actions=actions,
            headings=torch.where(step_mask, headings, 0.0),
            step_mask=step_mask,
            lengths=lengths,
            viewpoints=vps,
        )

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Float32 ``[*rows.shape, D + A]`` table rows (angle columns still zero), a fresh tensor."""
        out = self._table.index_select(0, rows.reshape(-1)).view(*rows.shape, self._table.shape[1])
        return out.to(torch.float32)


@dataclass
class InstructionSet:
    """Episodes with their instructions as tensors: the training/evaluation data of speaker and follower.

    Instruction ``m`` belongs to episode ``instr_episode[m]``; the instructions of episode ``e`` are
    rows ``instr_offsets[e]:instr_offsets[e + 1]`` of ``tokens`` (``<BOS> words <EOS> <PAD>...``).
    """

    episodes: list[Episode]
    paths: PathBatch
    tokens: torch.Tensor  # [M, L] int64
    instr_episode: torch.Tensor  # [M] int64
    instr_offsets: torch.Tensor  # [E + 1] int64

    @classmethod
    def build(
        cls, episodes: Sequence[Episode], featurizer: PathFeaturizer, vocab: Vocab, max_len: int
    ) -> InstructionSet:
        episodes = list(episodes)
        device = featurizer.device
        texts = [text for ep in episodes for text in ep.instructions]
        counts = torch.tensor([len(ep.instructions) for ep in episodes], dtype=torch.int64)
        tokens, _ = vocab.encode_batch(texts, max_len, device=device)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(device)
        owner = torch.repeat_interleave(torch.arange(len(episodes)), counts).to(device)
        return cls(episodes, featurizer.index_episodes(episodes), tokens, owner, offsets)

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_instructions(self) -> int:
        return int(self.tokens.shape[0])

    def instruction_rows(self, episode_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``tokens`` belonging to ``episode_index`` and, for each, its position in that index."""
        starts = self.instr_offsets[episode_index]
        counts = self.instr_offsets[episode_index + 1] - starts
        owner = torch.repeat_interleave(torch.arange(len(episode_index), device=counts.device), counts)
        first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        rows = starts[owner] + torch.arange(int(counts.sum()), device=counts.device) - first
        return rows, owner
