"""``nav-world``: build time and the shape of the generated navigation world, next to R2R's figures.

Builds the ``benchmark`` preset (``--quick``: ``small``) into a temporary directory with the
configured worker processes and, as the same-run reference, once more in a single process; the two
directories must be byte-identical (the build is deterministic whatever the parallelism). Reports the
build time against the 10-minute budget, counts of houses, viewpoints, edges and episodes per split,
the vocabulary, and the mean instruction and path lengths with R2R's published means as references
(29 words per instruction, 9.9 m per path).

Options: ``preset=<name>``, ``seed=<n>``, ``workers=<n>`` and any other build override ``key=value``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lodestar.envs.nav.world.build import build_world, make_config
from lodestar.runtime.bench import Figure, report

BUDGET_SECONDS = 600.0
R2R_WORDS_PER_INSTRUCTION = 29.0
R2R_PATH_METRES = 9.9


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    options = dict(options)
    preset = options.pop("preset", "small" if quick else "benchmark")
    overrides = [f"{k}={v}" for k, v in options.items()]
    config = make_config(preset, overrides)
    serial = make_config(preset, [*overrides, "workers=1"])
    with tempfile.TemporaryDirectory(prefix="nav-world-") as tmp:
        summary = build_world(config, Path(tmp) / "parallel", show_progress=not quick)
        reference = build_world(serial, Path(tmp) / "serial", show_progress=not quick)
        different = _differences(Path(tmp) / "parallel", Path(tmp) / "serial")
    if different:
        raise RuntimeError(f"parallel and serial builds differ in {different[:5]}")

    def fig(metric: str, value: float, unit: str, **kw: Any) -> Figure:
        return Figure("nav-world", f"{metric} ({preset})", float(value), unit, **kw)

    figures = [
        fig(
            "build time",
            summary["build_seconds"],
            "s",
            reference="same build, 1 process",
            reference_value=reference["build_seconds"],
            target=BUDGET_SECONDS,
            target_on="value",
            higher_is_better=False,
        ),
        fig("houses", summary["houses"], "houses"),
        fig("viewpoints", summary["viewpoints"], "viewpoints"),
        fig("edges", summary["edges"], "edges"),
        fig("mean degree", summary["degree"]["mean"], "edges/viewpoint"),
    ]
    figures += [fig(f"episodes {name}", count, "paths") for name, count in summary["episodes"].items()]
    figures += [
        fig("vocabulary", summary["vocab_words"], "words"),
        fig(
            "instruction length",
            summary["instruction_words"]["mean"],
            "words",
            reference="R2R published mean",
            reference_value=R2R_WORDS_PER_INSTRUCTION,
        ),
        fig(
            "path length",
            summary["path_length_m"]["mean"],
            "m",
            reference="R2R published mean",
            reference_value=R2R_PATH_METRES,
        ),
        fig("path edges", summary["path_edges"]["mean"], "edges"),
    ]
    report(figures, f"nav-world: build the '{preset}' preset (seed {config.seed})")
    return figures


def _differences(a: Path, b: Path) -> list[str]:
    """Relative paths whose bytes differ between two builds (the summaries hold timings)."""
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file()} | {
        p.relative_to(b) for p in b.rglob("*") if p.is_file()
    }
    return sorted(
        str(n)
        for n in names
        if n.name != "summary.json"
        and (not (a / n).is_file() or not (b / n).is_file() or (a / n).read_bytes() != (b / n).read_bytes())
    )
