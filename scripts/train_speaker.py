"""Train the speaker (trajectory -> instruction) on a navigation dataset.

    python scripts/train_speaker.py --config configs/vln_speaker.yaml --data data/nav/benchmark [key=value ...]
    python scripts/train_speaker.py --resume runs/<name> [key=value ...]

Logs (loss, BLEU-1..4 per split, text samples), the resolved config, periodic checkpoints and the best
speaker (``best.pt``, by val_unseen BLEU-4) go to ``runs/<name>/``.
"""

from __future__ import annotations

from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer
from lodestar.runtime.cli import resolve_run, run_main, training_parser
from lodestar.runtime.training import train_run


def main(argv: list[str] | None = None) -> int:
    args = training_parser(
        "Train the VLN speaker.", "configs/vln_speaker.yaml", SpeakerTrainConfig
    ).parse_args(argv)
    run = resolve_run(SpeakerTrainConfig, args, "speaker")
    config, run_dir = run.config, run.run_dir
    result = train_run(SpeakerTrainer(config, run_dir), run.resume, run.checkpoint)
    print(f"trained {result.iterations} iterations; run directory: {run_dir}")
    scores = ", ".join(
        f"{k} {v:.4f}" for k, v in result.last_scores.items() if k.endswith(("bleu1", "bleu4"))
    )
    print(f"last evaluation: {scores}")
    print(
        f"best speaker: {run_dir / 'best.pt'} ({config.select_split} BLEU-4 {result.best_score:.4f} "
        f"at iteration {result.best_iteration})"
    )
    print(f"watch it: tensorboard --logdir {run_dir.parent}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
