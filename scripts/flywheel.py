"""The speaker-follower flywheel: rounds of labelling, filtering and retraining, from one command.

    python scripts/flywheel.py --data data/nav/benchmark --rounds 3 [--run runs/flywheel] \\
        [--config configs/vln_flywheel.yaml] [--quick] [key=value ...]

The speaker (path -> instruction) and the follower (instruction -> path) teach each other with no new
human labels (DESIGN.md section 5, step 7):

- round 0 is the PREVALENT recipe: the speaker trains on the human ``train`` split, labels
  ``paths_per_round`` sampled paths (train houses + ``new_houses_per_round`` fresh ones), the follower is
  pretrained on human + synthetic triplets and fine-tuned on human ``train`` (one run per seed);
- round k >= 1 labels a fresh set of paths (its own sampling seed and fresh houses) with the round-(k-1)
  speaker, has the round-(k-1) follower walk every instruction and keeps the pairs whose walk scores
  nDTW >= ``threshold`` against their path (:mod:`lodestar.pretrain.synthesis_filter`), then trains a new
  speaker on human + kept pairs and a new follower (pretraining on human + kept triplets, then
  fine-tuning) from scratch.

Round 0 may be adopted instead of trained: ``round0=<vln-ablation work dir>`` takes that benchmark's
arm (c), which is the PREVALENT recipe with round 0's options -- its speaker, synthetic split,
pretraining and ``c_pretrained-s<seed>`` runs stay where they are, each checked to have been made with
the settings round 0 would use.

Protocol (DESIGN.md section 9): every ``best.pt`` is chosen on ``select_split`` (a validation split); the
follower that filters the next round's data is the round's seed with the best ``select_split`` SPL;
``test`` takes part in no decision and is reported as the headline, with val_seen / val_unseen beside it.

Outputs. Splits are written into the dataset (where every stage reads them by name, as synthesis does):
``R2R_<prefix>_r<k>.json`` (labelled), ``R2R_<prefix>_r<k>_kept.json`` (filtered, with a ``filter_ndtw``
field) and ``R2R_<prefix>_r<k>_speaker.json`` (human train + kept pairs, the speaker's training split),
each with its trajectory store under ``trajectories/``. Everything else is under ``<run>/round_<k>/``:
``speaker/``, ``pretrain/``, ``follower-s<seed>/`` (+ ``.log``), ``filter.json`` (kept fraction, kept vs
dropped statistics), ``stages.json`` (wall time of each stage, summed over resumes) and ``metrics.json``
(per split: SR/SPL/nDTW mean, std and 95% interval over seeds; speaker BLEU-4; pairs labelled and kept).
TensorBoard logs the rounds under ``<run>`` with the round as the step (``flywheel/<split>/<metric>``,
``flywheel/data/...``, ``flywheel/seconds/<stage>``).

Every stage that finished is reused and an interrupted one resumes (synthesis chunks, speaker /
pretraining / fine-tuning checkpoints), so the command started again with the same options picks up
where it stopped; ``--rounds`` can be raised later to add rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.vln_ablation_report import SPLITS, Scores
from benchmarks.vln_stages import (
    Plan,
    check_stages,
    check_synthesis_options,
    evaluate,
    finetune,
    pretrain,
    pretrain_config,
    run_finished,
)
from lodestar.agents.vln.speaker import load_speaker
from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer, evaluate_speaker
from lodestar.agents.vln.trajectories import InstructionSet, PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import write_r2r
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE
from lodestar.pretrain.synthesis import SynthesisConfig, split_file, synthesize
from lodestar.pretrain.synthesis_filter import FilterReport, filter_split
from lodestar.pretrain.trainer import PretrainConfig
from lodestar.runtime.atomic import atomic_write
from lodestar.runtime.cli import config_epilog, run_main, tensorboard_command
from lodestar.runtime.config import load_config, require, to_dict
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.protocol import HELD_OUT_SPLIT, check_selection_splits
from lodestar.runtime.stats import DEFAULT_RESAMPLES, Interval, bootstrap_mean_difference, mean_std
from lodestar.runtime.training import train_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "vln_flywheel.yaml"
METRICS = ("sr", "spl", "ndtw")
# Synthetic path ids of round k start at (k + 1) * this, apart from human ids and from other rounds.
ROUND_ID_STRIDE = 10_000_000
ADOPTED_FOLLOWER = "c_pretrained"  # vln-ablation's arm (c): the fine-tuning runs an adopted round 0 uses


@dataclass
class FlywheelConfig:
    """The typed schema of ``configs/vln_flywheel.yaml``."""

    data_dir: str = ""  # dataset directory; ``--data`` sets it
    run_dir: str = "runs/flywheel"  # ``--run`` sets it
    rounds: int = 3  # round 0 (PREVALENT) + rounds - 1 filtered rounds; ``--rounds`` sets it
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # fine-tuning seeds per round
    select_split: str = "val_unseen"  # every best.pt and the round's filtering follower are chosen on it
    threshold: float = 0.5  # keep a synthetic pair when the follower's walk scores nDTW >= threshold
    paths_per_round: int = 30_000  # paths the speaker labels each round
    new_houses_per_round: int = 30  # fresh generated houses per round (0 on real R2R data)
    split_prefix: str = "flywheel"  # the round's splits are R2R_<prefix>_r<k>[_kept|_speaker].json
    # A vln-ablation work directory whose arm (c) -- the PREVALENT recipe with round 0's options -- is
    # round 0 (its speaker, synthetic split, pretraining and c_pretrained-s<seed> runs); "" trains it here.
    round0: str = ""
    features: str = "auto"  # the dataset's features file every stage reads
    threads: int = 0  # torch threads per stage (0: PyTorch's default; side-by-side runs get 1)
    parallel: int = 2  # fine-tuning runs side by side
    filter_envs: int = 256  # instructions walked together by the filter
    # Config overrides (key=value) of each stage, applied after the stage's own config file.
    speaker: list[str] = field(default_factory=list)
    synth: list[str] = field(default_factory=list)
    pretrain: list[str] = field(default_factory=list)
    finetune: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.rounds >= 1, "rounds", ">= 1", self.rounds)
        require(
            len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
            "seeds",
            "distinct, at least one",
            self.seeds,
        )
        require(0.0 <= self.threshold <= 1.0, "threshold", "in [0, 1] (an nDTW)", self.threshold)
        require(self.paths_per_round >= 1, "paths_per_round", ">= 1", self.paths_per_round)
        require(self.new_houses_per_round >= 0, "new_houses_per_round", ">= 0", self.new_houses_per_round)
        require(self.parallel >= 1, "parallel", ">= 1", self.parallel)
        require(self.filter_envs >= 1, "filter_envs", ">= 1", self.filter_envs)
        require(
            bool(self.split_prefix) and self.split_prefix.isidentifier(),
            "split_prefix",
            "a plain name",
            self.split_prefix,
        )
        check_selection_splits(self.select_split, [], owner="flywheel config")


RUNNING = "running"  # stages.json: the time so far of stages that have not finished
STAGE_HEARTBEAT_S = 60.0
stage_clock: Callable[[], float] = time.perf_counter  # a module attribute so tests can drive it


def _load_times(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_times(path: Path, times: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(times, indent=1))


def timed_stage(times_path: Path, name: str, work: Callable[[], tuple[Any, bool]]) -> Any:
    """Run ``work`` (which returns its result and whether it did any work) and record its wall time
    under ``name`` in ``times_path`` when it did.

    A stage killed part-way (a run spans sessions) keeps its time so far: it is saved every
    :data:`STAGE_HEARTBEAT_S` seconds under ``"running"``, and the resumed stage adds to it, so the
    recorded time is the whole stage's, not its last stretch's.
    """
    times = _load_times(times_path)
    spent = times.get(RUNNING, {}).get(name, 0.0)
    began = stage_clock()
    stop = threading.Event()

    def save_progress() -> None:
        while not stop.wait(STAGE_HEARTBEAT_S):
            times.setdefault(RUNNING, {})[name] = spent + stage_clock() - began
            _save_times(times_path, times)

    heartbeat = threading.Thread(target=save_progress, name=f"stage-time-{name}", daemon=True)
    heartbeat.start()
    try:
        result, did_work = work()
    finally:
        stop.set()
        heartbeat.join()
    running = times.pop(RUNNING, {})
    running.pop(name, None)
    if running:
        times[RUNNING] = running
    if did_work or spent:  # spent alone: the work finished in an earlier stretch, killed before this record
        times[name] = spent + stage_clock() - began
        _save_times(times_path, times)
    return result


def log(message: str) -> None:
    print(f"[flywheel] {message}", file=sys.stderr, flush=True)


class RoundPlan(Plan):
    """The stages' plan of one round: its stages read ``training_split`` as their synthetic data."""

    def __init__(self, round_index: int, training_split: str, **plan: Any) -> None:
        super().__init__(**plan)
        self.round = round_index
        self.training_split = training_split

    @property
    def synthetic(self) -> str:  # what pretraining reads beside human train
        return self.training_split


