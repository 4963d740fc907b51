"""The main job on the embedded defaults: a short DQN run on a real Atari game, logged to TensorBoard.

    python scripts/demo.py [--steps 20000] [--game Breakout] [--runs-dir runs]

Trains DQN briefly (data-efficient preset, small budget), evaluates it, records an evaluation
video, and prints where the TensorBoard run is and how to open it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _bootstrap  # noqa: F401

from agents.dqn.config import DQNConfig
from agents.dqn.trainer import DQNTrainer
from runtime.cli import run_main
from runtime.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def run_dqn(steps: int, game: str, runs_dir: Path) -> Path:
    overrides = [
        f"env.game={game}",
        f"total_steps={steps}",
        f"name={game.lower()}-demo",
        f"runs_dir={runs_dir}",
        "replay.capacity=20000",
        "replay.learning_starts=1000",
        "replay.replay_ratio=0.25",
        "agent.n_step=3",
        f"eval.every_steps={steps}",
        "eval.episodes=2",
        "eval.video_max_steps=500",
        f"checkpoint_every_steps={steps}",
        "save_replay=false",
    ]
    config = load_config(DQNConfig, ROOT / "configs" / "dqn_atari100k.yaml", overrides)
    run_dir = runs_dir / config.name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    result = DQNTrainer(config, run_dir).train()
    print(
        f"DQN on {game}: {result.steps} steps, {result.updates} updates, eval mean return {result.last_eval_mean}"
    )
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Lodestar demo job.")
    parser.add_argument("--steps", type=int, default=20_000, help="DQN agent steps")
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    run_dir = run_dqn(args.steps, args.game, args.runs_dir)
    print(f"\nTensorBoard run: {run_dir.resolve()}")
    print(f"open it with:    .venv/bin/tensorboard --logdir {args.runs_dir} --host 127.0.0.1 --port 6006")
    return 0


if __name__ == "__main__":
    run_main(main)
