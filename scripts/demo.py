"""The main job on the embedded defaults: a short DQN run on Atari, then the navigation pipeline.

    python scripts/demo.py [--steps 10000] [--game RoadRunner] [--runs-dir runs] [--skip-dqn] [--skip-nav]

1. Trains DQN on a real Atari game with the data-efficient Atari-100k preset for 10,000 agent steps
   (RoadRunner: enough to beat random play clearly), evaluates it on full games, prints its score
   beside the published random and human scores and records an evaluation video.
2. Runs the navigation pipeline on the ``small`` world preset with small budgets: build the world
   and its view features, train the speaker, synthesize instructions for new paths, pretrain the
   follower (MLM + action prediction), fine-tune it (imitation + DAgger + A2C) and evaluate it on
   val_unseen (metrics, submission file, maps and GIFs in TensorBoard).

Everything is logged under ``runs/``; the script ends by printing how to open TensorBoard.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.scores import human_normalized, reference_scores
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.envs.atari import resolve_game
from lodestar.runtime.cli import positive_int, run_main
from lodestar.runtime.config import load_config

ROOT = Path(__file__).resolve().parent.parent
EVAL_EPISODES = 8


def run_dqn(steps: int, game: str, runs_dir: Path) -> Path:
    """The Atari-100k preset for ``steps`` agent steps, one evaluation at the end, its score printed."""
    overrides = [
        f"env.game={game}",
        f"total_steps={steps}",
        f"name={resolve_game(game)}-demo",
        f"runs_dir={runs_dir}",
        # One torch thread: batch-32 updates gain little from more, and on a busy 2-core machine a
        # second thread made every step about 3x slower (its thread pool waits for a free core).
        "torch_threads=1",
        f"eval.every_steps={steps}",
        f"eval.episodes={EVAL_EPISODES}",
        # 27,000 frames = 7.5 minutes of play per game: bounds the demo's evaluation time (a stuck
        # agent would otherwise play 30 minutes of game time per episode)
        "eval.max_episode_frames=27000",
        f"checkpoint_every_steps={steps}",
        "save_replay=false",
    ]
    config = load_config(DQNConfig, ROOT / "configs" / "dqn_atari100k.yaml", overrides)
    run_dir = runs_dir / config.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result = DQNTrainer(config, run_dir).train()
    minutes = "" if result.train_seconds is None else f" in {result.train_seconds / 60:.1f} min"
    print(f"DQN on {config.env.game}: {result.steps} agent steps, {result.updates} updates{minutes}")
    if result.last_eval_mean is not None:
        print(
            f"evaluation: mean return {result.last_eval_mean:.1f} over {EVAL_EPISODES} full games "
            f"(epsilon {config.eval.epsilon}, Atari-100k protocol, games capped at 7.5 minutes)"
        )
        reference = reference_scores().get(resolve_game(game))
        if reference is not None:
            hns = human_normalized(game, result.last_eval_mean)
            print(
                f"reference (published Atari-57 table): random play {reference.random:.1f}, "
                f"human {reference.human:.1f}; human-normalized score {hns:.3f}"
            )
    return run_dir


def _stage(title: str, script: str, *args: str) -> None:
    print(f"\n== {title}: {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], check=True)


# Demo-sized budgets per stage (the configs hold the full-size defaults).
SPEAKER_BUDGET = ["iterations=200", "eval_every=100", "checkpoint_every=100"]
PRETRAIN_BUDGET = [
    "iterations=50",
    "batch_size=16",
    "eval_every=50",
    "checkpoint_every=50",
    "data.eval_max_paths=50",
]
FINETUNE_BUDGET = [
    "iterations=30",
    "eval_every=30",
    "checkpoint_every=30",
    "data.eval_max_episodes=100",
    "log_episodes=1",
]


def run_navigation(data: Path, runs_dir: Path) -> list[Path]:
    """The PREVALENT recipe end to end on the small preset, with demo-sized budgets."""
    data_args = ["--data", str(data)]

    def training_stage(title: str, script: str, config: str, name: str, *overrides: str) -> None:
        options = ["--config", str(ROOT / "configs" / config), *data_args]
        _stage(title, script, *options, f"name={name}", *overrides, f"runs_dir={runs_dir}")

    _stage("world + view features", "build_nav_world.py", "--preset", "small", "--out", str(data))
    training_stage("speaker", "train_speaker.py", "vln_speaker.yaml", "demo-speaker", *SPEAKER_BUDGET)
    speaker = ["--speaker", str(runs_dir / "demo-speaker")]
    _stage("synthesis", "synthesize.py", *data_args, *speaker, "--paths", "500", "--overwrite")
    training_stage("pretraining", "pretrain_vln.py", "vln_pretrain.yaml", "demo-pretrain", *PRETRAIN_BUDGET)
    init = f"init={runs_dir / 'demo-pretrain'}"
    training_stage(
        "fine-tuning", "finetune_vln.py", "vln_finetune.yaml", "demo-finetune", init, *FINETUNE_BUDGET
    )
    eval_dirs = ["--out-dir", str(runs_dir / "demo-eval"), "--log-dir", str(runs_dir / "demo-eval")]
    checkpoint = ["--checkpoint", str(runs_dir / "demo-finetune")]
    _stage("evaluation", "evaluate_vln.py", *checkpoint, *data_args, "--split", "val_unseen", *eval_dirs)
    return [runs_dir / name for name in ("demo-speaker", "demo-pretrain", "demo-finetune", "demo-eval")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Lodestar demo job.")
    parser.add_argument("--steps", type=positive_int, default=10_000, help="DQN agent steps")
    parser.add_argument("--game", default="RoadRunner", help="Atari game (any ale-py ROM)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--nav-data", type=Path, default=Path("data/nav/small"))
    parser.add_argument("--skip-dqn", action="store_true")
    parser.add_argument("--skip-nav", action="store_true")
    args = parser.parse_args(argv)
    run_dirs = []
    if not args.skip_dqn:
        run_dirs.append(run_dqn(args.steps, args.game, args.runs_dir))
    if not args.skip_nav:
        run_dirs += run_navigation(args.nav_data, args.runs_dir)
    print("\nTensorBoard runs:")
    for run_dir in run_dirs:
        print(f"  {run_dir.resolve()}")
    print(f"open them with: .venv/bin/tensorboard --logdir {args.runs_dir} --host 127.0.0.1 --port 6006")
    print("then browse to http://127.0.0.1:6006")
    return 0


if __name__ == "__main__":
    run_main(main)