@dataclass
class Round:
    """One round's names and directories.

    Its models (``speaker/``, ``pretrain/``, ``<follower_name>-s<seed>/``) live under ``plan.work``; its
    records (``stages.json``, ``filter.json``, ``metrics.json``) under ``dir``. The two differ only for
    a round 0 adopted from a vln-ablation run (``round0=``), whose models stay where they are.
    """

    index: int
    plan: RoundPlan
    labelled: str  # synthetic split the previous speaker labels
    kept: str  # ... after filtering (round 0: not filtered, same as labelled)
    speaker_split: str  # the speaker's training split
    dir: Path
    follower_name: str = "follower"

    @property
    def adopted(self) -> bool:
        """Whether the round's models come from a vln-ablation run (``round0=``)."""
        return self.plan.work != self.dir

    def follower_runs(self) -> list[Path]:
        return [self.plan.work / f"{self.follower_name}-s{seed}" for seed in self.plan.seeds]


class Flywheel:
    """Runs (or resumes) the rounds of one flywheel run directory; see the module docstring."""

    def __init__(self, config: FlywheelConfig, quick: bool = False) -> None:
        self.config = config
        self.quick = quick
        self.data = Path(config.data_dir)
        self.run = Path(config.run_dir)
        self.dataset = NavDataset(self.data)
        self.features = self.dataset.resolve_features(config.features)
        # Hooks run after each stage (tests use them to stop a run between stages).
        self.after_stage: list[Callable[[int, str], None]] = []

    # -- layout -------------------------------------------------------------------------------------
    def round(self, k: int) -> Round:
        c, prefix = self.config, f"{self.config.split_prefix}_r{k}"
        kept = prefix if k == 0 else f"{prefix}_kept"
        work, follower_name = self.run / f"round_{k}", "follower"
        if k == 0 and c.round0:
            work, follower_name = Path(c.round0), ADOPTED_FOLLOWER
            prefix = kept = adopted_split(work)
        plan = RoundPlan(
            k,
            kept,
            data=self.data,
            work=work,
            seeds=list(c.seeds),
            features=self.features,
            quick=self.quick,
            threads=c.threads,
            parallel=c.parallel,
            select=c.select_split,
            throughput=False,
            overrides={"speaker": list(c.speaker), "synth": list(c.synth), "pretrain": list(c.pretrain),
                       "finetune": list(c.finetune)},
            name="flywheel",
        )  # fmt: skip
        speaker_split = "train" if k == 0 else f"{prefix}_speaker"
        return Round(k, plan, prefix, kept, speaker_split, self.run / f"round_{k}", follower_name)

    # -- stages -------------------------------------------------------------------------------------
    def _stage(self, r: Round, name: str, work: Callable[[], tuple[Any, bool]]) -> Any:
        """Run one stage, its wall time recorded in ``stages.json`` (see :func:`timed_stage`)."""
        result = timed_stage(r.dir / "stages.json", name, work)
        for hook in self.after_stage:
            hook(r.index, name)
        return result

    def label(self, r: Round, speaker: Path) -> tuple[SynthesisConfig, bool]:
        c = self.config
        extra = [
            f"split_name={r.labelled}", f"paths={c.paths_per_round}", f"new_houses={c.new_houses_per_round}",
            f"seed={r.index}", f"house_seed={r.index}", f"path_id_offset={(r.index + 1) * ROUND_ID_STRIDE}",
        ]  # fmt: skip
        config = load_config(
            SynthesisConfig, ROOT / "configs" / "vln_synthesize.yaml", r.plan.stage("synth", *extra)
        )
        if split_file(self.data, r.labelled).is_file():
            check_synthesis_options(r.plan, config)
            return config, False
        log(f"round {r.index}: labelling {c.paths_per_round} paths with {speaker}")
        synthesize(self.data, speaker, config, show_progress=not self.quick)
        self.dataset = NavDataset(self.data)  # new houses changed scans.txt
        return config, True

    def filter(self, r: Round, follower: Path) -> tuple[FilterReport, bool]:
        existed = split_file(self.data, r.kept).is_file()
        if not existed:
            log(
                f"round {r.index}: the round-{r.index - 1} follower walks every instruction of {r.labelled!r}"
            )
        report = filter_split(
            self.data, r.labelled, r.kept, follower, self.config.threshold, num_envs=self.config.filter_envs
        )
        if not report.kept.pairs:
            raise ValueError(
                f"round {r.index}: no synthetic pair of {r.labelled!r} reaches nDTW {self.config.threshold}: "
                "lower threshold=<value> or label more paths (paths_per_round=)"
            )
        summary = {k: v for k, v in report.record().items() if k != "scores"}
        summary.update(pairs=report.pairs, kept_fraction=report.kept_fraction)
        (r.dir / "filter.json").write_text(json.dumps(summary, indent=1))
        log(report.table())
        return report, not existed

    def speaker_split(self, r: Round) -> tuple[str, bool]:
        """Human train + the round's kept pairs, as one split the speaker trains on."""
        out = split_file(self.data, r.speaker_split)
        if out.is_file():
            return r.speaker_split, False
        episodes = [*self.dataset.episodes("train"), *NavDataset(self.data).episodes(r.kept)]
        tmp = out.with_name(out.name + ".tmp")
        write_r2r(tmp, episodes)
        tmp.replace(out)
        return r.speaker_split, True

    def train_speaker(self, r: Round) -> tuple[Path, bool]:
        extra = ["name=speaker", f"data.train_split={r.speaker_split}"]
        config = load_config(
            SpeakerTrainConfig, ROOT / "configs" / "vln_speaker.yaml", r.plan.stage("speaker", *extra)
        )
        run_dir = r.plan.work / "speaker"
        if r.adopted:
            check_adopted_config(run_dir, SpeakerTrainConfig, config)
        if run_finished(run_dir, config.iterations) and (run_dir / "best.pt").is_file():
            return run_dir, False
        log(f"round {r.index}: training the speaker on {r.speaker_split!r}")
        trainer = SpeakerTrainer(config, run_dir)
        train_run(trainer, resume=trainer.checkpoints.latest() is not None)
        trainer.vocab.save(run_dir / VOCAB_FILE)
        return run_dir, True

    def followers(self, r: Round) -> tuple[list[Path], bool]:
        if r.adopted:
            check_adopted_config(r.plan.work / "pretrain", PretrainConfig, pretrain_config(r.plan))
        pretrained, seconds = pretrain(r.plan)  # reused when finished (samples/s is NaN then)
        before = [(run / "best.pt").is_file() for run in r.follower_runs()]
        with ThreadPoolExecutor(max_workers=r.plan.parallel) as pool:
            runs = list(
                pool.map(lambda seed: finetune(r.plan, r.follower_name, seed, pretrained), r.plan.seeds)
            )
        return runs, not (all(before) and np.isnan(seconds))

    # -- the rounds ---------------------------------------------------------------------------------
    def run_round(self, k: int) -> dict[str, Any]:
        r = self.round(k)
        check_stages(r.plan)
        r.dir.mkdir(parents=True, exist_ok=True)
        labelled = kept = 0
        if k == 0:  # PREVALENT: speaker on human train, then it labels paths
            speaker = self._stage(r, "speaker", lambda: self.train_speaker(r))
            self._stage(r, "label", lambda: self.label(r, speaker))
            labelled = kept = sum(len(ep.instructions) for ep in NavDataset(self.data).episodes(r.labelled))
        else:
            previous = self.round(k - 1)
            self._stage(r, "label", lambda: self.label(r, previous.plan.work / "speaker"))
            follower = self.best_follower(previous)
            report = self._stage(r, "filter", lambda: self.filter(r, follower))
            labelled, kept = report.pairs, report.kept.pairs
            self._stage(r, "speaker_split", lambda: self.speaker_split(r))
            self._stage(r, "speaker", lambda: self.train_speaker(r))
        runs = self._stage(r, "follower", lambda: self.followers(r))
        scores = self._stage(r, "evaluate", lambda: self.evaluate(r, runs))
        metrics = {
            "round": k,
            "labelled": labelled,
            "kept": kept,
            "splits": summarize_seeds(scores, r.plan.seeds),
            "speaker_bleu4": self.speaker_bleu(r),
            "seconds": stage_seconds(r.dir / "stages.json"),
            "follower": str(self.best_follower(r)),
        }
        (r.dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics

    def evaluate(self, r: Round, runs: list[Path]) -> tuple[list[Scores], bool]:
        """Greedy evaluation of every seed's ``best.pt`` on every split (cached beside it)."""
        cached = all((run / "ablation_eval.json").is_file() for run in runs)
        return [evaluate(r.plan, run) for run in runs], not cached

    def best_follower(self, r: Round) -> Path:
        """The round's fine-tuning run with the best SPL on the selection split (never test)."""
        runs = r.follower_runs()
        spl = [evaluate(r.plan, run)[r.plan.select]["spl"] for run in runs]
        return runs[int(np.argmax(spl))] / "best.pt"

    def speaker_bleu(self, r: Round) -> dict[str, float]:
        """BLEU-4 of the round's speaker on each split (greedy decodes; cached in ``speaker_eval.json``)."""
        cache = r.plan.work / "speaker" / "speaker_eval.json"
        if cache.is_file():
            return {k: float(v) for k, v in json.loads(cache.read_text()).items()}
        bundle = load_speaker(r.plan.work / "speaker" / "best.pt")
        bleu = {}
        for split in SPLITS:
            episodes = self.dataset.episodes(split)
            featurizer = PathFeaturizer.from_dataset(
                self.dataset,
                sorted({ep.scan for ep in episodes}),
                bundle.features,
                "cpu",
                bundle.angle_feature_size,
            )
            data = InstructionSet.build(episodes, featurizer, bundle.vocab, bundle.max_instruction_len)
            bleu[split] = evaluate_speaker(bundle.model, featurizer, data, bundle.vocab, split).bleu.bleu[3]
        cache.write_text(json.dumps(bleu))
        return bleu

    def run_all(self) -> list[dict[str, Any]]:
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "flywheel.yaml").write_text(json.dumps(to_dict(self.config), indent=1))
        results = [self.run_round(k) for k in range(self.config.rounds)]
        log_rounds(self.run, results)
        return results


