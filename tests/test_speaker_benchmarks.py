"""Smoke tests of the ``speaker-quality`` and ``synthesis-scale`` benchmarks (``--quick``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), name, "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LODESTAR_NO_PROGRESS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [
        json.loads(line[len("BENCH ") :]) for line in done.stdout.splitlines() if line.startswith("BENCH ")
    ]
    assert records and all(r["benchmark"] == name for r in records)
    assert all(r["reference_value"] is not None for r in records)
    return records


@pytest.mark.slow
def test_speaker_quality_quick():
    records = _bench("speaker-quality")
    metrics = {r["metric"] for r in records}
    for split in ("val_seen", "val_unseen"):
        for n in (1, 4):
            for baseline in ("retrieval", "most common"):
                assert f"{split} BLEU-{n}: speaker vs {baseline}" in metrics
    targeted = [r for r in records if r["target"] is not None]
    assert [r["metric"] for r in targeted] == ["val_unseen BLEU-4: speaker vs retrieval"]
    assert all(0.0 <= r["value"] <= 1.0 and 0.0 <= r["reference_value"] <= 1.0 for r in records)


@pytest.mark.slow
def test_synthesis_scale_quick():
    records = _bench("synthesis-scale")
    metrics = [r["metric"] for r in records]
    assert any(m.startswith("greedy instructions/s") for m in metrics)
    assert any(m.startswith("sample instructions/s") for m in metrics)
    wall = next(r for r in records if r["metric"].startswith("wall time for 200,000"))
    assert "extrapolated" in wall["metric"] and wall["target"] == 1800.0 and wall["value"] > 0
    assert any(m.startswith("disk for 200,000") for m in metrics)
