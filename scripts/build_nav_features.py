"""Render every viewpoint of a built navigation world and cache its view features in HDF5.

    python scripts/build_nav_features.py --data data/nav/benchmark [--features cnn|oracle] [--name NAME]
                                         [--image-size 64] [--device auto] [key=value ...]

Writes ``<data>/features/<name>.hdf5`` (keys ``<scan>_<viewpoint>`` -> float16 ``[36, D]``),
``<data>/features/<name>_summary.json`` and, for CNN features, ``<data>/features/encoder.pt`` (reused
when present: delete it to retrain). An interrupted build, even one killed in its first scan, resumes
from its last finished scan (kept in ``<name>.hdf5.scans/`` until the store is complete). Overrides use the
keys of ``lodestar.envs.nav.perception.features.FeatureConfig``, e.g. ``encoder.epochs=2 encoder.train_views=4000
batch_viewpoints=16``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.perception.features import FEATURE_KINDS, FeatureConfig, build_features
from lodestar.runtime.cli import run_main
from lodestar.runtime.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a navigation world and cache its view features.")
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset directory built by build_nav_world.py"
    )
    parser.add_argument(
        "--features", choices=FEATURE_KINDS, default="cnn", help="learned CNN or oracle features"
    )
    parser.add_argument("--name", help="feature file name (default: the --features kind)")
    parser.add_argument("--image-size", type=int, default=64, help="rendered view size in pixels")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:index]")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of FeatureConfig")
    args = parser.parse_args(argv)

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    overrides = [f"kind={args.features}", f"image_size={args.image_size}", *args.overrides]
    config = load_config(FeatureConfig, None, overrides)
    name = args.name or config.kind
    summary = build_features(args.data, name, config, args.device, show_progress=not args.no_progress)
    print(f"features '{name}' ({summary['kind']}, D={summary['feature_dim']}) in {summary['file']}")
    print(
        f"  {summary['scans']} scans, {summary['viewpoints']} viewpoints, {summary['views']} views; "
        f"{summary['scans_written']} scans written, {summary['scans_kept']} kept from an earlier run"
    )
    print(
        f"  render {summary['render_seconds']:.1f} s, encode {summary['encode_seconds']:.1f} s, "
        f"total {summary['total_seconds']:.1f} s on {summary['device']}"
    )
    quality = summary.get("encoder_report", {}).get("val_unseen")
    if quality:
        print(
            f"  encoder on val_unseen views: room type accuracy {quality['room_accuracy']:.3f} "
            f"(majority class {quality['room_majority_accuracy']:.3f}), "
            f"object mAP {quality['object_map']:.3f} "
            f"(prior {quality['object_prior_map']:.3f})"
        )
    elif summary["kind"] == "cnn":
        print("  encoder report: " + json.dumps(summary.get("encoder_report", {})))
    names = NavDataset(args.data).feature_names()
    if len(names) > 1:  # data.features=auto now has no single file to pick
        print(
            f"  {args.data / 'features'} holds {len(names)} features files ({', '.join(names)}): "
            f"the training stages need data.features=<name>, e.g. data.features={name}"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
