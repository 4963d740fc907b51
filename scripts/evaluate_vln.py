"""Evaluate a trained follower: greedy episodes, R2R metrics, submission file, TensorBoard maps and GIFs.

    python scripts/evaluate_vln.py --checkpoint runs/<name>/best.pt --data data/nav/benchmark
    python scripts/evaluate_vln.py --checkpoint runs/<name> --split val_seen --split val_unseen --data ... [--json]

``--checkpoint`` takes a ``best.pt``, a run checkpoint (``checkpoints/ckpt_*.pt``, fine-tuning or
pretraining) or a run directory. Without ``--split`` it runs ``test``, ``val_seen`` and
``val_unseen`` (those the dataset has). The *headline* follows the evaluation protocol: ``test``
(held-out houses that took part in no decision) when its goals are known, as in the generated
world; on a dataset whose test split hides its goals (real R2R: a single viewpoint per path) the
test episodes are run and written to the submission file but not scored, and the headline is
``val_unseen`` (select the checkpoint on ``val_seen`` then: ``select_split=val_seen``). The headline
is printed first and labelled; a checkpoint selected on the headline split is flagged (its figures
are optimistic).

For each split every instruction is run once (with a progress bar); NE, SR, OSR, TL, SPL, nDTW, SDTW
and CLS are printed with the failure breakdown of :mod:`lodestar.envs.nav.eval.failures` (``--json``:
one JSON object ``{split: {metric: value} | null, "failures": {split: {category: fraction}},
"headline": split, "selected_on": split | null}`` with rates as fractions), the R2R submission is
written to ``<out-dir>/submit_<split>.json`` (scored identically by ``scripts/evaluate_nav.py``), and
metrics, top-down maps and first-person GIFs of ``--log-episodes`` sampled episodes and of
``--log-failures`` sampled failed ones (tagged by category) go to TensorBoard under ``<log-dir>``, at
the checkpoint's iteration. Tags start with ``final/<split>/`` (``final/<split>/spl``,
``final/<split>/failures/<category>``, ``final/<split>/episodes/<instr_id>/map``), apart from the
``eval/<split>/`` cards the fine-tuning run logged while it trained (see :mod:`lodestar.runtime.logger`).

Pragmatic inference (:mod:`lodestar.agents.vln.pragmatic`)::

    python scripts/evaluate_vln.py --checkpoint runs/<name> --data ... --rerank 8 --speaker runs/speaker

``--rerank K`` has the follower propose ``K`` routes per instruction (its greedy route and ``K - 1``
samples) and the speaker (``--speaker``) score each; the prediction is the route with the best
``w * speaker + (1 - w) * follower`` log-probability. ``w`` is chosen from ``--rerank-weights`` on
``--rerank-select`` (``val_unseen`` by default; ``test`` is refused) by ``--rerank-metric`` and applied
to every split; the greedy and reranked metrics are printed side by side (``--json``: a ``"rerank"``
object), the reranked submission is written to ``<out-dir>/submit_<split>_rerank.json`` and its metrics
are tagged ``final/<split>/rerank/<metric>``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lodestar.agents.vln.evaluate import (
    evaluate_follower,
    log_sample_episodes,
    make_eval_env,
    write_submission,
)
from lodestar.agents.vln.follower import FollowerBundle, load_follower
from lodestar.agents.vln.pragmatic import (
    DEFAULT_WEIGHTS,
    SELECTION_METRICS,
    Candidates,
    SpeakerScorer,
    WeightSelection,
    check_selection_split,
    format_comparison,
    format_weight_table,
    parse_weights,
    propose_routes,
    reranked_evaluation,
    select_weight,
)
from lodestar.agents.vln.speaker import load_speaker
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.failures import breakdown, format_breakdown
from lodestar.envs.nav.eval.metrics import METRIC_KEYS, format_table
from lodestar.runtime.cli import run_main
from lodestar.runtime.device import resolve_device
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.protocol import HELD_OUT_SPLIT

# The protocol's splits: the held-out headline first, the R2R validation splits beside it.
DEFAULT_SPLITS = (HELD_OUT_SPLIT, "val_seen", "val_unseen")
# Headline when test hides its goals (real R2R): unseen houses, as the R2R literature reports.
HIDDEN_TEST_HEADLINE = "val_unseen"


def default_run_dir(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/best.pt``, ``<run>/checkpoints/ckpt_*.pt``)."""
    if checkpoint.is_dir():
        return checkpoint
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    return checkpoint.parent


def default_splits(dataset: NavDataset) -> list[str]:
    """The protocol's splits that ``dataset`` has (``R2R_<split>.json``), headline first."""
    present = [split for split in DEFAULT_SPLITS if split in dataset.splits]
    if not present:
        raise FileNotFoundError(
            f"{dataset.root} has none of the splits {list(DEFAULT_SPLITS)} (R2R_<split>.json): pass --split"
        )
    return present


