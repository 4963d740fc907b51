"""The report of ``vln-ablation``: per-arm means over seeds, the (c) - (a) SR gain and its interval.

Kept apart from the pipeline (:mod:`benchmarks.vln_ablation`) so that it can be read, and tested on
made-up scores, on its own. The protocol it reports (DESIGN.md section 9): ``test`` is the headline,
val_seen / val_unseen stand beside it; rates are means and sample standard deviations over seeds; the
SR gain of (c) over (a) carries the standard error of a difference of means and a 95% stratified
bootstrap interval (:func:`lodestar.runtime.stats.bootstrap_mean_difference`), and the +5 point target
is met only when the mean test gain reaches it and the interval lies above zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from lodestar.envs.nav.eval.failures import CATEGORIES as FAILURES
from lodestar.runtime.bench import Figure
from lodestar.runtime.protocol import HELD_OUT_SPLIT
from lodestar.runtime.stats import (
    DEFAULT_RESAMPLES,
    Interval,
    bootstrap_mean_difference,
    mean_std,
    standard_error_of_difference,
)

NAME = "vln-ablation"
CONDITIONS = {
    "a_scratch": "(a) scratch, human",
    "b_augment": "(b) scratch, human + synthetic aug.",
    "c_pretrained": "(c) pretrained, then human",
}
HEADLINE = HELD_OUT_SPLIT  # held-out houses with goals, which took part in no decision
SPLITS = (HEADLINE, "val_seen", "val_unseen")  # the headline first, the R2R literature's splits beside it
FAILURE_SPLITS = (HEADLINE, "val_unseen")
METRICS = ("sr", "spl", "ndtw")
SR_GAIN_TARGET = 5.0  # points of test SR, (c) over (a), with a bootstrap interval above 0
# Per seed: {split: {metric or failures/<category>: value}}.
Scores = dict[str, dict[str, float]]


@dataclass
class GainFigure(Figure):
    """A gain claimed only when its bootstrap interval excludes zero.

    It meets its target when the mean gain reaches ``target`` *and* the interval's ``low`` bound is
    above 0 (a mean gain inside the noise of the seeds is no gain).
    """

    low: float = float("nan")

    @property
    def meets_target(self) -> bool | None:
        reached = super().meets_target
        return None if reached is None else reached and self.low > 0.0


def gain_figures(
    benchmark: str, what: str, gain: Interval, reference: str, target: float | None
) -> list[Figure]:
    """A gain and its 95% interval's bounds; with a ``target``, the gain is a :class:`GainFigure`
    (met only when the interval lies above zero), compared with ``reference`` (no gain)."""
    headline: Figure = Figure(benchmark, what, gain.mean, "SR points")
    if target is not None:
        headline = GainFigure(benchmark, what, gain.mean, "SR points", reference=reference,
                              reference_value=0.0, target=target, target_on="value", low=gain.low)  # fmt: skip
    return [
        headline,
        Figure(benchmark, f"{what}: 95% CI low", gain.low, "SR points (bootstrap over seeds)"),
        Figure(benchmark, f"{what}: 95% CI high", gain.high, "SR points (bootstrap over seeds)"),
    ]


def _cell(mean: float, std: float, width: int = 18) -> str:
    return f"{mean:7.2f} ± {std:5.2f}".rjust(width)


def summarize(
    results: dict[str, list[Scores]], select: str, resamples: int = DEFAULT_RESAMPLES
) -> tuple[list[Figure], list[str]]:
    """Figures and table lines of every arm's evaluations (``results[condition]``: one entry per seed).

    ``select`` is the validation split the runs' ``best.pt`` were chosen on. Rates are reported in
    percent; SR gains of (c) over (a) come with the standard error of the difference and a 95%
    stratified bootstrap interval over seeds.
    """
    figures: list[Figure] = []
    lines: list[str] = []
    means: dict[tuple[str, str, str], float] = {}
    per_seed = {
        (c, split, m): [100 * r[split][m] for r in runs]
        for c, runs in results.items()
        for split in SPLITS
        for m in METRICS
    }
    for title, splits in (
        (
            f"headline: {HEADLINE} (held-out houses, used by no decision; mean ± std over seeds, %)",
            SPLITS[:1],
        ),
        (
            f"beside it, as in the R2R literature (best.pt was chosen on {select}: optimistic there)",
            SPLITS[1:],
        ),
    ):
        lines += [
            "",
            title,
            f"{'condition':<38}" + "".join(f"{s + ' ' + m.upper():>18}" for s in splits for m in METRICS),
        ]
        for condition, label in CONDITIONS.items():
            cells = []
            for split in splits:
                for metric in METRICS:
                    mean, std = mean_std(per_seed[(condition, split, metric)])
                    means[(condition, split, metric)] = mean
                    cells.append(_cell(mean, std))
                    reference = None if condition == "a_scratch" else CONDITIONS["a_scratch"]
                    ref_value = None if condition == "a_scratch" else means[("a_scratch", split, metric)]
                    figures.append(
                        Figure(
                            NAME, f"{label}: {split} {metric.upper()} mean", mean, "%", reference, ref_value
                        )
                    )
                    figures.append(
                        Figure(NAME, f"{label}: {split} {metric.upper()} std", std, "% (over seeds)")
                    )
            lines.append(f"{label:<38}" + "".join(cells))
    lines += [
        "",
        f"SR gain (c) - (a), points: mean, standard error, 95% interval (stratified bootstrap over seeds, "
        f"{resamples:,} resamples); claimed when the interval excludes 0",
    ]
    for split in SPLITS:
        treated, control = per_seed[("c_pretrained", split, "sr")], per_seed[("a_scratch", split, "sr")]
        gain = bootstrap_mean_difference(treated, control, resamples=resamples)
        error = standard_error_of_difference(treated, control)
        what = f"{split} SR gain (c) - (a)"
        target = SR_GAIN_TARGET if split == HEADLINE else None
        figures += gain_figures(NAME, what, gain, "(a) scratch, human: no gain", target)
        figures.append(Figure(NAME, f"{what}: std error", error, "SR points"))
        claim = "interval includes 0: no difference claimed"
        if gain.excludes_zero:
            claim = "gain claimed" if gain.low > 0 else "loss claimed"
        lines.append(
            f"  {split:<12}{gain.mean:+7.2f} ± {error:5.2f}  [{gain.low:+7.2f}, {gain.high:+7.2f}]  {claim}"
        )
    for split in FAILURE_SPLITS:
        lines += ["", f"{split + ': where episodes end (%)':<38}" + "".join(f"{k:>20}" for k in FAILURES)]
        for condition, label in CONDITIONS.items():
            cells = []
            for name in FAILURES:
                mean, std = mean_std([100 * r[split][f"failures/{name}"] for r in results[condition]])
                cells.append(_cell(mean, std, 20))
                figures.append(Figure(NAME, f"{label}: {split} episodes ending as {name}", mean, "%"))
            lines.append(f"{label:<38}" + "".join(cells))
    return figures, lines
