"""Score an R2R submission file on one split of a navigation dataset.

    python scripts/evaluate_nav.py --split val_unseen --predictions preds.json --data data/nav/small [--json]

Prints NE, SR, OSR, TL, SPL, nDTW, SDTW and CLS (rates as percentages); ``--json`` prints one JSON
object keyed ``ne, sr, osr, tl, spl, ndtw, sdtw, cls`` with rates as fractions instead. Every
instruction of the split must have a prediction, and every prediction must name one of them. A
progress bar on stderr counts the instructions scored.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.metrics import (
    METRIC_KEYS,
    SUCCESS_DISTANCE,
    evaluate_split,
    format_table,
    load_predictions,
)
from lodestar.runtime.cli import run_main
from lodestar.runtime.progress import progress


class _Scored(Mapping[str, Sequence[str]]):
    """The predictions, advancing ``bar`` as the metrics score them.

    The metrics read each instruction's prediction once, when they score it; the membership tests and
    iteration of their checks beforehand do not advance the bar.
    """

    def __init__(self, predictions: Mapping[str, Sequence[str]], bar: tqdm) -> None:
        self._predictions, self._bar = predictions, bar

    def __getitem__(self, instr_id: str) -> Sequence[str]:
        path = self._predictions[instr_id]
        self._bar.update(1)
        return path

    def __contains__(self, instr_id: object) -> bool:
        return instr_id in self._predictions

    def __iter__(self) -> Iterator[str]:
        return iter(self._predictions)

    def __len__(self) -> int:
        return len(self._predictions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset directory (R2R_<split>.json, connectivity/)"
    )
    parser.add_argument("--split", required=True, help="split name, e.g. val_seen, val_unseen, test")
    parser.add_argument("--predictions", type=Path, required=True, help="R2R submission JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--per-instruction", type=Path, help="also write per-instruction scores to this JSON file"
    )
    parser.add_argument(
        "--success-distance", type=float, default=SUCCESS_DISTANCE, help="metres (default 3.0)"
    )
    args = parser.parse_args(argv)

    dataset = NavDataset(args.data)
    predictions = load_predictions(args.predictions)
    with progress(total=len(predictions), desc=f"score {args.split}", unit="instr") as bar:
        scored = _Scored(predictions, bar)
        summary, per_instr = evaluate_split(dataset, args.split, scored, args.success_distance)
    if args.per_instruction is not None:
        args.per_instruction.parent.mkdir(parents=True, exist_ok=True)
        args.per_instruction.write_text(json.dumps(per_instr, indent=1), encoding="utf-8")
    if args.json:
        print(json.dumps({key: summary[key] for key in METRIC_KEYS}))
    else:
        print(format_table(summary, f"{args.split}: {len(per_instr)} instructions ({args.predictions})"))
    return 0


if __name__ == "__main__":
    run_main(main)
