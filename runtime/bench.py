"""The benchmark output contract: a human table plus one ``BENCH {json}`` line per figure.

Every figure is reported next to the reference it is compared with, measured in the same run on the
same machine, so that ratios stay meaningful on noisy machines.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import torch


@dataclass
class Figure:
    """One measured figure and its same-run reference.

    ``higher_is_better`` decides how ``ratio`` is compared with ``target``: for throughput the
    ratio is ``value / reference_value`` and must reach ``target``; for costs (latency, bytes) the
    ratio is still ``value / reference_value`` but must stay at or below ``target``. When the
    target is an absolute bound rather than a ratio, set ``target_on="value"``.
    """

    benchmark: str
    metric: str
    value: float
    unit: str
    reference: str | None = None
    reference_value: float | None = None
    target: float | None = None
    higher_is_better: bool = True
    target_on: str = "ratio"
    device: str = "cpu"

    @property
    def ratio(self) -> float | None:
        if self.reference_value in (None, 0):
            return None
        return self.value / self.reference_value

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        measured = self.ratio if self.target_on == "ratio" else self.value
        if measured is None:
            return False
        return measured >= self.target if self.higher_is_better else measured <= self.target

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("higher_is_better")
        record.pop("target_on")
        record["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        record["meets_target"] = self.meets_target
        record["target_kind"] = ("ratio" if self.target_on == "ratio" else "value") + (
            " >=" if self.higher_is_better else " <="
        )
        return {
            key: record[key]
            for key in (
                "benchmark",
                "metric",
                "value",
                "unit",
                "reference",
                "reference_value",
                "ratio",
                "target",
                "target_kind",
                "device",
                "meets_target",
            )
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{value:.4g}"


def report(figures: list[Figure], title: str, out: TextIO | None = None) -> None:
    """Print the human table, then one ``BENCH`` JSON line per figure."""
    out = sys.stdout if out is None else out
    header = ("metric", "value", "unit", "reference", "ref value", "ratio", "target", "ok")
    rows = [
        (
            f.metric,
            _fmt(f.value),
            f.unit,
            f.reference or "-",
            _fmt(f.reference_value),
            _fmt(f.ratio),
            "-" if f.target is None else ("≥" if f.higher_is_better else "≤") + _fmt(f.target),
            "-" if f.meets_target is None else ("yes" if f.meets_target else "NO"),
        )
        for f in figures
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n== {title} ==", file=out)
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
    for f in figures:
        print("BENCH " + json.dumps(f.to_json()), file=out)
    out.flush()


def timed_seconds(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Wall seconds of one call of ``fn``; CUDA work queued before or by it is waited for."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def timed_rate(fn: Callable[[], Any], count: int, device: torch.device | None = None) -> float:
    """Run ``fn`` once and return ``count / seconds`` (see :func:`timed_seconds`)."""
    return count / timed_seconds(fn, device)
