"""Build the procedural navigation world (houses, graphs, R2R episodes, instructions, view features).

    python scripts/build_nav_world.py --preset tiny|small|benchmark [--out data/nav/<preset>] [--seed N]
                                      [--features cnn|oracle|none] [--overwrite] [key=value ...]

After the world, the view features are built (``features/<cnn|oracle>.hdf5``: rendered panoramas
encoded by the trained view encoder, or the oracle semantic descriptors); ``--features none``
skips that step.

Overrides use the keys of ``lodestar.envs.nav.world.build.BuildConfig``, e.g. ``train_houses=20 house.max_rooms=8
graph.spacing=2.5 workers=2``. Rebuilding an existing directory with the same settings keeps it as it
is; a directory holding a different dataset is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lodestar.envs.nav.perception.features import FeatureConfig, build_features
from lodestar.envs.nav.world.build import PRESETS, build_world, make_config
from lodestar.runtime.cli import run_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the procedural navigation world dataset.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--out", type=Path, help="dataset directory (default data/nav/<preset>)")
    parser.add_argument("--seed", type=int, help="world seed (default: the config's, 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different existing dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--features",
        choices=["cnn", "oracle", "none"],
        default="cnn",
        help="view features to build after the world (default cnn)",
    )
    parser.add_argument("--device", default="auto", help="device for rendering and the view encoder")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the build config")
    args = parser.parse_args(argv)

    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    config = make_config(args.preset, overrides)
    out = args.out or Path("data/nav") / args.preset
    summary = build_world(config, out, overwrite=args.overwrite, show_progress=not args.no_progress)
    episodes, words = summary["episodes"], summary["instruction_words"]
    state = "already built, kept as is" if summary.get("reused") else "built"
    print(f"navigation world '{config.preset}' (seed {config.seed}) {state} in {out}")
    print(
        f"  houses {summary['houses']}  viewpoints {summary['viewpoints']}  edges {summary['edges']}  "
        f"room types {len(summary['room_types'])}  object categories {len(summary['object_categories'])}"
    )
    print("  episodes " + "  ".join(f"{name} {count}" for name, count in episodes.items()))
    print(
        f"  instructions: {words['mean']:.1f} words on average (std {words['std']:.1f}), "
        f"{summary['vocab_words']} distinct words, vocab.txt {summary['vocab_file_size']} tokens"
    )
    print(
        f"  paths: {summary['path_length_m']['mean']:.2f} m and {summary['path_edges']['mean']:.2f} edges "
        f"on average; build time {summary['build_seconds']:.1f} s"
    )
    if args.features != "none":
        features = build_features(
            out,
            name=args.features,
            config=FeatureConfig(kind=args.features),
            device=args.device,
            show_progress=not args.no_progress,
        )
        print(f"  features: {out / 'features' / (args.features + '.hdf5')} ({_feature_line(features)})")
    return 0


def _feature_line(summary: dict) -> str:
    report = summary.get("encoder_report") or {}
    parts = [f"{key} {value:.3f}" for key, value in report.items() if isinstance(value, float)]
    return f"{summary['viewpoints']} viewpoints in {summary['total_seconds']:.0f} s" + (
        "; encoder " + ", ".join(parts) if parts else ""
    )


if __name__ == "__main__":
    run_main(main)
