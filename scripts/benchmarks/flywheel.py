"""flywheel: does the speaker-follower flywheel beat the PREVALENT recipe it starts from?

Runs (or resumes) ``scripts/flywheel.py``'s rounds 0 .. ``rounds - 1`` (default 3) on the ``benchmark``
preset with ``seeds`` fine-tuning seeds per round (default 0,1,2), then reports, per round: follower SR,
SPL and nDTW on ``test`` (the headline: houses that took part in no decision) with val_seen and
val_unseen beside it (mean, sample std and 95% bootstrap interval over seeds), the speaker's BLEU-4, the
synthetic pairs labelled and kept, the wall time of each stage, and where the test and val_unseen
episodes end (the failure categories of ``envs/nav/eval/failures.py``). Two targets:

- the last round's test SR is at least ``ROUND_GAIN_TARGET`` points above round 0's, with a 95%
  stratified bootstrap interval of the gain above zero;
- pragmatic inference (``rerank`` candidate routes per instruction, speaker-weighted; default K=8) adds
  at least ``RERANK_GAIN_TARGET`` test SR points over greedy decoding of the same follower: every seed of
  the last round, the speaker weight chosen on ``select`` (val_unseen) for each, never on test; the
  gain is the mean paired (reranked - greedy) difference over seeds with its bootstrap interval.

Round 0 is the PREVALENT recipe, which is exactly vln-ablation's arm (c) when both use the same
options: ``round0=<vln-ablation work dir>`` (default ``runs/vln-ablation`` when it holds a pretraining
run) adopts that arm -- its speaker, synthetic split, pretraining and ``c_pretrained-s<seed>`` runs,
checked to have been made with round 0's settings -- instead of training it a second time
(``round0=`` with no value trains it under ``run``). Adopted stages report no wall time here.

Options (``key=value``): ``data`` (default ``data/nav/benchmark``, built with ``cnn`` features when
missing), ``run`` (default ``runs/flywheel``), ``round0``, ``rerank`` (K; 0 skips pragmatic inference),
``weights`` (the speaker-weight grid, comma-separated), ``resamples``, and any key of
``configs/vln_flywheel.yaml`` (``rounds``, ``seeds=0,1,2``, ``threshold``, ``paths_per_round``, ...).
``--quick`` runs two rounds on the ``tiny`` world with random features and tiny budgets: a smoke test
of the machinery, not a measurement. Reranking results are cached per seed
(``<run>/round_<k>/rerank-s<seed>.json``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flywheel as rounds
import torch

from benchmarks.vln_ablation_report import FAILURE_SPLITS, SPLITS, Scores, gain_figures
from benchmarks.vln_stages import Plan, ensure_world, evaluate
from lodestar.agents.vln.follower import load_follower
from lodestar.agents.vln.pragmatic import (
    DEFAULT_WEIGHTS,
    Candidates,
    SpeakerScorer,
    check_selection_split,
    parse_weights,
    propose_routes,
    reranked_evaluation,
    select_weight,
)
from lodestar.agents.vln.speaker import load_speaker
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.failures import CATEGORIES as FAILURES
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.config import ConfigError, load_config
from lodestar.runtime.protocol import HELD_OUT_SPLIT
from lodestar.runtime.stats import DEFAULT_RESAMPLES, bootstrap_mean_difference, mean_std

NAME = "flywheel"
ROUND_GAIN_TARGET = 3.0  # test SR points, last round over round 0, interval above 0
RERANK_GAIN_TARGET = 2.0  # test SR points, reranked over greedy decoding of the same follower
ABLATION_WORK = Path("runs/vln-ablation")
RERANK_METRICS = ("sr", "spl", "tl")
QUICK = [
    "rounds=2", "seeds=[0,1,2]", "paths_per_round=30", "new_houses_per_round=0", "threshold=0.1",
    "parallel=1", "round0=", "features=random",
]  # fmt: skip
BENCH_KEYS = {"data", "run", "rerank", "weights", "resamples"}


@dataclass
class Settings:
    """What the benchmark runs: the flywheel's config and the reranking it adds."""

    config: rounds.FlywheelConfig
    rerank: int  # candidate routes per instruction; 0 skips pragmatic inference
    weights: tuple[float, ...]
    resamples: int


