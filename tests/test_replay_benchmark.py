"""Smoke test of the `replay` benchmark: tiny sizes, checks the BENCH output contract and its references.

The TorchRL rows need TorchRL's C++ sum trees; where its wheel's binary does not match the installed
torch, the first run on a machine builds them (a minute or two, cached under torch's extension dir), so
the test with TorchRL is marked slow and the default suite checks the rows without it.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest
import torch

from benchmarks import replay as replay_benchmark

TINY = {"device": "cpu", "capacity": "1280", "memory_capacity": "800", "iterations": "5"}


def run_tiny(capsys: pytest.CaptureFixture[str], **options: str) -> tuple[list[dict[str, Any]], str]:
    """Run the quick benchmark at tiny sizes; its BENCH records and its whole output."""
    threads = torch.get_num_threads()
    try:
        figures = replay_benchmark.run(quick=True, options={**TINY, **options})
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    lines = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("BENCH ")]
    assert len(lines) == len(figures)
    return lines, out


@pytest.mark.slow
def test_replay_benchmark_reports_every_figure_with_its_same_run_reference(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines, out = run_tiny(capsys)
    for record in lines:
        assert record["benchmark"] == "replay" and record["device"] == "cpu"
        assert record["value"] > 0 and record["reference_value"] > 0 and record["ratio"] is not None
        assert record["target"] is not None and isinstance(record["meets_target"], bool)
    memory = [r for r in lines if r["unit"] == "GB"]
    assert len(memory) == 2
    assert all(r["reference_value"] == pytest.approx((2 * 4 * 84 * 84 + 14) * 1e-3) for r in memory)
    assert all(r["value"] < r["reference_value"] / 5 for r in memory)  # dedup works even at this tiny size
    latency = [r for r in lines if r["unit"] == "ms"]
    rows = {(r["metric"].split(" at ")[0], r["reference"].split()[0]) for r in latency}
    assert rows == {
        ("uniform sample(32)", "SB3"),
        ("uniform sample(32)", "TorchRL"),
        ("add one row of 64 streams", "SB3"),
        ("add one row of 64 streams", "TorchRL"),
        ("PER sample(32)+update(32)", "TorchRL"),
    }
    for record in latency:  # ours must be no slower: the ratio ours / reference is at most 1
        assert record["target"] == 1.0 and record["target_kind"] == "ratio <="
        assert record["meets_target"] == (record["value"] / record["reference_value"] <= 1.0)
    (per,) = [r for r in latency if r["metric"].startswith("PER")]
    assert "C++ sum trees" in per["reference"]
    # The route table lists every contender, each TorchRL route included, not only the fastest.
    listed = [line for line in out.splitlines() if line.startswith("PER sample(32)+update(32): TorchRL")]
    for route in (
        "PrioritizedReplayBuffer, TensorDict",
        "ReplayBuffer + PrioritizedSampler, dict of tensors",
    ):
        assert sum(route in line for line in listed) == 1


def test_torchrl_0_skips_the_torchrl_rows(capsys: pytest.CaptureFixture[str]) -> None:
    lines, out = run_tiny(capsys, torchrl="0")
    assert "TorchRL" not in out
    (per,) = [r for r in lines if r["metric"].startswith("PER")]
    assert per["reference"] is None and per["target"] is None and per["meets_target"] is None
    assert {r["reference"] for r in lines if r["unit"] == "ms" and r is not per} == {
        "SB3 ReplayBuffer.sample",
        "SB3 ReplayBuffer.add (NumPy)",
    }
    for record in lines:
        if record is not per:
            assert record["target"] is not None
            assert record["meets_target"] == (
                record["ratio"] <= record["target"]
                if record["unit"] == "ms"
                else record["value"] <= record["target"]
            )


def test_missing_torchrl_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "torchrl" else find_spec(name, *args)
    )
    with pytest.raises(SystemExit, match=r"pip install torchrl.*torchrl=0"):
        replay_benchmark.run(quick=True, options=TINY)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown replay benchmark option"):
        replay_benchmark.run(quick=True, options={"capacty": "10"})
