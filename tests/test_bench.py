"""The benchmark contract: the table plus one ``BENCH`` JSON line per figure, and the timers."""

from __future__ import annotations

import io
import json
import time

import torch

from lodestar.runtime.bench import Figure, report, timed_rate, timed_seconds


def test_report_prints_a_table_and_one_json_line_per_figure() -> None:
    figures = [
        Figure("demo", "speed", 300.0, "steps/s", "reference loop", 100.0, target=2.0),
        Figure("demo", "memory", 5.0, "GB", "published", 10.0, target=0.4, higher_is_better=False),
    ]
    out = io.StringIO()
    report(figures, "demo", out)
    lines = [
        json.loads(line[len("BENCH ") :]) for line in out.getvalue().splitlines() if line.startswith("BENCH ")
    ]
    assert [line["metric"] for line in lines] == ["speed", "memory"]
    assert lines[0]["ratio"] == 3.0 and lines[0]["meets_target"] is True
    assert lines[1]["reference"] == "published" and lines[1]["meets_target"] is False


def test_timers_measure_the_call() -> None:
    seconds = timed_seconds(lambda: time.sleep(0.05), torch.device("cpu"))
    assert 0.045 <= seconds < 1.0
    rate = timed_rate(lambda: time.sleep(0.05), 10)
    assert 5.0 < rate <= 10 / 0.045