def log(message: str) -> None:
    print(f"[flywheel] {message}", file=sys.stderr, flush=True)


def make_settings(quick: bool, options: dict[str, str]) -> Settings:
    run = options.get("run", "runs/flywheel" + ("-quick" if quick else ""))
    data = options.get("data", f"{run}/world" if quick else "data/nav/benchmark")
    overrides = [f"data_dir={data}", f"run_dir={run}"] + (QUICK if quick else [])
    if not quick and "round0" not in options and (ABLATION_WORK / "pretrain" / "config.yaml").is_file():
        overrides.append(f"round0={ABLATION_WORK}")
    for key, value in options.items():
        if key not in BENCH_KEYS:
            # seeds=0,1,2 as on the other benchmarks' command lines; the config takes a YAML list.
            overrides.append(f"{key}=[{value}]" if key == "seeds" and "[" not in value else f"{key}={value}")
    try:
        config = load_config(rounds.FlywheelConfig, rounds.CONFIG, overrides)
        weights = parse_weights(options.get("weights", ",".join(map(str, DEFAULT_WEIGHTS))))
        check_selection_split(config.select_split)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"flywheel: {exc}") from None
    rerank = int(options.get("rerank", "3" if quick else "8"))
    if rerank == 1 or rerank < 0:
        raise SystemExit(
            f"flywheel: rerank is K >= 2 candidate routes per instruction, or 0 to skip; got {rerank}"
        )
    resamples = int(options.get("resamples", str(DEFAULT_RESAMPLES)))
    if resamples < 1000:
        raise SystemExit(f"flywheel: resamples must be >= 1000 for a 95% interval, got {resamples}")
    return Settings(config, rerank, weights, resamples)


def ensure_data(settings: Settings, quick: bool) -> None:
    """The dataset and its features (built like vln-ablation's when missing)."""
    c = settings.config
    features = c.features
    if features == "auto":  # the dataset's only features file; a world built here gets cnn features
        try:
            features = NavDataset(c.data_dir).resolve_features(features)
        except FileNotFoundError:
            features = "cnn"
    plan = Plan(
        Path(c.data_dir), Path(c.run_dir), list(c.seeds), features, quick, c.threads, c.parallel, name=NAME
    )
    Path(c.run_dir).mkdir(parents=True, exist_ok=True)
    ensure_world(plan)


# -- pragmatic inference ----------------------------------------------------------------------------


def rerank_seed(wheel: rounds.Flywheel, r: rounds.Round, run: Path, settings: Settings) -> dict[str, Any]:
    """Greedy and reranked metrics of one follower on ``test`` (weight chosen on the selection split)."""
    cache = r.dir / f"rerank-{run.name.rsplit('-', 1)[-1]}.json"
    key = {"candidates": settings.rerank, "weights": list(settings.weights), "select": r.plan.select}
    best = run / "best.pt"
    if cache.is_file() and cache.stat().st_mtime >= best.stat().st_mtime:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached
    log(f"round {r.index}: pragmatic inference with {run} (K={settings.rerank})")
    follower = load_follower(best)
    scorer = SpeakerScorer(load_speaker(r.plan.work / "speaker" / "best.pt"), wheel.dataset)
    seed = int(run.name.rsplit("-s", 1)[-1])

    def candidates(split: str) -> Candidates:
        proposed = propose_routes(follower, wheel.dataset, split, settings.rerank, seed=seed)
        scorer(proposed)
        return proposed

    chosen = select_weight(candidates(r.plan.select), settings.weights, "sr")
    held_out = candidates(HELD_OUT_SPLIT)
    greedy, reranked = (reranked_evaluation(held_out, w).summary for w in (0.0, chosen.weight))
    if greedy is None or reranked is None:
        raise SystemExit(
            f"flywheel: {wheel.data} hides the goals of {HELD_OUT_SPLIT!r}; the benchmark needs them"
        )
    result = {
        "key": key,
        "weight": chosen.weight,
        "routes_per_instruction": float(held_out.valid.sum(1).double().mean()),
        "greedy": {m: greedy[m] for m in RERANK_METRICS},
        "reranked": {m: reranked[m] for m in RERANK_METRICS},
    }
    cache.write_text(json.dumps(result, indent=1))
    return result


