"""vln-ablation: does PREVALENT-style pretraining on speaker-synthesized data pay off in unseen houses?

Same fine-tuning budget (``configs/vln_finetune.yaml``), ``seeds`` fine-tuning seeds per condition (arm):

- (a) ``scratch``: fine-tuned from scratch on the human ``train`` split;
- (b) ``augment``: from scratch on human + synthetic episodes (EnvDrop-style augmentation);
- (c) ``pretrained``: pretrained (MLM + action prediction) on human + synthetic triplets, then
  fine-tuned on human ``train``.

Protocol (DESIGN.md section 9). Every decision uses a validation split: each fine-tuning run keeps
its ``best.pt`` by SPL on ``select`` (default ``val_unseen``), passed to the runs explicitly; the
speaker keeps its ``best.pt`` by BLEU-4 on the same split; pretraining selects nothing (fine-tuning
starts from its last checkpoint). No run evaluates ``test`` while it trains, and a configuration that
would select on ``test`` is refused before anything runs; each evaluated ``best.pt`` is checked for
the split it was selected on. The headline is ``test`` (held-out houses that took part in no
decision): SR/SPL/nDTW per arm, mean and sample std over seeds, with val_seen and val_unseen beside
it for comparison with the R2R literature (the selection split's figures are optimistic). The
(c) - (a) SR gain is reported per split with its standard error and a 95% stratified bootstrap
interval (``resamples`` draws, default 10,000: each draw resamples every arm's seeds with
replacement, independently of the other arm; percentile interval; :mod:`lodestar.runtime.stats`).
The +5 SR target is met only when the mean test gain reaches 5 points *and* the interval's lower
bound is above 0. Also reported: where test and val_unseen episodes end (the failure categories of
``envs/nav/eval/failures.py``), and throughput: pretraining samples/s and fine-tuning episodes/s in
one process and with ``torchrun --nproc_per_node 2`` (same global batch / envs per process), each
multi-process figure against the single-process one of the same run.

Stages that already produced their output in ``work`` (world, features, speaker, synthetic split,
pretraining, fine-tuning runs) are reused, so an interrupted benchmark picks up where it stopped;
the greedy evaluation of a finished run is cached beside its ``best.pt`` (``ablation_eval.json``),
so re-running the report costs only the throughput measurement (``throughput=0`` skips it).

Options (``key=value``): ``data`` (dataset directory; default ``data/nav/benchmark``, built with
``features=cnn`` when missing), ``work`` (runs directory, default ``runs/vln-ablation``), ``seeds``
(``0,1,2``; at least 3), ``select`` (the validation split ``best.pt`` is chosen on, default
``val_unseen``), ``resamples`` (bootstrap draws, default 10000), ``throughput`` (1/0), ``features``,
``threads`` (torch threads per run), ``parallel`` (fine-tuning runs side by side, default 2, each in
its own process with one torch thread unless ``threads`` says otherwise, logging to
``<work>/<condition>-s<seed>.log``), and stage overrides prefixed with ``speaker.``, ``synth.``,
``pretrain.`` or ``finetune.`` (e.g. ``finetune.iterations=1500``, ``synth.new_houses=20``; by
default synthesis labels 30,000 paths, in the train houses and 30 new ones, with sampled speaker
decoding, when the dataset has no ``R2R_synthetic.json`` yet). A synthetic split already in the
dataset is reused only if it was synthesized with the requested options;
``synth.split_name=<name>`` (e.g. with ``synth.decoding=greedy``) writes and uses ``R2R_<name>.json``
beside it. ``--quick`` runs the whole pipeline on the ``tiny`` preset with random features and tiny
budgets: a smoke test of the machinery, not a measurement of the recipe.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.vln_ablation_report import CONDITIONS, HEADLINE, NAME, Scores, summarize
from benchmarks.vln_stages import (
    QUICK,
    ROOT,
    Plan,
    check_stages,
    ensure_synthetic,
    ensure_world,
    evaluate,
    finetune,
    log,
    pretrain,
)
from lodestar.agents.vln.finetune import FinetuneTrainer
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.pretrain.trainer import PretrainConfig, PretrainTrainer
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.config import load_config
from lodestar.runtime.protocol import check_selection_splits
from lodestar.runtime.stats import DEFAULT_RESAMPLES

MIN_SEEDS = 3  # per arm: the protocol's minimum for a comparison


def make_plan(quick: bool, options: dict[str, str]) -> Plan:
    known = {"data", "work", "seeds", "features", "threads", "parallel", "select", "resamples", "throughput"}
    overrides: dict[str, list[str]] = {}
    for key, value in options.items():
        prefix, dot, rest = key.partition(".")
        if dot and rest == "select_split":
            raise SystemExit(f"vln-ablation: {key} is set for every stage at once: pass select=<split>")
        if dot and prefix in QUICK:
            overrides.setdefault(prefix, []).append(f"{rest}={value}")
        elif key not in known:
            raise SystemExit(
                f"vln-ablation: unknown option {key!r} (known: {sorted(known)} and speaker./synth./pretrain./finetune. overrides)"
            )
    work = Path(options.get("work", "runs/vln-ablation" + ("-quick" if quick else "")))
    data = Path(options.get("data", str(work / "world" if quick else Path("data/nav/benchmark"))))
    seeds = [int(s) for s in options.get("seeds", "0,1,2").split(",") if s.strip()]
    if len(set(seeds)) < MIN_SEEDS or len(set(seeds)) < len(seeds):
        raise SystemExit(
            f"vln-ablation: seeds={options.get('seeds')} must list at least {MIN_SEEDS} distinct seeds "
            "(per arm, the protocol's minimum for a comparison)"
        )
    select = options.get("select", "val_unseen")
    try:
        check_selection_splits(select, [], reported=(HEADLINE,), owner="vln-ablation")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    resamples = int(options.get("resamples", str(DEFAULT_RESAMPLES)))
    if resamples < 1000:
        raise SystemExit(f"vln-ablation: resamples must be >= 1000 for a 95% interval, got {resamples}")
    features = options.get("features", "random" if quick else "cnn")
    parallel = int(options.get("parallel", "2"))
    if parallel < 1:
        raise SystemExit("vln-ablation: parallel must be >= 1")
    threads = int(options.get("threads", "0"))
    measure = options.get("throughput", "1")
    if measure not in ("0", "1"):
        raise SystemExit(f"vln-ablation: throughput must be 1 (measure) or 0 (skip), got {measure!r}")
    return Plan(
        data, work, seeds, features, quick, threads, parallel, select, resamples, measure == "1", overrides
    )


# -- throughput -------------------------------------------------------------------------------------


def _torchrun(script: str, args: list[str], processes: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "LODESTAR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"torchrun {script} failed:\n{done.stderr[-3000:]}")
    return done


def _rate(stdout: str, unit: str) -> float:
    """The ``<number> <unit>`` figure the training scripts print at the end."""
    found = re.findall(rf"([0-9.]+) {re.escape(unit)}", stdout)
    if not found:
        raise RuntimeError(f"no '{unit}' figure in the output:\n{stdout[-2000:]}")
    return float(found[-1])


def throughput(plan: Plan) -> list[Figure]:
    """Samples/s (pretraining) and episodes/s (fine-tuning): one process vs ``torchrun`` with two.

    Both use one torch thread per process, the same global batch (pretraining) and the same envs per
    process (fine-tuning); the single-process run is this process, the other is launched by torchrun.
    """
    iterations = 4 if plan.quick else 40
    common = ["eval_every=0", f"checkpoint_every={iterations}", f"iterations={iterations}", "torch_threads=1"]
    stages = {
        "pretrain": (PretrainConfig, PretrainTrainer, "pretrain_vln.py", "vln_pretrain.yaml", "samples/s",
                     "pretraining samples/s", ["data.sources=[train]"]),
        "finetune": (FinetuneConfig, FinetuneTrainer, "finetune_vln.py", "vln_finetune.yaml", "episodes/s",
                     "fine-tuning episodes/s", []),
    }  # fmt: skip
    figures = []
    threads = torch.get_num_threads()
    for stage, (schema, trainer_class, script, config_file, unit, what, extra) in stages.items():
        overrides = plan.stage(stage, *common, *extra)
        single = plan.work / f"throughput-{stage}-1p"
        shutil.rmtree(single, ignore_errors=True)
        config = load_config(schema, ROOT / "configs" / config_file, [*overrides, f"name={single.name}"])
        trainer = trainer_class(config, single)
        try:
            result = trainer.train()
        finally:
            trainer.close()
            torch.set_num_threads(threads)
        one = result.samples_per_second if stage == "pretrain" else result.episodes_per_second
        shutil.rmtree(plan.work / f"throughput-{stage}-2p", ignore_errors=True)
        args = ["--config", str(ROOT / "configs" / config_file), *overrides, f"name=throughput-{stage}-2p"]
        two = _rate(_torchrun(script, args, 2).stdout, unit)
        figures.append(Figure(NAME, f"{what}, 1 process", one, unit))
        figures.append(
            Figure(NAME, f"{what}, torchrun 2 processes", two, unit, reference=f"{what}, 1 process",
                   reference_value=one, target=1.3)
        )  # fmt: skip
    return figures


# -- the benchmark ----------------------------------------------------------------------------------


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    plan = make_plan(quick, options)
    started = time.perf_counter()
    if plan.threads > 0:
        torch.set_num_threads(plan.threads)
    check_stages(plan)
    plan.work.mkdir(parents=True, exist_ok=True)
    ensure_world(plan)
    ensure_synthetic(plan)
    log(plan, f"data ready after {time.perf_counter() - started:.0f} s")
    pretrained, _ = pretrain(plan)
    jobs = [(condition, seed) for condition in CONDITIONS for seed in plan.seeds]
    with ThreadPoolExecutor(max_workers=plan.parallel) as pool:
        run_dirs = list(
            pool.map(lambda job: finetune(plan, *job, pretrained if job[0] == "c_pretrained" else None), jobs)
        )
    results: dict[str, list[Scores]] = {c: [] for c in CONDITIONS}
    for (condition, _), run_dir in zip(jobs, run_dirs, strict=True):
        results[condition].append(evaluate(plan, run_dir))
    figures, lines = summarize(results, plan.select, plan.resamples)
    log(plan, f"conditions done after {time.perf_counter() - started:.0f} s")
    if plan.throughput:
        figures.extend(throughput(plan))
    print(
        f"\nvln-ablation on {plan.data} ({len(plan.seeds)} seeds per arm; features '{plan.features}'; "
        f"best.pt selected on {plan.select}, {HEADLINE} used by no decision; work dir {plan.work})"
    )
    print("\n".join(lines))
    report(figures, f"vln-ablation{' (quick: tiny world, random features - a smoke test)' if quick else ''}")
    log(plan, f"done in {time.perf_counter() - started:.0f} s")
    return figures
