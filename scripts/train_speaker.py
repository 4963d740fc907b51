"""Train the speaker (trajectory -> instruction) on a navigation dataset.

    python scripts/train_speaker.py --config configs/vln_speaker.yaml --data data/nav/benchmark [key=value ...]
    python scripts/train_speaker.py --resume runs/<name> [key=value ...]

Logs (loss, BLEU-1..4 per split, text samples), the resolved config, periodic checkpoints and the best
speaker (``best.pt``, by val_unseen BLEU-4) go to ``runs/<name>/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer, TrainingDiverged
from runtime.cli import run_main
from runtime.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the VLN speaker.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config (e.g. configs/vln_speaker.yaml)")
    source.add_argument("--resume", type=Path, help="run directory to continue from its newest checkpoint")
    parser.add_argument("--data", type=Path, help="navigation dataset directory (sets data_dir)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (dotted keys)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"data_dir={args.data}"] if args.data is not None else [])

    if args.resume is not None:
        config = load_config(SpeakerTrainConfig, args.resume / "config.yaml", overrides)
        run_dir = args.resume
    else:
        config = load_config(SpeakerTrainConfig, args.config, overrides)
        name = config.name or f"speaker-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(config.runs_dir) / name
        if (run_dir / "checkpoints").exists():
            raise ValueError(f"run directory {run_dir} already has checkpoints: use --resume {run_dir}")

    trainer = SpeakerTrainer(config, run_dir)
    if args.resume is not None:
        trainer.restore()
        print(f"resumed {run_dir} at iteration {trainer.iteration}", flush=True)
    try:
        result = trainer.train()
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"trained {result.iterations} iterations; run directory: {run_dir}")
    scores = ", ".join(
        f"{k} {v:.4f}" for k, v in result.last_scores.items() if k.endswith(("bleu1", "bleu4"))
    )
    print(f"last evaluation: {scores}")
    print(
        f"best speaker: {run_dir / 'best.pt'} ({config.select_split} BLEU-4 {result.best_score:.4f} "
        f"at iteration {result.best_iteration})"
    )
    print(f"watch it: tensorboard --logdir {run_dir.parent}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