def rerank_report(results: list[dict[str, Any]], k: int, resamples: int) -> tuple[list[Figure], list[str]]:
    """Greedy against reranked test metrics over seeds; the SR gain's paired bootstrap interval."""
    scale = {"sr": 100.0, "spl": 100.0, "tl": 1.0}
    lines = [
        "",
        f"pragmatic inference on {HELD_OUT_SPLIT} (K={k} routes per instruction, the speaker weight chosen on "
        f"the validation split per seed: {[r['weight'] for r in results]}); mean ± std over seeds",
        f"{'decoding':<10}" + "".join(f"{m.upper():>16}" for m in RERANK_METRICS),
    ]
    figures: list[Figure] = []
    greedy_means: dict[str, float] = {}
    for decoding in ("greedy", "reranked"):
        cells = ""
        for metric in RERANK_METRICS:
            mean, std = mean_std([scale[metric] * r[decoding][metric] for r in results])
            cells += f"{mean:9.2f} ± {std:4.2f}"
            what, unit = (
                f"{HELD_OUT_SPLIT} {metric.upper()}, {decoding} decoding",
                "m" if metric == "tl" else "%",
            )
            if decoding == "greedy":
                greedy_means[metric] = mean
                figures.append(Figure(NAME, what, mean, unit))
            else:
                figures.append(
                    Figure(NAME, what, mean, unit, f"greedy {metric.upper()}", greedy_means[metric])
                )
        lines.append(f"{decoding:<10}{cells}")
    gains = [100.0 * (r["reranked"]["sr"] - r["greedy"]["sr"]) for r in results]
    gain = bootstrap_mean_difference(gains, [0.0], resamples=resamples)
    what = f"{HELD_OUT_SPLIT} SR gain of pragmatic inference over greedy"
    figures += gain_figures(NAME, what, gain, "greedy decoding: no gain", RERANK_GAIN_TARGET)
    lines.append(
        f"SR gain: {gain.mean:+.2f} points, 95% CI [{gain.low:+.2f}, {gain.high:+.2f}] (paired over seeds)"
    )
    return figures, lines


# -- the round table --------------------------------------------------------------------------------


def round_report(results: list[dict[str, Any]], resamples: int) -> tuple[list[Figure], list[str]]:
    """Every round's figures, and each later round's test SR gain over round 0 (target on the last)."""
    figures: list[Figure] = []
    lines = ["", rounds.table(results), "", "wall time per stage (s; adopted or reused stages: -)"]
    for m in results:
        k, splits = m["round"], m["splits"]
        for split in SPLITS:
            for metric in rounds.METRICS:
                what = f"round {k}: {split} {metric.upper()}"
                figures.append(Figure(NAME, f"{what} mean", splits[split][metric], "%"))
                figures.append(Figure(NAME, f"{what} std", splits[split][f"{metric}_std"], "% (over seeds)"))
            figures.append(
                Figure(NAME, f"round {k}: speaker {split} BLEU-4", m["speaker_bleu4"][split], "BLEU")
            )
        figures.append(Figure(NAME, f"round {k}: synthetic pairs labelled", m["labelled"], "pairs"))
        figures.append(
            Figure(NAME, f"round {k}: synthetic pairs kept", m["kept"], "pairs", "labelled", m["labelled"])
        )
        for stage, seconds in m["seconds"].items():
            figures.append(Figure(NAME, f"round {k}: {stage} wall time", seconds, "s"))
        stages = ", ".join(f"{s} {v:.0f}" for s, v in m["seconds"].items()) or "-"
        lines.append(f"  round {k}: {stages}")
    last = results[-1]["round"]
    for k, gain in rounds.gain_over_round0(results, resamples).items():
        target = ROUND_GAIN_TARGET if k == last else None
        what = f"round {k} - round 0: {HELD_OUT_SPLIT} SR gain"
        figures += gain_figures(NAME, what, gain, "round 0 (PREVALENT): no gain", target)
    return figures, lines


