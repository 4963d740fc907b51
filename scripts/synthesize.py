"""Label sampled R2R-rule paths with a trained speaker: the synthetic data for pretraining.

    python scripts/synthesize.py --data data/nav/benchmark --speaker runs/<speaker-run> \\
        [--paths N] [--decodes-per-path K] [--decoding greedy|sample|beam] [--new-houses N] \\
        [--split-name synthetic] [--overwrite] [--config configs/vln_synthesize.yaml] [key=value ...]

Writes ``<data>/R2R_<split>.json`` and ``<data>/trajectories/<split>.pt`` (+ ``.json``) and prints
where they are and the pretraining command that uses them. An interrupted run resumes where it stopped
when started again with the same options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lodestar.agents.vln.speaker import load_speaker
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.pretrain.synthesis import SynthesisConfig, synthesize
from lodestar.pretrain.trainer import PretrainConfig
from lodestar.runtime.cli import config_epilog, run_main, script_command
from lodestar.runtime.config import load_config

SCRIPTS = Path(__file__).absolute().parent
PRETRAIN_CONFIG = SCRIPTS.parent / "configs" / "vln_pretrain.yaml"

FLAGS = {
    "paths": "paths",
    "decodes_per_path": "decodes_per_path",
    "decoding": "decoding",
    "new_houses": "new_houses",
    "split_name": "split_name",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Synthesize instructions for sampled paths with a speaker.",
        epilog=config_epilog(SynthesisConfig, "configs/vln_synthesize.yaml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="navigation dataset directory")
    parser.add_argument("--speaker", type=Path, required=True, help="speaker run directory or .pt file")
    parser.add_argument(
        "--config", type=Path, help="YAML config (default: configs/vln_synthesize.yaml values)"
    )
    parser.add_argument("--paths", type=int, help="number of paths to sample")
    parser.add_argument("--decodes-per-path", type=int, help="instructions per path")
    parser.add_argument("--decoding", choices=["greedy", "sample", "beam"])
    parser.add_argument("--new-houses", type=int, help="fresh houses to generate and sample paths in")
    parser.add_argument("--split-name", help="output split name (default synthetic)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing split of that name")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(SynthesisConfig, args.config, overrides)
    report = synthesize(args.data, args.speaker, config, overwrite=args.overwrite)
    rate = (
        f"{report.instructions_per_second:.1f} instructions/s" if report.seconds > 0 else "nothing to decode"
    )
    print(
        f"synthesized {report.paths} paths x {config.decodes_per_path} instructions ({rate}); "
        f"new houses: {len(report.new_scans)}"
    )
    for kind, path in report.outputs.items():
        print(f"  {kind}: {path}")
    if report.complete:
        print(f"pretrain on it: {pretrain_command(args.data, args.speaker, config)}")
    return 0


def pretrain_command(data: Path, speaker: Path, config: SynthesisConfig) -> str:
    """The pretraining command that reads the split just written, with the features it was made with."""
    features = config.features or load_speaker(speaker).features
    overrides = NavDataset(data).features_overrides(features)
    if config.split_name not in load_config(PretrainConfig, PRETRAIN_CONFIG).data.optional_sources:
        overrides.append(f"data.optional_sources=[{config.split_name}]")
    return script_command(
        SCRIPTS / "pretrain_vln.py", "--config", PRETRAIN_CONFIG, "--data", data, *overrides
    )


if __name__ == "__main__":
    run_main(main)