def headline_split(results: Mapping[str, dict[str, float] | None]) -> str | None:
    """The split reported as the result: ``test`` when scored, else ``val_unseen``, else the first scored one.

    ``results`` maps every evaluated split to its metrics (``None`` when its goals are hidden); ``None``
    when no split could be scored (only submissions were written).
    """
    scored = [split for split, summary in results.items() if summary is not None]
    for split in (HELD_OUT_SPLIT, HIDDEN_TEST_HEADLINE):
        if split in scored:
            return split
    return scored[0] if scored else None


def selection_split(info: Mapping[str, Any]) -> str | None:
    """The split a fine-tuning ``best.pt`` was chosen on (``selected_by: eval/<split>/<metric>``), if recorded."""
    parts = str(info.get("selected_by", "")).split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "eval" else None


def describe(split: str, headline: str | None, selected_on: str | None, test_hidden: bool) -> str:
    """The label of a split's tables: headline or beside it, and whether it chose the checkpoint."""
    if split == headline:
        if split == HELD_OUT_SPLIT:
            where = "held-out houses, used by no decision"
        else:
            where = "test goals hidden" if test_hidden else "test not evaluated"
        label = f"HEADLINE {split} ({where})"
    else:
        label = f"beside the headline: {split}"
    if split == selected_on:
        label += " - the checkpoint was selected on this split: optimistic"
    return label


def check_rerank_args(args: argparse.Namespace) -> tuple[float, ...]:
    """Validate the ``--rerank`` options before anything runs; the grid of speaker weights."""
    if args.rerank == 0:
        if args.speaker is not None:
            raise ValueError(
                "--speaker only takes effect with --rerank K (K candidate routes per instruction)"
            )
        return ()
    if args.rerank < 2:
        raise ValueError(
            f"--rerank K needs K >= 2 candidate routes (K=1 is greedy decoding), got {args.rerank}"
        )
    if args.speaker is None:
        raise ValueError("--rerank needs --speaker: the speaker scores the follower's candidate routes")
    check_selection_split(args.rerank_select)
    return parse_weights(args.rerank_weights)


@dataclass
class Reranking:
    """What ``--rerank`` produced: the weight chosen on the validation split, then every split's result."""

    k: int
    selection: WeightSelection
    results: dict[str, dict[str, float] | None]
    submissions: dict[str, Path]
    candidates: dict[str, float]  # split -> mean number of distinct candidate routes per instruction


def run_reranking(
    args: argparse.Namespace,
    follower: FollowerBundle,
    scorer: SpeakerScorer,
    dataset: NavDataset,
    splits: list[str],
    weights: tuple[float, ...],
    out_dir: Path,
    logger: RunLogger,
    step: int,
) -> Reranking:
    """Choose the speaker weight on ``--rerank-select``, then rerank every split with it."""

    def candidates_of(split: str) -> Candidates:
        candidates = propose_routes(
            follower, dataset, split, args.rerank, num_envs=args.num_envs, max_steps=args.max_steps,
            seed=args.seed, show_progress=True,
        )  # fmt: skip
        scorer(candidates, show_progress=True)
        return candidates

    chosen_on = candidates_of(args.rerank_select)
    selection = select_weight(chosen_on, weights, args.rerank_metric)
    report = Reranking(args.rerank, selection, {}, {}, {})
    for split in splits:
        candidates = chosen_on if split == args.rerank_select else candidates_of(split)
        evaluation = reranked_evaluation(candidates, selection.weight)
        report.submissions[split] = write_submission(evaluation, out_dir / f"submit_{split}_rerank.json")
        report.results[split] = evaluation.summary
        report.candidates[split] = float(candidates.valid.sum(1).double().mean())
        if evaluation.summary is not None:
            logger.scalars({f"final/{split}/rerank/{k}": evaluation.summary[k] for k in METRIC_KEYS}, step)
    logger.scalars(
        {"final/rerank/weight": selection.weight, "final/rerank/candidates": float(args.rerank)}, step
    )
    return report


