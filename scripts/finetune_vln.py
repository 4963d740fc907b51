"""Fine-tune the navigation follower: teacher forcing + DAgger + A2C on the human train split.

    python scripts/finetune_vln.py --config configs/vln_finetune.yaml --data data/nav/benchmark [init=runs/<pretrain run>]
    torchrun --nproc_per_node 2 scripts/finetune_vln.py --config configs/vln_finetune.yaml --data ... name=<run>
    python scripts/finetune_vln.py --resume runs/<name> [key=value ...]

Without ``init`` the follower starts from scratch. Under ``torchrun`` every process runs its own envs
(different episodes) and gradients are averaged; process 0 validates, logs and writes checkpoints. Logs (losses, training success, episodes/s,
validation NE/SR/OSR/SPL/TL/nDTW/SDTW/CLS, episode maps and GIFs), the resolved config, periodic
checkpoints and the best follower (``best.pt``, by ``select_metric`` on ``select_split``) go to
``runs/<name>/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from agents.vln.distributed import Distributed
from agents.vln.finetune import FinetuneConfig, FinetuneTrainer, TrainingDiverged
from runtime.cli import run_main
from runtime.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune the VLN follower (IL + DAgger + A2C).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config (e.g. configs/vln_finetune.yaml)")
    source.add_argument("--resume", type=Path, help="run directory to continue from its newest checkpoint")
    parser.add_argument("--data", type=Path, help="navigation dataset directory (sets data_dir)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (dotted keys)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"data_dir={args.data}"] if args.data is not None else [])

    if args.resume is not None:
        config = load_config(FinetuneConfig, args.resume / "config.yaml", overrides)
        run_dir = args.resume
    else:
        config = load_config(FinetuneConfig, args.config, overrides)
        if config.name is None and Distributed.from_env().enabled:
            raise ValueError("under torchrun pass name=<run name> so that every process writes the same run")
        kind = "init" if config.init else "scratch"
        name = config.name or f"finetune-{kind}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(config.runs_dir) / name
        if (run_dir / "checkpoints").exists():
            raise ValueError(f"run directory {run_dir} already has checkpoints: use --resume {run_dir}")

    trainer = FinetuneTrainer(config, run_dir)
    try:
        if args.resume is not None:
            trainer.restore()
            if trainer.dist.is_main:
                print(f"resumed {run_dir} at iteration {trainer.iteration}", flush=True)
        try:
            result = trainer.train()
        except TrainingDiverged as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    finally:
        trainer.close()
    if not trainer.dist.is_main:
        return 130 if result.interrupted else 0
    print(
        f"fine-tuned {result.iterations} iterations ({result.episodes_per_second:.1f} episodes/s); run directory: {run_dir}"
    )
    shown = {
        k: v
        for k, v in result.last_scores.items()
        if k.startswith("eval/") and k.rsplit("/", 1)[-1] in ("sr", "spl", "ndtw")
    }
    if shown:
        print("last validation: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())))
    if result.best_iteration >= 0:
        print(
            f"best follower: {run_dir / 'best.pt'} ({config.select_split} {config.select_metric} "
            f"{result.best_score:.4f} at iteration {result.best_iteration})"
        )
    print(f"watch it: tensorboard --logdir {run_dir.parent}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
