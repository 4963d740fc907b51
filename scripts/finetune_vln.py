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

from lodestar.agents.vln.distributed import Distributed
from lodestar.agents.vln.finetune import FinetuneTrainer
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.runtime.cli import resolve_run, run_main, training_parser
from lodestar.runtime.training import train_run


def _name_prefix(config: FinetuneConfig) -> str:
    return f"finetune-{'init' if config.init else 'scratch'}"


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(
        "Fine-tune the VLN follower (IL + DAgger + A2C).", "configs/vln_finetune.yaml", FinetuneConfig
    )
    args = parser.parse_args(argv)
    run = resolve_run(FinetuneConfig, args, _name_prefix, distributed=Distributed.from_env().enabled)
    config, run_dir = run.config, run.run_dir
    trainer = FinetuneTrainer(config, run_dir)
    result = train_run(trainer, run.resume, run.checkpoint)
    if not trainer.is_main:
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
