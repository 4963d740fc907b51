"""Fine-tune the navigation follower: teacher forcing + DAgger + A2C on the human train split.

    python scripts/finetune_vln.py --config configs/vln_finetune.yaml --data data/nav/benchmark [init=runs/<pretrain run>]
    torchrun --nproc_per_node 2 scripts/finetune_vln.py --config configs/vln_finetune.yaml --data ... name=<run>
    python scripts/finetune_vln.py --resume runs/<name> [key=value ...]

Without ``init`` the follower starts from scratch. Under ``torchrun`` every process runs its own envs
(different episodes) and gradients are averaged; process 0 validates, logs and writes checkpoints. Logs (losses, training success, episodes/s,
validation NE/SR/OSR/SPL/TL/nDTW/SDTW/CLS, episode maps and GIFs), the resolved config, periodic
checkpoints, the best follower (``best.pt``, by ``select_metric`` on ``select_split``) and the
vocabulary (``vocab.txt``) go to ``runs/<name>/``; the script ends by printing the evaluation command.
"""

from __future__ import annotations

from pathlib import Path

from lodestar.agents.vln.distributed import Distributed
from lodestar.agents.vln.finetune import FinetuneTrainer
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.envs.nav.data.dataset import FEATURES_HELP
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE
from lodestar.runtime.cli import resolve_run, run_main, script_command, tensorboard_command, training_parser
from lodestar.runtime.training import train_run

SCRIPTS = Path(__file__).absolute().parent


def _name_prefix(config: FinetuneConfig) -> str:
    return f"finetune-{'init' if config.init else 'scratch'}"


def evaluate_command(config: FinetuneConfig, run_dir: Path) -> str:
    """The evaluation command of this run, on the splits of the evaluation protocol (its default).

    A run directory loads its ``best.pt`` (or, without validation, its newest checkpoint); the follower
    file names its features, so evaluation needs no ``data.features``.
    """
    return script_command(SCRIPTS / "evaluate_vln.py", "--checkpoint", run_dir, "--data", config.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(
        "Fine-tune the VLN follower (IL + DAgger + A2C).", "configs/vln_finetune.yaml", FinetuneConfig
    )
    parser.epilog = f"{parser.epilog}\n\n{FEATURES_HELP}"
    args = parser.parse_args(argv)
    run = resolve_run(FinetuneConfig, args, _name_prefix, distributed=Distributed.from_env().enabled)
    config, run_dir = run.config, run.run_dir
    trainer = FinetuneTrainer(config, run_dir)
    result = train_run(trainer, run.resume, run.checkpoint)
    if not trainer.is_main:
        return 130 if result.interrupted else 0
    trainer.vocab.save(run_dir / VOCAB_FILE)
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
    print(f"evaluate it: {evaluate_command(config, run_dir)}")
    print(f"watch it: {tensorboard_command(run_dir.parent)}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
