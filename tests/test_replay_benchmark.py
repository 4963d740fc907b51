"""Smoke test of the `replay` benchmark: tiny sizes, checks the BENCH output contract."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import replay as replay_benchmark


def test_replay_benchmark_reports_every_figure_with_its_reference(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        figures = replay_benchmark.run(
            quick=True,
            options={"device": "cpu", "capacity": "1280", "memory_capacity": "800", "iterations": "5"},
        )
    finally:
        torch.set_num_threads(threads)
    lines = [
        json.loads(line[6:]) for line in capsys.readouterr().out.splitlines() if line.startswith("BENCH ")
    ]
    assert len(lines) == len(figures) == 4
    for record in lines:
        assert record["benchmark"] == "replay" and record["device"] == "cpu"
        assert record["value"] > 0 and record["reference_value"] > 0 and record["ratio"] is not None
    memory = [r for r in lines if r["unit"] == "GB"]
    assert all(r["reference_value"] == pytest.approx((2 * 4 * 84 * 84 + 14) * 1e-3) for r in memory)
    assert all(r["value"] < r["reference_value"] / 5 for r in memory)  # dedup works even at this tiny size


def test_unknown_option_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown replay benchmark option"):
        replay_benchmark.run(quick=True, options={"capacty": "10"})