def failure_report(scores: list[list[Scores]]) -> tuple[list[Figure], list[str]]:
    """Where each round's test and val_unseen episodes end (failure categories, mean over seeds, %)."""
    figures: list[Figure] = []
    lines: list[str] = []
    for split in FAILURE_SPLITS:
        lines += ["", f"{split + ': where episodes end (%)':<34}" + "".join(f"{k:>20}" for k in FAILURES)]
        for k, seeds in enumerate(scores):
            cells = ""
            for name in FAILURES:
                mean, std = mean_std([100.0 * s[split][f"failures/{name}"] for s in seeds])
                cells += f"{mean:11.2f} ± {std:5.2f}"
                figures.append(Figure(NAME, f"round {k}: {split} episodes ending as {name}", mean, "%"))
            lines.append(f"{'round ' + str(k):<34}{cells}")
    return figures, lines


def filter_report(records: dict[int, dict[str, Any]]) -> tuple[list[Figure], list[str]]:
    """How each filtered round's kept pairs differ from the dropped ones (``filter.json`` per round)."""
    figures: list[Figure] = []
    lines = [
        "",
        "filtered synthesis: kept vs dropped pairs (mean instruction words, path hops, metres, nDTW)",
    ]
    for k, record in sorted(records.items()):
        kept, dropped = record["kept"], record["dropped"]
        stats = ("instruction_words", "path_hops", "path_metres", "ndtw")
        cells = "  ".join(f"{name} {kept[name]:.2f} vs {dropped[name]:.2f}" for name in stats)
        lines.append(
            f"  round {k}: kept {kept['pairs']} of {record['pairs']} ({100 * record['kept_fraction']:.1f}%, "
            f"nDTW >= {record['threshold']}): {cells}"
        )
        figures.append(Figure(NAME, f"round {k}: kept pairs' mean filter nDTW", kept["ndtw"], "nDTW",
                              "dropped pairs' mean", dropped["ndtw"]))  # fmt: skip
    return figures, lines


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    settings = make_settings(quick, options)
    c = settings.config
    started = time.perf_counter()
    ensure_data(settings, quick)
    if c.round0:
        log(f"round 0 is vln-ablation's arm (c) in {c.round0} (the PREVALENT recipe with round 0's options)")
    if c.threads > 0:
        torch.set_num_threads(c.threads)
    wheel = rounds.Flywheel(c, quick=quick)
    results = wheel.run_all()
    figures, lines = round_report(results, settings.resamples)
    # Cached beside each best.pt by the rounds' own evaluation: reading them costs nothing.
    plans = [wheel.round(k) for k in range(c.rounds)]
    more, more_lines = failure_report([[evaluate(r.plan, run) for run in r.follower_runs()] for r in plans])
    figures += more
    lines += more_lines
    filtered = {r.index: json.loads((r.dir / "filter.json").read_text()) for r in plans[1:]}
    more, more_lines = filter_report(filtered)
    figures += more
    lines += more_lines
    if settings.rerank:
        last = wheel.round(c.rounds - 1)
        reranked = [rerank_seed(wheel, last, run, settings) for run in last.follower_runs()]
        more, more_lines = rerank_report(reranked, settings.rerank, settings.resamples)
        figures += more
        lines += more_lines
    print(
        f"\nflywheel on {c.data_dir}: rounds 0-{c.rounds - 1}, {len(c.seeds)} fine-tuning seeds per round, "
        f"threshold nDTW >= {c.threshold}, {c.paths_per_round} paths labelled per round; best.pt and filtering "
        f"followers chosen on {c.select_split}, {HELD_OUT_SPLIT} used by no decision; run dir {c.run_dir}"
        + (f"; round 0 adopted from {c.round0}" if c.round0 else "")
    )
    print("\n".join(lines))
    report(figures, f"flywheel{' (quick: tiny world, random features - a smoke test)' if quick else ''}")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return figures
