"""Pretrain the navigation follower on human + speaker-synthesized triplets (MLM + action prediction).

    python scripts/pretrain_vln.py --config configs/vln_pretrain.yaml --data data/nav/benchmark [key=value ...]
    torchrun --nproc_per_node 2 scripts/pretrain_vln.py --config configs/vln_pretrain.yaml --data ...
    python scripts/pretrain_vln.py --resume runs/<name> [key=value ...]

``batch_size`` is the global batch, split evenly over the processes (DDP: gloo on CPU, nccl on CUDA).
Rank 0 writes TensorBoard logs, the resolved config and checkpoints to ``runs/<name>/``; every
checkpoint holds the follower for ``scripts/finetune_vln.py init=runs/<name>``.
"""

from __future__ import annotations

from lodestar.agents.vln.distributed import Distributed
from lodestar.pretrain.trainer import PretrainConfig, PretrainTrainer
from lodestar.runtime.cli import resolve_run, run_main, training_parser
from lodestar.runtime.training import train_run


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(
        "Pretrain the VLN follower (MLM + action prediction).", "configs/vln_pretrain.yaml", PretrainConfig
    )
    args = parser.parse_args(argv)
    run = resolve_run(PretrainConfig, args, "pretrain", distributed=Distributed.from_env().enabled)
    run_dir = run.run_dir
    trainer = PretrainTrainer(run.config, run_dir)
    result = train_run(trainer, run.resume, run.checkpoint)
    if trainer.is_main:
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