def adopted_split(work: Path) -> str:
    """The synthetic split a vln-ablation run pretrained on (its arm (c)), read from its pretraining config."""
    config_file = work / "pretrain" / "config.yaml"
    if not config_file.is_file():
        raise ValueError(
            f"round0={work}: no pretraining run there ({config_file} is missing); give a vln-ablation "
            "work directory whose pretraining has started, or round0='' to train round 0 here"
        )
    sources = load_config(PretrainConfig, config_file).data.optional_sources
    if len(sources) != 1:
        raise ValueError(f"round0={work}: its pretraining read {sources}, expected one synthetic split")
    return sources[0]


# Settings that change where or how fast a run goes, not what it learns.
_RUNTIME_KEYS = {"device", "torch_threads", "runs_dir", "data_dir", "name"}


def _dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_adopted_config(run_dir: Path, schema: type, expected: Any) -> None:
    """Refuse an adopted round-0 stage trained with other settings than this round 0 would use."""
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return  # not started yet: it will be trained with ``expected``
    recorded, asked = _dotted(to_dict(load_config(schema, config_file))), _dotted(to_dict(expected))
    differ = sorted(
        f"{key}={recorded.get(key)!r} (round 0: {asked.get(key)!r})"
        for key in asked.keys() | recorded.keys()
        if key not in _RUNTIME_KEYS and recorded.get(key) != asked.get(key)
    )
    if differ:
        raise ValueError(f"round0: {run_dir} was trained with {', '.join(differ)}")


