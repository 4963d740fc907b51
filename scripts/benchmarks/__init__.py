"""Benchmark implementations; ``scripts/benchmark.py`` is their one entry point.

Each module defines ``run(quick: bool, options: dict[str, str]) -> list[runtime.bench.Figure]``
and reports through :func:`lodestar.runtime.bench.report`.
"""

BENCHMARKS = {
    "rollout": "benchmarks.rollout",
    "replay": "benchmarks.replay",
    "dqn-speed": "benchmarks.dqn_speed",
    "dqn-learning": "benchmarks.dqn_learning",
    "dqn-resume": "benchmarks.dqn_resume",
    "nav-world": "benchmarks.nav_world",
    "nav-sim": "benchmarks.nav_sim",
    "nav-throughput": "benchmarks.nav_throughput",
    "nav-render": "benchmarks.nav_render",
    "speaker-quality": "benchmarks.speaker_quality",
    "synthesis-scale": "benchmarks.synthesis_scale",
    "vln-ablation": "benchmarks.vln_ablation",
    "flywheel": "benchmarks.flywheel",
}
