"""``TrajectoryLog``: the paths of a batched navigation env, logged cheaply and replayed on demand.

A step of ``NavVecEnv`` logs one ``[2, N]`` copy of every env's (heading state, viewpoint), plus the
rows whose episodes finished and the episodes started on which rows; no per-episode path is kept on
device. :meth:`TrajectoryLog.records` replays the log into R2R submission records. A move always
changes the viewpoint (graphs have no self-loops); STOP and the steps of inactive envs do not, so a
path grows exactly when the viewpoint changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class TrajectoryLog:
    """Per-step positions of ``N`` envs and the finished paths recovered from them.

    ``start_viewpoint`` / ``start_heading_state`` give each instruction's start (global viewpoint,
    heading state); ``heading_angle`` maps heading states to headings in radians.
    """

    def __init__(
        self,
        viewpoint_ids: Sequence[str],
        instruction_ids: Sequence[str],
        start_viewpoint: torch.Tensor,
        start_heading_state: torch.Tensor,
        heading_angle: torch.Tensor,
    ) -> None:
        self._viewpoint_ids, self._instruction_ids = viewpoint_ids, instruction_ids
        self._start = list(zip(start_viewpoint.tolist(), start_heading_state.tolist(), strict=True))
        self._heading_angle = heading_angle.tolist()
        self.clear()

    def clear(self) -> None:
        """Forget everything (a reset of the env)."""
        self._log: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
        self._open: dict[int, tuple[int, list[tuple[int, int]]]] = {}  # row -> (instruction, path)
        self._done: list[tuple[int, list[tuple[int, int]]]] = []

    def started(self, rows: torch.Tensor, instructions: torch.Tensor) -> None:
        """Episodes of ``instructions`` start on ``rows`` (tensors the caller never writes again)."""
        self._log.append(("start", rows, instructions))

    def stepped(self, position: torch.Tensor) -> None:
        """Every env's ``[2, N]`` (heading state, viewpoint) after a step."""
        self._log.append(("step", position.clone(), None))

    def finished(self, rows: torch.Tensor) -> None:
        """The episodes on ``rows`` ended at the last logged step."""
        self._log.append(("finish", rows, None))

    def records(self, clear: bool = False) -> list[dict[str, Any]]:
        """Finished episodes in finishing order as ``{"instr_id", "trajectory": [[vp, heading, 0.0], ...]}``;
        ``clear`` forgets them afterwards."""
        for kind, first, second in self._log:
            if kind == "start":
                assert second is not None  # "start" entries hold the instructions (see started)
                for row, instruction in zip(first.tolist(), second.tolist(), strict=True):
                    self._open[row] = (instruction, [self._start[instruction]])
            elif kind == "step":
                heads, viewpoints = first.tolist()
                for row, (_, path) in self._open.items():
                    if viewpoints[row] != path[-1][0]:
                        path.append((viewpoints[row], heads[row]))
            else:
                self._done.extend(self._open.pop(row) for row in first.tolist())
        self._log = []
        ids, angles = self._viewpoint_ids, self._heading_angle
        records = [
            {
                "instr_id": self._instruction_ids[instruction],
                "trajectory": [[ids[vp], angles[head], 0.0] for vp, head in path],
            }
            for instruction, path in self._done
        ]
        if clear:
            self._done = []
        return records