def stage_seconds(times_path: Path) -> dict[str, float]:
    """The finished stages' wall times recorded in ``times_path`` (none when it does not exist)."""
    return {stage: seconds for stage, seconds in _load_times(times_path).items() if stage != RUNNING}


def summarize_seeds(scores: list[Scores], seeds: list[int]) -> dict[str, Any]:
    """Per split and metric (in %): mean, sample std and 95% bootstrap interval of the mean over seeds;
    ``"seeds"``: each seed's test SR (for gains between rounds)."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        row: dict[str, float] = {}
        for metric in METRICS:
            values = [100.0 * s[split][metric] for s in scores]
            mean, std = mean_std(values)
            # The difference with a constant-zero arm: the bootstrap interval of this arm's mean.
            interval = bootstrap_mean_difference(values, [0.0])
            row.update({metric: mean, f"{metric}_std": std, f"{metric}_low": interval.low,
                        f"{metric}_high": interval.high})  # fmt: skip
        out[split] = row
    out["seeds"] = {str(s): 100.0 * sc[HELD_OUT_SPLIT]["sr"] for s, sc in zip(seeds, scores, strict=True)}
    return out


def gain_over_round0(
    results: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES
) -> dict[int, Interval]:
    """Test SR of each later round minus round 0's, with its stratified-bootstrap 95% interval."""
    base = list(results[0]["splits"]["seeds"].values())
    return {
        m["round"]: bootstrap_mean_difference(list(m["splits"]["seeds"].values()), base, resamples=resamples)
        for m in results[1:]
    }


