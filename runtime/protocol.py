"""The split rule of the evaluation protocol: decisions use validation splits, never the reported one.

Checkpoint selection, early stopping and default choices happen on a validation split (``val_seen``
or ``val_unseen``); ``test`` (held-out houses) is the headline a benchmark reports and takes part in
no decision, so no trainer evaluates it while it trains. Trainer configs call
:func:`check_selection_splits` when they are built; benchmarks call it again with the splits they
report, so a configuration that would select on a reported split fails before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence

HELD_OUT_SPLIT = "test"


def check_selection_splits(
    select_split: str | None,
    eval_splits: Sequence[str],
    reported: Sequence[str] = (HELD_OUT_SPLIT,),
    owner: str = "config",
) -> None:
    """Raise ``ValueError`` when a run would select on, or evaluate during training, a reported split.

    ``select_split`` is the split a best checkpoint is chosen on (``None``: the run selects nothing);
    ``eval_splits`` are the splits it evaluates while training; ``reported`` are the splits whose
    numbers are reported as results (by default the held-out ``test``).
    """
    if select_split is not None and select_split in reported:
        raise ValueError(
            f"{owner}: select_split {select_split!r} is a reported split ({', '.join(reported)}): "
            "select the checkpoint on a validation split (val_seen or val_unseen)"
        )
    peeking = [split for split in eval_splits if split in reported]
    if peeking:
        raise ValueError(
            f"{owner}: data.eval_splits {list(eval_splits)} includes the reported split(s) {peeking}, which "
            "take part in no decision during training: evaluate them after training (scripts/evaluate_vln.py)"
        )
