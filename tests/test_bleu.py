"""Corpus BLEU against hand-computed cases and sacrebleu on the same tokenized text."""

from __future__ import annotations

import math
import random

import pytest

from lodestar.agents.vln.bleu import References, corpus_bleu, corpus_bleu_text, ngrams


def test_identical_hypotheses_score_one():
    refs = [[["walk", "past", "the", "sofa", "and", "stop"]], [["turn", "left", "at", "the", "door", "."]]]
    score = corpus_bleu([r[0] for r in refs], refs)
    assert score.bleu == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert score.brevity_penalty == 1.0


def test_hand_computed_clipping_and_brevity_penalty():
    # Papineni's example: "the the the the the the the" against two references -> p1 = 2/7.
    hyp = ["the"] * 7
    refs = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    score = corpus_bleu([hyp], [refs], max_order=1)
    assert score.matches == [2] and score.totals == [7]
    assert score.bleu[0] == pytest.approx(2 / 7)  # hyp length 7 = closest ref length 7: no penalty

    # Short hypothesis: closest reference length 6 (tie 4 vs 6 would pick the shorter).
    hyp = ["the", "mat", "on", "the", "cat"]
    score = corpus_bleu([hyp], [refs], max_order=2)
    assert score.ref_length == 6 and score.hyp_length == 5
    bp = math.exp(1 - 6 / 5)
    p1, p2 = 5 / 5, 3 / 4  # bigrams "the mat", "on the", "the cat" occur in a reference, "mat on" not
    assert score.precisions == pytest.approx([p1, p2])
    assert score.bleu == pytest.approx([bp * p1, bp * math.sqrt(p1 * p2)])


def test_closest_reference_length_tie_picks_shorter():
    score = corpus_bleu([["a", "b", "c", "d", "e"]], [[["a", "b", "c", "d"], ["a", "b", "c", "d", "e", "f"]]])
    assert score.ref_length == 4


def test_zero_precision_gives_zero_and_empty_hypothesis():
    score = corpus_bleu([["a", "b"]], [[["a", "c"]]])
    assert score.bleu[0] > 0 and score.bleu[1] == 0.0 and score.bleu[3] == 0.0
    assert corpus_bleu([[]], [[["a"]]]).bleu == [0.0] * 4


def test_references_object_reuses_statistics():
    refs = [[["go", "left"], ["turn", "left", "now"]], [["stop", "here"]]]
    prepared = References(refs)
    for hyps in ([["go", "left"], ["stop"]], [["turn", "left"], ["stop", "here", "now"]]):
        assert prepared.score(hyps) == corpus_bleu(hyps, refs)
    with pytest.raises(ValueError, match="2 reference lists"):
        prepared.score([["x"]])
    with pytest.raises(ValueError, match="no reference"):
        References([[]])


def test_ngrams():
    assert ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}


def test_text_interface_tokenizes_like_the_vocabulary():
    score = corpus_bleu_text(["Walk past the sofa."], [["walk past the sofa .", "go"]])
    assert score.bleu[3] == pytest.approx(1.0)


def _random_corpus(rng: random.Random, size: int) -> tuple[list[list[str]], list[list[list[str]]]]:
    words = ["walk", "turn", "left", "right", "the", "door", "sofa", "stop", "and", "past", ".", ","]

    def sentence() -> list[str]:
        return [rng.choice(words) for _ in range(rng.randint(0, 14))]

    hyps = [sentence() for _ in range(size)]
    refs = [[sentence() for _ in range(rng.randint(1, 3))] for _ in range(size)]
    for r in refs:  # keep at least one non-empty reference
        r[0].append("end")
    return hyps, refs


@pytest.mark.parametrize("seed", range(6))
def test_matches_sacrebleu(seed):
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu.metrics import BLEU

    rng = random.Random(seed)
    hyps, refs = _random_corpus(rng, 40)
    ours = corpus_bleu(hyps, refs)
    # sacrebleu wants one stream per reference position; pad missing references with a copy of
    # the first (a duplicate reference changes neither clipping maxima nor the closest length).
    width = max(len(r) for r in refs)
    streams = [[" ".join(r[k] if k < len(r) else r[0]) for r in refs] for k in range(width)]
    for n in range(1, 5):
        theirs = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n).corpus_score(
            [" ".join(h) for h in hyps], streams
        )
        assert ours.bleu[n - 1] * 100 == pytest.approx(theirs.score, abs=1e-9)
        assert ours.hyp_length == theirs.sys_len and ours.ref_length == theirs.ref_len
    assert sacrebleu is not None