def log_rounds(run: Path, results: list[dict[str, Any]]) -> None:
    """Every round's figures to TensorBoard under ``run``, the round as the step (rewritten each time)."""
    logger = RunLogger(run, purge_step=0)
    try:
        for m in results:
            k = m["round"]
            for split in SPLITS:
                logger.scalars({f"flywheel/{split}/{x}": m["splits"][split][x] for x in METRICS}, k)
                logger.scalar(f"flywheel/{split}/speaker_bleu4", m["speaker_bleu4"][split], k)
            logger.scalars({"flywheel/data/labelled": m["labelled"], "flywheel/data/kept": m["kept"]}, k)
            logger.scalars({f"flywheel/seconds/{s}": v for s, v in m["seconds"].items()}, k)
    finally:
        logger.close()


def table(results: list[dict[str, Any]]) -> str:
    """One row per round: data, test (the headline) and val_unseen SR/SPL/nDTW (mean ± std over seeds,
    in %), speaker BLEU-4 on test; then each round's test SR gain over round 0 with its 95% interval."""
    head = f"{'round':>5} {'labelled':>9} {'kept':>7}"
    head += "".join(
        f" {split + ' ' + x.upper():>17}" for split in (HELD_OUT_SPLIT, "val_unseen") for x in METRICS
    )
    lines = [head + f" {'BLEU-4 test':>11}"]
    for m in results:
        row = f"{m['round']:>5} {m['labelled']:>9} {m['kept']:>7}"
        for split in (HELD_OUT_SPLIT, "val_unseen"):
            s = m["splits"][split]
            row += "".join(f" {s[x]:>9.1f} ± {s[x + '_std']:>5.1f}" for x in METRICS)
        lines.append(row + f" {m['speaker_bleu4'][HELD_OUT_SPLIT]:>11.4f}")
    for k, gain in gain_over_round0(results).items():
        lines.append(
            f"round {k} - round 0, test SR: {gain.mean:+.1f} points, 95% CI [{gain.low:+.1f}, {gain.high:+.1f}]"
            f"{'' if gain.excludes_zero else ' (includes zero: no gain claimed)'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Speaker-follower flywheel: label, filter, retrain, round after round.",
        epilog=config_epilog(FlywheelConfig, "configs/vln_flywheel.yaml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="navigation dataset directory")
    parser.add_argument("--rounds", type=int, help="number of rounds (round 0 = the PREVALENT recipe)")
    parser.add_argument("--run", type=Path, help="run directory (default runs/flywheel)")
    parser.add_argument(
        "--config", type=Path, default=CONFIG, help="YAML config (default configs/vln_flywheel.yaml)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets for every stage: a smoke test")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    overrides = [f"data_dir={args.data}", *args.overrides]
    if args.rounds is not None:
        overrides.append(f"rounds={args.rounds}")
    if args.run is not None:
        overrides.append(f"run_dir={args.run}")
    config = load_config(FlywheelConfig, args.config, overrides)
    if len(config.seeds) < 3:
        log(f"{len(config.seeds)} fine-tuning seed(s) per round: comparisons between rounds need at least 3")
    results = Flywheel(config, quick=args.quick).run_all()
    print(table(results))
    print(f"rounds in {config.run_dir}/round_<k>/; watch them: {tensorboard_command(config.run_dir)}")
    return 0


if __name__ == "__main__":
    run_main(main)
