"""Train the speaker (trajectory -> instruction) on a navigation dataset.

    python scripts/train_speaker.py --config configs/vln_speaker.yaml --data data/nav/benchmark [key=value ...]
    python scripts/train_speaker.py --resume runs/<name> [key=value ...]

Logs (loss, BLEU-1..4 per split, text samples), the resolved config, periodic checkpoints, the best
speaker (``best.pt``, by val_unseen BLEU-4) and the vocabulary it used (``vocab.txt``) go to
``runs/<name>/``. At the end it prints the synthesis command that labels paths with this speaker.
"""

from __future__ import annotations

from pathlib import Path

from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer
from lodestar.envs.nav.data.dataset import FEATURES_HELP
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE
from lodestar.runtime.cli import resolve_run, run_main, script_command, tensorboard_command, training_parser
from lodestar.runtime.training import train_run

SCRIPTS = Path(__file__).absolute().parent


def main(argv: list[str] | None = None) -> int:
    parser = training_parser("Train the VLN speaker.", "configs/vln_speaker.yaml", SpeakerTrainConfig)
    parser.epilog = f"{parser.epilog}\n\n{FEATURES_HELP}"
    args = parser.parse_args(argv)
    run = resolve_run(SpeakerTrainConfig, args, "speaker")
    config, run_dir = run.config, run.run_dir
    trainer = SpeakerTrainer(config, run_dir)
    result = train_run(trainer, run.resume, run.checkpoint)
    trainer.vocab.save(run_dir / VOCAB_FILE)
    print(f"trained {result.iterations} iterations; run directory: {run_dir}")
    scores = ", ".join(
        f"{k} {v:.4f}" for k, v in result.last_scores.items() if k.endswith(("bleu1", "bleu4"))
    )
    print(f"last evaluation: {scores}")
    if (run_dir / "best.pt").is_file():
        print(
            f"best speaker: {run_dir / 'best.pt'} ({config.select_split} BLEU-4 {result.best_score:.4f} "
            f"at iteration {result.best_iteration})"
        )
        # The speaker file names its features, so synthesis needs no data.features.
        synthesize = script_command(
            SCRIPTS / "synthesize.py", "--data", config.data_dir, "--speaker", run_dir
        )
        print(f"synthesize with it: {synthesize}")
    print(f"watch it: {tensorboard_command(run_dir.parent)}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    run_main(main)
