"""Pretrain the navigation follower on human + speaker-synthesized triplets (MLM + action prediction).

    python scripts/pretrain_vln.py --config configs/vln_pretrain.yaml --data data/nav/benchmark [key=value ...]
    torchrun --nproc_per_node 2 scripts/pretrain_vln.py --config configs/vln_pretrain.yaml --data ...
    python scripts/pretrain_vln.py --resume runs/<name> [key=value ...]

``batch_size`` is the global batch, split evenly over the processes (DDP: gloo on CPU, nccl on CUDA).
Rank 0 writes TensorBoard logs, the resolved config and checkpoints to ``runs/<name>/``; every
checkpoint holds the follower for ``scripts/finetune_vln.py init=runs/<name>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from agents.vln.distributed import Distributed
from pretrain.trainer import PretrainConfig, PretrainTrainer, TrainingDiverged
from runtime.cli import run_main
from runtime.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pretrain the VLN follower (MLM + action prediction).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="YAML config (e.g. configs/vln_pretrain.yaml)")
    source.add_argument("--resume", type=Path, help="run directory to continue from its newest checkpoint")
    parser.add_argument("--data", type=Path, help="navigation dataset directory (sets data_dir)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (dotted keys)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"data_dir={args.data}"] if args.data is not None else [])
    is_main = Distributed.from_env().is_main

    if args.resume is not None:
        config = load_config(PretrainConfig, args.resume / "config.yaml", overrides)
        run_dir = args.resume
    else:
        config = load_config(PretrainConfig, args.config, overrides)
        # Under torchrun every rank must agree on the name: without one, all ranks would need the same clock.
        if config.name is None and not Distributed.from_env().enabled:
            config.name = f"pretrain-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        if config.name is None:
            raise ValueError("under torchrun pass name=<run name> so that every process writes the same run")
        run_dir = Path(config.runs_dir) / config.name
        if (run_dir / "checkpoints").exists():
            raise ValueError(f"run directory {run_dir} already has checkpoints: use --resume {run_dir}")

    trainer = PretrainTrainer(config, run_dir)
    try:
        if args.resume is not None:
            trainer.restore()
            if is_main:
                print(f"resumed {run_dir} at iteration {trainer.iteration}", flush=True)
        try:
            result = trainer.train()
        except TrainingDiverged as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    finally:
        trainer.close()
    if is_main:
        print(
            f"pretrained {result.iterations} iterations on {trainer.dist.world_size} process(es), "
            f"{result.samples_per_second:.1f} samples/s; run directory: {run_dir}"
        )
        shown = {k: v for k, v in result.last_metrics.items() if "accuracy" in k or k == "loss"}
        print("last metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())))
        print(
            f"fine-tune from it: python scripts/finetune_vln.py --config configs/vln_finetune.yaml init={run_dir}"
        )
        print(f"watch it: tensorboard --logdir {run_dir.parent}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
