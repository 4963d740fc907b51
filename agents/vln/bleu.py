"""Corpus BLEU-1..4 (Papineni et al., 2002) with several references per hypothesis.

Our own implementation, checked against ``sacrebleu.corpus_bleu`` (``tokenize="none"``,
``smooth_method="none"``) in the tests. For each hypothesis, n-gram counts are clipped by the
largest count of that n-gram in any one of its references; clipped matches and hypothesis n-grams
are summed over the corpus. The brevity penalty uses, per hypothesis, the reference length closest
to the hypothesis length (the shorter one on a tie), summed over the corpus. ``BLEU-n`` is the
brevity penalty times the geometric mean of the precisions of orders ``1..n`` (0 when any of them
is 0). Scores are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lodestar.envs.nav.data.tokenizer import tokenize

MAX_ORDER = 4


@dataclass
class BleuScore:
    """Corpus statistics and ``bleu[n - 1]`` = BLEU-n for ``n = 1..max_order``."""

    bleu: list[float]
    precisions: list[float]
    matches: list[int]
    totals: list[int]
    brevity_penalty: float
    hyp_length: int
    ref_length: int

    def as_dict(self, prefix: str = "bleu") -> dict[str, float]:
        """``{"bleu1": ..., "bleu2": ..., ...}``."""
        return {f"{prefix}{n + 1}": value for n, value in enumerate(self.bleu)}


def ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of the ``n``-grams of ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class References:
    """Tokenized reference lists prepared once (clipping counts, lengths) to score many hypothesis sets."""

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], max_order: int = MAX_ORDER) -> None:
        if max_order < 1:
            raise ValueError(f"max_order must be >= 1, got {max_order}")
        self.max_order = max_order
        self.lengths: list[list[int]] = []
        # clip[i][n - 1]: the largest count of each n-gram in any one reference of item i
        self.clip: list[list[Counter[tuple[str, ...]]]] = []
        for i, refs in enumerate(references):
            if not refs:
                raise ValueError(f"hypothesis {i} has no reference")
            self.lengths.append([len(r) for r in refs])
            per_order = []
            for n in range(1, max_order + 1):
                best: Counter[tuple[str, ...]] = Counter()
                for ref in refs:
                    best |= ngrams(ref, n)  # element-wise max
                per_order.append(best)
            self.clip.append(per_order)

    def __len__(self) -> int:
        return len(self.lengths)

    def score(self, hypotheses: Sequence[Sequence[str]]) -> BleuScore:
        """Corpus BLEU of ``hypotheses[i]`` against reference list ``i``."""
        if len(hypotheses) != len(self):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(self)} reference lists")
        order = self.max_order
        matches, totals = [0] * order, [0] * order
        hyp_length = ref_length = 0
        for hyp, lengths, clip in zip(hypotheses, self.lengths, self.clip, strict=True):
            hyp_length += len(hyp)
            ref_length += min((abs(r - len(hyp)), r) for r in lengths)[1]
            for n in range(1, min(order, len(hyp)) + 1):
                counts, best = ngrams(hyp, n), clip[n - 1]
                matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items() if g in best)
                totals[n - 1] += len(hyp) - n + 1
        return _combine(matches, totals, hyp_length, ref_length)


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_order: int = MAX_ORDER,
) -> BleuScore:
    """BLEU-1..``max_order`` of tokenized ``hypotheses``, each against its list of tokenized references."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    return References(references, max_order).score(hypotheses)


def _combine(matches: list[int], totals: list[int], hyp_length: int, ref_length: int) -> BleuScore:
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals, strict=True)]
    if hyp_length == 0:
        bp = 0.0
    else:
        bp = 1.0 if hyp_length >= ref_length else math.exp(1.0 - ref_length / hyp_length)
    bleu, log_sum = [], 0.0
    for n, p in enumerate(precisions, start=1):
        log_sum = log_sum + math.log(p) if p > 0.0 else -math.inf
        bleu.append(bp * math.exp(log_sum / n) if log_sum > -math.inf else 0.0)
    return BleuScore(bleu, precisions, matches, totals, bp, hyp_length, ref_length)


def corpus_bleu_text(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], max_order: int = MAX_ORDER
) -> BleuScore:
    """:func:`corpus_bleu` of raw instruction strings, tokenized like the vocabulary does."""
    return corpus_bleu(
        [tokenize(h) for h in hypotheses], [[tokenize(r) for r in refs] for refs in references], max_order
    )
