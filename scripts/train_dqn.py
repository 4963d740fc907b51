"""Train a DQN agent on an Atari game.

    python scripts/train_dqn.py --config configs/dqn_atari.yaml env.game=Breakout total_steps=100000
    python scripts/train_dqn.py --resume runs/<name> [total_steps=...]

Logs, the resolved config and checkpoints go to ``runs/<name>/`` (open with ``tensorboard --logdir runs``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from agents.dqn.config import DQNConfig
from agents.dqn.trainer import DQNTrainer, TrainingDiverged
from runtime.cli import run_main
from runtime.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train DQN on Atari.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config (e.g. configs/dqn_atari.yaml)")
    source.add_argument("--resume", type=Path, help="run directory to continue from its newest checkpoint")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (dotted keys)")
    args = parser.parse_args(argv)

    if args.resume is not None:
        config = load_config(DQNConfig, args.resume / "config.yaml", args.overrides)
        run_dir = args.resume
    else:
        config = load_config(DQNConfig, args.config, args.overrides)
        name = config.name or f"{config.env.game}-dqn-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(config.runs_dir) / name
        if (run_dir / "checkpoints").exists():
            raise ValueError(f"run directory {run_dir} already has checkpoints: use --resume {run_dir}")

    trainer = DQNTrainer(config, run_dir)
    if args.resume is not None:
        trainer.restore()
        print(f"resumed {run_dir} at step {trainer.collector.global_step}", flush=True)
    try:
        result = trainer.train()
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(f"trained {result.steps} steps ({result.updates} updates); run directory: {run_dir}")
    if result.last_eval_mean is not None:
        print(f"last evaluation: mean raw return {result.last_eval_mean:.1f}")
    print(f"watch it: tensorboard --logdir {run_dir.parent}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
