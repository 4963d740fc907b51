"""Train a DQN agent on an Atari game.

    python scripts/train_dqn.py --config configs/dqn_atari.yaml env.game=Breakout total_steps=100000
    python scripts/train_dqn.py --resume runs/<name> [total_steps=...]

Logs, the resolved config and checkpoints go to ``runs/<name>/`` (open with ``tensorboard --logdir runs``).
"""

from __future__ import annotations

import sys

from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer, TrainingDiverged
from lodestar.runtime.cli import DIVERGED_EXIT_CODE, resolve_run, run_main, training_parser
from lodestar.runtime.training import train_run


def main(argv: list[str] | None = None) -> int:
    args = training_parser("Train DQN on Atari.", "configs/dqn_atari.yaml", DQNConfig, data=False).parse_args(
        argv
    )
    run = resolve_run(DQNConfig, args, lambda config: f"{config.env.game}-dqn")
    run_dir = run.run_dir
    try:
        result = train_run(DQNTrainer(run.config, run_dir), run.resume, run.checkpoint)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    took = f" in {result.train_seconds / 60:.1f} min" if result.train_seconds is not None else ""
    print(f"trained {result.steps} steps ({result.updates} updates){took}; run directory: {run_dir}")
    if result.last_eval_mean is not None:
        print(f"last evaluation: mean raw return {result.last_eval_mean:.1f}")
    print(f"watch it: tensorboard --logdir {run_dir.parent}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