def print_reranking(
    report: Reranking, greedy: Mapping[str, dict[str, float] | None], headline: str | None
) -> None:
    """The weight grid on the selection split and greedy against reranked decoding per split."""
    selection = report.selection
    print(
        f"\npragmatic inference: K={report.k} candidate routes per instruction (greedy + {report.k - 1} "
        f"samples), score = w * speaker + (1 - w) * follower log-probability"
    )
    print(format_weight_table(selection))
    print(f"chosen: w={selection.weight:g} on {selection.split}, applied to every split")
    compared: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for split in sorted(greedy, key=lambda s: s != headline):  # the headline first
        before, after = greedy[split], report.results.get(split)
        if before is not None and after is not None:
            compared[split] = (before, after)
    if compared:
        print(format_comparison(compared))
    for split, path in report.submissions.items():
        print(f"reranked submission: {path} ({report.candidates[split]:.2f} distinct routes per instruction)")
    if selection.split == headline:
        print(
            f"note: the speaker weight was chosen on {headline}, the headline split: its reranked figures "
            "are optimistic (--rerank-select val_seen)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate a VLN follower with greedy decoding (and speaker reranking: --rerank)."
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="best.pt, ckpt_*.pt or a run directory"
    )
    parser.add_argument(
        "--split", action="append", help="split to run (repeatable; default: test, val_seen, val_unseen)"
    )
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
    parser.add_argument(
        "--seed", type=int, default=0, help="which episodes are drawn for the maps; --rerank's sampling"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    rerank = parser.add_argument_group("pragmatic inference (the speaker reranks the follower's routes)")
    rerank.add_argument(
        "--rerank",
        type=int,
        default=0,
        metavar="K",
        help="candidate routes per instruction (greedy + K-1 samples)",
    )
    rerank.add_argument(
        "--speaker", type=Path, help="speaker best.pt or run directory (required with --rerank)"
    )
    rerank.add_argument(
        "--rerank-weights",
        default=",".join(f"{w:g}" for w in DEFAULT_WEIGHTS),
        help="grid of speaker weights w in [0, 1] (comma-separated); 0 is greedy decoding",
    )
    rerank.add_argument(
        "--rerank-select", default="val_unseen", help="validation split w is chosen on (never test)"
    )
    rerank.add_argument("--rerank-metric", default="sr", choices=SELECTION_METRICS, help="w is chosen by it")
    args = parser.parse_args(argv)
    weights = check_rerank_args(args)

    device = resolve_device(args.device)
    bundle = load_follower(args.checkpoint, device)
    run_dir = default_run_dir(args.checkpoint)
    out_dir = args.out_dir or run_dir / "eval"
    dataset = NavDataset(args.data)
    if dataset.vocab() != bundle.vocab:
        raise ValueError(f"{args.data}/vocab.txt differs from the vocabulary the follower was trained with")
    splits = args.split or default_splits(dataset)
    if args.rerank and args.rerank_select not in dataset.splits:
        raise FileNotFoundError(
            f"{args.data} has no split {args.rerank_select!r} to choose the reranking weight on "
            "(--rerank-select)"
        )
    speaker = load_speaker(args.speaker, device) if args.rerank else None
    logger = RunLogger(args.log_dir or run_dir / "eval")
    step = int(bundle.info.get("iteration", 0))
    results: dict[str, dict[str, float] | None] = {}
    failures: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    submissions: dict[str, Path] = {}
    try:
        for split in splits:
            env = make_eval_env(
                dataset, split, None, args.num_envs, bundle.features, bundle.angle_feature_size,
                bundle.max_instruction_len, device, args.max_steps, torch.float32,
            )  # fmt: skip
            evaluation = evaluate_follower(bundle.model, env, show_progress=True)
            submissions[split] = write_submission(evaluation, out_dir / f"submit_{split}.json")
            results[split], counts[split] = evaluation.summary, len(evaluation.records)
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
        reranking = None
        if speaker is not None:
            scorer = SpeakerScorer(speaker, dataset)
            reranking = run_reranking(args, bundle, scorer, dataset, splits, weights, out_dir, logger, step)
    finally:
        logger.close()
    headline = headline_split(results)
    selected_on = selection_split(bundle.info)
    test_hidden = HELD_OUT_SPLIT in results and results[HELD_OUT_SPLIT] is None
    if args.json:
        scores = {
            split: None if s is None else {k: s[k] for k in METRIC_KEYS} for split, s in results.items()
        }
        extra: dict[str, Any] = {}
        if reranking is not None:
            selection = reranking.selection
            extra["rerank"] = {
                "k": reranking.k,
                "weight": selection.weight,
                "selected_on": selection.split,
                "metric": selection.metric,
                "grid": {f"{w:g}": scores for w, scores in selection.scores.items()},
                "splits": reranking.results,
            }
        print(
            json.dumps(
                {**scores, "failures": failures, "headline": headline, "selected_on": selected_on, **extra}
            )
        )
        return 0
    for split in sorted(splits, key=lambda s: s != headline):  # the headline first, then the given order
        summary = results[split]
        print()
        if summary is None:
            print(f"{split}: {counts[split]} instructions run; the split hides its goals, not scored")
        else:
            print(
                format_table(
                    summary,
                    f"{describe(split, headline, selected_on, test_hidden)}: {counts[split]} instructions",
                )
            )
            print(
                format_breakdown(failures[split], f"{split}: where episodes end (envs/nav/eval/failures.py)")
            )
        print(f"submission: {submissions[split]}")
    if headline is not None and selected_on == headline:
        print(
            f"\nnote: this checkpoint was selected on {headline}, the headline split; select on another "
            "validation split (select_split=val_seen) for an unbiased headline"
        )
    if reranking is not None:
        print_reranking(reranking, results, headline)
    print(f"maps and GIFs: tensorboard --logdir {args.log_dir or run_dir / 'eval'}")
    return 0


if __name__ == "__main__":
    run_main(main)
