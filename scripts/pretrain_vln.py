"""Pretrain the navigation follower on human + speaker-synthesized triplets (MLM + action prediction).

    python scripts/pretrain_vln.py --config configs/vln_pretrain.yaml --data data/nav/benchmark [key=value ...]
    torchrun --nproc_per_node 2 scripts/pretrain_vln.py --config configs/vln_pretrain.yaml --data ...
    python scripts/pretrain_vln.py --resume runs/<name> [key=value ...]

``batch_size`` is the global batch, split evenly over the processes (DDP: gloo on CPU, nccl on CUDA).
Rank 0 writes TensorBoard logs, the resolved config, checkpoints and the vocabulary (``vocab.txt``) to
``runs/<name>/``; every checkpoint holds the follower for ``scripts/finetune_vln.py init=runs/<name>``,
and the script ends by printing that fine-tuning command, with the options it needs to fit this run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lodestar.agents.vln.distributed import Distributed
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.agents.vln.follower import ARCHITECTURE_FIELDS
from lodestar.envs.nav.data.dataset import FEATURES_HELP, NavDataset
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE
from lodestar.pretrain.trainer import PretrainConfig, PretrainTrainer
from lodestar.runtime.cli import resolve_run, run_main, script_command, tensorboard_command, training_parser
from lodestar.runtime.config import load_config, to_dict
from lodestar.runtime.training import train_run

SCRIPTS = Path(__file__).absolute().parent
FINETUNE_CONFIG = SCRIPTS.parent / "configs" / "vln_finetune.yaml"
# What fine-tuning checks against the pretrained follower (FinetuneTrainer._load_init).
MUST_MATCH = [
    "data.angle_feature_size",
    "data.max_instruction_len",
    *(f"model.{f}" for f in ARCHITECTURE_FIELDS),
]


def _dotted(tree: dict[str, Any], key: str) -> Any:
    value: Any = tree
    for part in key.split("."):
        value = value[part]
    return value


def finetune_command(config: PretrainConfig, run_dir: Path) -> str:
    """The fine-tuning command that starts from this run: its dataset, its features and every setting
    where ``configs/vln_finetune.yaml`` would not fit the pretrained follower."""
    ours, theirs = to_dict(config), to_dict(load_config(FinetuneConfig, FINETUNE_CONFIG))
    overrides = NavDataset(config.data_dir).features_overrides(config.data.features)
    for key in MUST_MATCH:
        value = _dotted(ours, key)
        if value != _dotted(theirs, key):
            overrides.append(f"{key}={value if isinstance(value, str) else json.dumps(value)}")
    return script_command(
        SCRIPTS / "finetune_vln.py", "--config", FINETUNE_CONFIG, "--data", config.data_dir,
        *overrides, f"init={run_dir}",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(
        "Pretrain the VLN follower (MLM + action prediction).", "configs/vln_pretrain.yaml", PretrainConfig
    )
    parser.epilog = f"{parser.epilog}\n\n{FEATURES_HELP}"
    args = parser.parse_args(argv)
    run = resolve_run(PretrainConfig, args, "pretrain", distributed=Distributed.from_env().enabled)
    run_dir = run.run_dir
    trainer = PretrainTrainer(run.config, run_dir)
    result = train_run(trainer, run.resume, run.checkpoint)
    if trainer.is_main:
        trainer.vocab.save(run_dir / VOCAB_FILE)
        print(
            f"pretrained {result.iterations} iterations on {trainer.dist.world_size} process(es), "
            f"{result.samples_per_second:.1f} samples/s; run directory: {run_dir}"
        )
        shown = {k: v for k, v in result.last_metrics.items() if "accuracy" in k or k == "loss"}
        print("last metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())))
        print(f"fine-tune from it: {finetune_command(run.config, run_dir)}")
        print(f"watch it: {tensorboard_command(run_dir.parent)}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
