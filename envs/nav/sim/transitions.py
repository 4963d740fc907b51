"""The look-up tables ``NavVecEnv`` steps and observes with, laid out for few cache misses per env.

A batched step is bound by random reads: every env sits at an unrelated viewpoint, so each table it
reads costs a cache miss. The tables are therefore packed into records, so that one env's look-ups in
each of them touch one or a few adjacent cache lines:

- a **transition record** per ``(viewpoint, action column)``: one 64-byte int64 row (a cache line)
  with the viewpoint reached, its transition base and index within its scan, flag bytes (move, stop,
  invalid), the edge length (float64 bits) and the heading state after a move. Action column
  ``1 + clamp(action, -1, K + 1)`` selects one of ``[invalid (-1), move 0 .. move K-1, STOP,
  invalid (K+1)]``; column ``K + 3`` is the idle column of inactive envs (nothing happens). A move
  off the candidate mask is invalid; invalid actions count as STOP when the env does not validate.
- a **goal record** per (goal of some episode, viewpoint of the goal's scan), ``goal_base[i] +
  local(viewpoint)`` for instruction ``i``: the shortest distance (float64 bits), the teacher action
  (candidate slot of the next hop, ``K`` at the goal or when unreachable), the reward of a STOP there
  (float64 bits) and whether it is within the success distance. Only goals that episodes use get
  records, which keeps this table far smaller than all pairs of viewpoints.
- an **observation record** per *heading state*: the agent always faces either the start heading
  of its episode or the heading of the edge it last travelled, so its heading is an index into
  ``[0, E)`` (directed edges, in neighbour-mask order) and ``[E, E + I)`` (instruction starts), and
  that index also fixes its viewpoint (the edge's end, the episode's start). The record holds what
  the indices observation needs there: the candidates' feature-table rows (``-1`` for padding and
  STOP), their angle features relative to the heading (4 wide), the candidate mask, ``(sin, cos)``
  of the heading and the viewpoint, in a few whole cache lines. Each observation key is gathered
  from a view of this table straight into its own contiguous tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from lodestar.envs.nav.data.features import NUM_VIEWS
from lodestar.envs.nav.sim.feature_table import angle_features

if TYPE_CHECKING:
    from lodestar.envs.nav.sim.packing import PackedGraphs

# Columns of a transition record.
NEXT_VP, NEXT_BASE, NEXT_LOCAL, FLAGS, LENGTH, HEAD = range(6)
RECORD_WIDTH = 8  # int64 columns: 64 bytes
# Flag bytes inside the FLAGS column.
MOVE, STOP, INVALID = 0, 1, 2
# Columns of a goal record.
DISTANCE, TEACHER, STOP_REWARD, SUCCESS = range(4)
EXTRA_COLUMNS = 4  # action columns besides the K moves: -1, STOP, K + 1, idle


@dataclass
class StepTables:
    """Packed tables of one split (see the module docstring); ``columns`` = ``K + 4``."""

    columns: int
    records: torch.Tensor  # [V * columns, 8] int64 transition records
    goals: torch.Tensor  # [G, 4] int64 goal records
    goal_base: torch.Tensor  # [I] int64 first goal record of each instruction's goal
    observations: torch.Tensor  # [H, W] int64 observation records (see observation_views())
    num_edges: int  # heading states [0, num_edges) are edges, the rest instruction starts
    head_angle: torch.Tensor  # [H] float32 absolute heading

    def transition_base(self, viewpoint: torch.Tensor) -> torch.Tensor:
        """Index of action ``0``'s column minus one: ``t = base + clamp(action, -1, K + 1)``."""
        return viewpoint * self.columns + 1

    @property
    def cand_slots(self) -> int:
        """``K + 1`` candidate slots (the last is STOP)."""
        return self.columns - EXTRA_COLUMNS + 1

    @staticmethod
    def record_views(buffer: torch.Tensor) -> RecordViews:
        """Views of a buffer ``[N, 8]`` of gathered transition records."""
        flags = buffer[:, FLAGS : FLAGS + 1].view(torch.bool)
        return RecordViews(
            next_state=buffer[:, NEXT_VP : NEXT_LOCAL + 1].T,
            move=flags[:, MOVE],
            stop=flags[:, STOP],
            invalid=flags[:, INVALID],
            length=buffer[:, LENGTH].view(torch.float64),
            head=buffer[:, HEAD],
        )

    @staticmethod
    def goal_views(buffer: torch.Tensor) -> GoalViews:
        """Views of a buffer ``[N, 4]`` of gathered goal records."""
        return GoalViews(
            distance=buffer[:, DISTANCE].view(torch.float64),
            teacher=buffer[:, TEACHER],
            stop_reward=buffer[:, STOP_REWARD].view(torch.float64),
            success=buffer[:, SUCCESS : SUCCESS + 1].view(torch.bool)[:, 0],
        )

    def observation_views(self, records: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views by observation key of observation records ``[M, W]`` (the table or gathered rows):
        ``cand_view`` ``[M, C]``, ``cand_angles`` ``[M, C, 4]``, ``cand_mask``, ``heading`` ``[M, 2]``
        (sin, cos) and ``pano_index`` ``[M]``."""
        c, m = self.cand_slots, records.shape[0]
        mask_end = 3 * c + (c + 7) // 8
        return {
            "cand_view": records[:, :c],
            "cand_angles": records[:, c : 3 * c].view(torch.float32).view(m, c, 4),
            "cand_mask": records[:, 3 * c : mask_end].view(torch.bool)[:, :c],
            "heading": records[:, mask_end : mask_end + 1].view(torch.float32),
            "pano_index": records[:, mask_end + 1],
        }


class GoalViews(NamedTuple):
    """Fields of gathered goal records (views into the gather buffer)."""

    distance: torch.Tensor  # [N] float64 shortest distance to the goal
    teacher: torch.Tensor  # [N] int64 teacher action
    stop_reward: torch.Tensor  # [N] float64 reward of a STOP here
    success: torch.Tensor  # [N] bool within the success distance


class RecordViews(NamedTuple):
    """Fields of gathered transition records (views into the gather buffer)."""

    next_state: torch.Tensor  # [3, N] viewpoint, transition base, index within the scan
    move: torch.Tensor  # [N] bool
    stop: torch.Tensor  # [N] bool
    invalid: torch.Tensor  # [N] bool
    length: torch.Tensor  # [N] float64
    head: torch.Tensor  # [N] heading state after a move


def build_step_tables(
    world: PackedGraphs,
    start: torch.Tensor,
    start_heading: torch.Tensor,
    goal: torch.Tensor,
    success_distance: float,
    success_bonus: float,
    failure_penalty: float,
) -> StepTables:
    """The :class:`StepTables` of packed graphs ``world``; ``start``, ``start_heading``, ``goal`` (global
    viewpoints) per instruction."""
    k, v, device = world.max_degree, world.num_viewpoints, world.neighbours.device
    columns = k + EXTRA_COLUMNS
    mask, own = world.neighbour_mask, torch.arange(v, device=device)
    moves = slice(1, k + 1)
    target = own[:, None].repeat(1, columns)
    target[:, moves] = torch.where(mask, world.neighbours, own[:, None])
    flags = torch.zeros(v, columns, 8, dtype=torch.bool, device=device)
    flags[:, moves, MOVE] = mask
    flags[:, :, STOP] = ~flags[:, :, MOVE]
    flags[:, k + 3, STOP] = False  # idle
    flags[:, [0, k + 2], INVALID] = True
    flags[:, moves, INVALID] = ~mask
    length = torch.zeros(v, columns, dtype=torch.float64, device=device)
    length[:, moves] = torch.where(mask, world.edge_length, 0.0)
    edge_id = torch.cumsum(mask.reshape(-1).long(), 0).view(v, k) - 1

    records = torch.zeros(v, columns, RECORD_WIDTH, dtype=torch.int64, device=device)
    records[..., NEXT_VP] = target
    records[..., NEXT_BASE] = target * columns + 1
    records[..., NEXT_LOCAL] = world.local[target]
    records[..., FLAGS] = flags.view(torch.int64).squeeze(-1)
    records[..., LENGTH] = length.view(torch.int64)
    records[:, moves, HEAD] = torch.where(mask, edge_id, 0)

    # Heading states: every directed edge (facing along it at its end), then every instruction start.
    at = torch.cat([world.neighbours[mask], start])
    heading = torch.cat([world.edge_heading[mask], start_heading.to(torch.float32)])
    goals, goal_base = _goal_records(world, goal, success_distance, success_bonus, failure_penalty)
    return StepTables(
        columns=columns,
        records=records.view(-1, RECORD_WIDTH),
        goals=goals,
        goal_base=goal_base,
        observations=_observation_records(world, at, heading),
        num_edges=int(mask.sum()),
        head_angle=heading,
    )


def _goal_records(
    world: PackedGraphs,
    goal: torch.Tensor,
    success_distance: float,
    success_bonus: float,
    failure_penalty: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Goal records of the distinct goals in ``goal`` and each instruction's first record."""
    goals, inverse = torch.unique(goal, return_inverse=True)
    offsets = torch.as_tensor(world.scan_offset, device=goal.device)
    scan = torch.searchsorted(offsets, goals, right=True) - 1
    first, size = offsets[scan], offsets[scan + 1] - offsets[scan]
    base = torch.cumsum(size, 0) - size
    # Every viewpoint of each goal's scan, as a global index, paired with that goal.
    vp = torch.repeat_interleave(first - base, size) + torch.arange(int(size.sum()), device=goal.device)
    pair = world.row_base[vp] + world.local[torch.repeat_interleave(goals, size)]
    distance = world.distances[pair]
    success = distance < success_distance
    stop_reward = torch.where(success, success_bonus, -failure_penalty).to(torch.float64)
    flag = torch.zeros(len(success), 8, dtype=torch.bool, device=goal.device)
    flag[:, 0] = success  # read back through a bool view, like the transition flags
    columns = [distance.view(torch.int64), world.teacher[pair], stop_reward.view(torch.int64)]
    return torch.stack([*columns, flag.view(torch.int64).squeeze(1)], dim=1), base[inverse]


def _observation_records(world: PackedGraphs, at: torch.Tensor, heading: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` int64 rows: cand_view (C), cand angles (C x 4 float32), cand mask (C bytes), (sin, cos)
    of the heading (2 float32), viewpoint; W padded to whole 64-byte lines."""
    h, c = len(at), world.max_degree + 1
    mask = torch.cat([world.neighbour_mask[at], torch.ones(h, 1, dtype=torch.bool, device=at.device)], 1)
    view = torch.where(mask[:, :-1], at[:, None] * NUM_VIEWS + world.edge_view[at], -1)
    view = torch.cat([view, torch.full_like(view[:, :1], -1)], dim=1)
    angles = angle_features(world.edge_heading[at] - heading[:, None], world.edge_elevation[at], 4)
    angles = torch.cat([angles * mask[:, :-1, None], angles.new_zeros(h, 1, 4)], dim=1)  # STOP: zero
    mask_bytes = torch.zeros(h, (c + 7) // 8 * 8, dtype=torch.bool, device=at.device)
    mask_bytes[:, :c] = mask
    sincos = torch.stack([heading.sin(), heading.cos()], dim=1)
    parts = [
        view,
        angles.reshape(h, -1).view(torch.int64),
        mask_bytes.view(torch.int64),
        sincos.view(torch.int64),
        at[:, None],
    ]
    width = sum(p.shape[1] for p in parts)
    parts.append(torch.zeros(h, -width % RECORD_WIDTH, dtype=torch.int64, device=at.device))
    return torch.cat(parts, dim=1)
