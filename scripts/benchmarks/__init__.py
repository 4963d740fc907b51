"""Benchmark implementations; ``scripts/benchmark.py`` is their one entry point.

Each module defines ``run(quick: bool, options: dict[str, str]) -> list[runtime.bench.Figure]``
and reports through :func:`runtime.bench.report`.
"""

BENCHMARKS = {
    "rollout": "scripts.benchmarks.rollout",
    "replay": "scripts.benchmarks.replay",
    "dqn-speed": "scripts.benchmarks.dqn_speed",
    "dqn-learning": "scripts.benchmarks.dqn_learning",
    "nav-world": "scripts.benchmarks.nav_world",
    "nav-sim": "scripts.benchmarks.nav_sim",
    "nav-render": "scripts.benchmarks.nav_render",
    "speaker-quality": "scripts.benchmarks.speaker_quality",
    "synthesis-scale": "scripts.benchmarks.synthesis_scale",
    "vln-ablation": "scripts.benchmarks.vln_ablation",
}
