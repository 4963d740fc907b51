"""Evaluate a trained follower: greedy episodes, R2R metrics, submission file, TensorBoard maps and GIFs.

    python scripts/evaluate_vln.py --checkpoint runs/<name>/best.pt --split val_unseen --data data/nav/benchmark
    python scripts/evaluate_vln.py --checkpoint runs/<name> --split val_seen --split val_unseen --data ... [--json]

``--checkpoint`` takes a ``best.pt``, a run checkpoint (``checkpoints/ckpt_*.pt``, fine-tuning or
pretraining) or a run directory. For each split every instruction is run once; NE, SR, OSR, TL, SPL,
nDTW, SDTW and CLS are printed with the failure breakdown of :mod:`lodestar.envs.nav.eval.failures` (``--json``: one
JSON object ``{split: {metric: value}, "failures": {split: {category: fraction}}}`` with rates as
fractions), the R2R submission is written to ``<out-dir>/submit_<split>.json`` (scored identically by
``scripts/evaluate_nav.py``), and metrics, top-down maps and first-person GIFs of ``--log-episodes``
sampled episodes and of ``--log-failures`` sampled failed ones (tagged by category) go to
TensorBoard under ``<log-dir>``, at the checkpoint's iteration. Tags start with ``final/<split>/``
(``final/<split>/spl``, ``final/<split>/failures/<category>``, ``final/<split>/episodes/<instr_id>/map``),
apart from the ``eval/<split>/`` cards the fine-tuning run logged while it trained (see
:mod:`lodestar.runtime.logger`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lodestar.agents.vln.evaluate import (
    evaluate_follower,
    log_sample_episodes,
    make_eval_env,
    write_submission,
)
from lodestar.agents.vln.follower import load_follower
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.failures import breakdown, format_breakdown
from lodestar.envs.nav.eval.metrics import METRIC_KEYS, format_table
from lodestar.runtime.cli import run_main
from lodestar.runtime.device import resolve_device
from lodestar.runtime.logger import RunLogger


def default_run_dir(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/best.pt``, ``<run>/checkpoints/ckpt_*.pt``)."""
    if checkpoint.is_dir():
        return checkpoint
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    return checkpoint.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a VLN follower with greedy decoding.")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="best.pt, ckpt_*.pt or a run directory"
    )
    parser.add_argument("--split", action="append", required=True, help="split to run (repeatable)")
    parser.add_argument("--data", type=Path, required=True, help="navigation dataset directory")
    parser.add_argument("--out-dir", type=Path, help="where submit_<split>.json goes (default: <run>/eval)")
    parser.add_argument("--log-dir", type=Path, help="TensorBoard directory (default: <run>/eval)")
    parser.add_argument("--log-episodes", type=int, default=4, help="episodes drawn per split (0: none)")
    parser.add_argument(
        "--log-failures", type=int, default=4, help="failed episodes drawn per split, by category (0: none)"
    )
    parser.add_argument("--num-envs", type=int, default=64, help="episodes run in parallel")
    parser.add_argument("--max-steps", type=int, default=15, help="actions per episode before truncation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="which episodes are drawn for the maps")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    bundle = load_follower(args.checkpoint, device)
    run_dir = default_run_dir(args.checkpoint)
    out_dir = args.out_dir or run_dir / "eval"
    dataset = NavDataset(args.data)
    if dataset.vocab() != bundle.vocab:
        raise ValueError(f"{args.data}/vocab.txt differs from the vocabulary the follower was trained with")
    logger = RunLogger(args.log_dir or run_dir / "eval")
    step = int(bundle.info.get("iteration", 0))
    results: dict[str, dict[str, float] | None] = {}
    failures: dict[str, dict[str, float]] = {}
    try:
        for split in args.split:
            env = make_eval_env(
                dataset, split, None, args.num_envs, bundle.features, bundle.angle_feature_size,
                bundle.max_instruction_len, device, args.max_steps, torch.float32,
            )  # fmt: skip
            evaluation = evaluate_follower(bundle.model, env)
            path = write_submission(evaluation, out_dir / f"submit_{split}.json")
            results[split] = evaluation.summary
            if evaluation.summary is not None:
                failures[split] = breakdown(evaluation.categories)
                logger.scalars({f"final/{split}/{k}": evaluation.summary[k] for k in METRIC_KEYS}, step)
                logger.scalars({f"final/{split}/failures/{k}": v for k, v in failures[split].items()}, step)
            drawn = [(args.log_episodes, False), (args.log_failures if evaluation.categories else 0, True)]
            try:
                for count, failures_only in drawn:
                    if count > 0:
                        log_sample_episodes(
                            logger,
                            dataset,
                            evaluation,
                            step,
                            count,
                            args.seed,
                            device,
                            failures_only,
                            "final",
                        )
            except FileNotFoundError as exc:
                print(f"note: no episode maps for {split} ({exc})")
            if not args.json:
                if evaluation.summary is None:
                    print(
                        f"{split}: {len(evaluation.records)} instructions run; the split hides its goals, not scored"
                    )
                else:
                    print(
                        format_table(evaluation.summary, f"{split}: {len(evaluation.records)} instructions")
                    )
                    print(
                        format_breakdown(
                            failures[split], f"{split}: where episodes end (envs/nav/eval/failures.py)"
                        )
                    )
                print(f"submission: {path}")
    finally:
        logger.close()
    if args.json:
        scores = {
            split: None if s is None else {k: s[k] for k in METRIC_KEYS} for split, s in results.items()
        }
        print(json.dumps({**scores, "failures": failures}))
    else:
        print(f"maps and GIFs: tensorboard --logdir {args.log_dir or run_dir / 'eval'}")
    return 0


if __name__ == "__main__":
    run_main(main)
