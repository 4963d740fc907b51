"""The stages of the navigation pipeline that the vln-ablation and flywheel benchmarks run and reuse.

World and features, speaker, synthetic split, pretraining, fine-tuning runs (each in its own process,
resumed when stopped) and the cached greedy evaluation of a run's ``best.pt``. A :class:`Plan` says
where everything goes and what each stage runs with; every stage reuses what an earlier call finished,
so a benchmark built on them picks up where it stopped. Protocol (DESIGN.md section 9): every
``best.pt`` is chosen on ``Plan.select`` (a validation split), and an evaluated run that was selected
on another split is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.vln_ablation_report import HEADLINE, SPLITS, Scores
from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.agents.vln.follower import load_follower
from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.features import feature_key, write_features_hdf5
from lodestar.envs.nav.eval.failures import CATEGORIES as FAILURES
from lodestar.envs.nav.eval.failures import breakdown
from lodestar.envs.nav.perception.features import build_features
from lodestar.envs.nav.world.build import build_world, make_config
from lodestar.pretrain.synthesis import SynthesisConfig, split_file, store_files, synthesize
from lodestar.pretrain.trainer import PretrainConfig, PretrainTrainer
from lodestar.runtime.config import load_config
from lodestar.runtime.protocol import check_selection_splits
from lodestar.runtime.stats import DEFAULT_RESAMPLES

ROOT = Path(__file__).resolve().parents[2]

# Full run: more speaker-labelled paths than human ones, partly in fresh houses (more environments is
# what scaled ScaleVLN); used only when the dataset has no R2R_synthetic.json yet.
FULL = {"synth": ["paths=30000", "new_houses=30"]}
# --quick: every stage tiny (the whole benchmark in well under a minute of compute).
QUICK_MODEL = [
    "model.hidden_dim=32", "model.num_heads=2", "model.ffn_dim=64", "model.text_layers=1",
    "model.cross_layers=1", "data.angle_feature_size=8",
]  # fmt: skip
QUICK = {
    "speaker": ["iterations=3", "batch_size=8", "eval_every=3", "checkpoint_every=3", "eval_max_paths=8",
                "model.embed_dim=16", "model.hidden_dim=16", "data.angle_feature_size=8"],
    "synth": ["paths=40", "batch_size=64"],
    "pretrain": ["iterations=4", "batch_size=8", "eval_every=0", "checkpoint_every=4", "log_every=2", *QUICK_MODEL],
    "finetune": ["iterations=3", "eval_every=3", "checkpoint_every=3", "log_every=1", "log_episodes=0",
                 "learn.teacher_envs=3", "learn.learner_envs=3", "learn.rollout_steps=5", "dagger.min_episodes=2",
                 "dagger.batch_size=4", "eval_num_envs=32", *QUICK_MODEL],
}  # fmt: skip


@dataclass
class Plan:
    """Where everything goes and what each stage runs with."""

    data: Path
    work: Path
    seeds: list[int]
    features: str
    quick: bool
    threads: int
    parallel: int  # fine-tuning runs at a time
    select: str = "val_unseen"  # the validation split every best.pt is chosen on
    resamples: int = DEFAULT_RESAMPLES
    throughput: bool = True
    overrides: dict[str, list[str]] = field(default_factory=dict)
    name: str = "vln-ablation"  # the benchmark running the stages, in their messages

    def stage(self, name: str, *extra: str) -> list[str]:
        """Config overrides of one stage: location, device, --quick budgets, user overrides, ``extra``."""
        base = ["device=cpu"] + ([f"torch_threads={self.threads}"] if self.threads > 0 else [])
        if name != "synth":  # synthesis takes the dataset as an argument and the speaker's features
            base += [f"data_dir={self.data}", f"runs_dir={self.work}", f"data.features={self.features}"]
        if name in ("speaker", "finetune"):  # the selection split is passed, not left to a config file
            base.append(f"select_split={self.select}")
        budget = QUICK.get(name, []) if self.quick else FULL.get(name, [])
        return [*base, *budget, *self.overrides.get(name, []), *extra]

    def synthesis(self) -> SynthesisConfig:
        return load_config(SynthesisConfig, ROOT / "configs" / "vln_synthesize.yaml", self.stage("synth"))

    @property
    def synthetic(self) -> str:
        """The split (b) trains on and (c) pretrains on."""
        return self.synthesis().split_name


# -- stages -----------------------------------------------------------------------------------------


def log(plan: Plan, message: str) -> None:
    print(f"[{plan.name}] {message}", file=sys.stderr, flush=True)


def ensure_world(plan: Plan) -> None:
    """Build the dataset (``tiny`` for --quick, ``benchmark`` otherwise) and its features when missing."""
    if not (plan.data / "summary.json").is_file() and not (plan.data / "R2R_train.json").is_file():
        preset = "tiny" if plan.quick else "benchmark"
        log(plan, f"building the {preset} world in {plan.data}")
        build_world(make_config(preset), plan.data, show_progress=not plan.quick)
    dataset = NavDataset(plan.data)
    try:
        dataset.feature_path(plan.features)
        return
    except FileNotFoundError:
        pass
    if plan.features == "random":  # --quick: features that cost nothing (they carry no visual meaning)
        rng = np.random.default_rng(0)
        write_features_hdf5(
            plan.data / "features" / "random.hdf5",
            {
                feature_key(scan, vp): rng.standard_normal((36, 16)).astype(np.float32)
                for scan in dataset.scans
                for vp in dataset.graph(scan).viewpoints
            },
        )
    else:
        log(plan, f"rendering the world and building '{plan.features}' features")
        build_features(plan.data, plan.features)


def ensure_synthetic(plan: Plan) -> None:
    """Train the speaker and synthesize the synthetic split unless the dataset already has it."""
    config = plan.synthesis()
    if split_file(plan.data, config.split_name).is_file():
        check_synthesis_options(plan, config)
        return
    speaker_dir = plan.work / "speaker"
    if not (speaker_dir / "best.pt").is_file():
        log(plan, "training the speaker")
        speaker = load_config(
            SpeakerTrainConfig, ROOT / "configs" / "vln_speaker.yaml", plan.stage("speaker", "name=speaker")
        )
        SpeakerTrainer(speaker, speaker_dir).train()
    log(plan, f"synthesizing instructions ({config.decoding} decoding) into split {config.split_name!r}")
    synthesize(plan.data, speaker_dir, config, show_progress=not plan.quick)


def check_synthesis_options(plan: Plan, config: SynthesisConfig) -> None:
    """Refuse a synthetic split made with other options than the ones asked for (it would be mislabelled)."""
    _, meta = store_files(plan.data, config.split_name)
    if not meta.is_file():
        log(
            plan,
            f"reusing split {config.split_name!r}: it has no synthesis record to check the options against",
        )
        return
    recorded = json.loads(meta.read_text(encoding="utf-8")).get("options", {})
    asked = config.plan_options()
    if asked["features"] is None:  # the speaker's own features, which the record holds resolved
        del asked["features"]
    differ = {k: (recorded.get(k), v) for k, v in asked.items() if recorded.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}={old!r} (asked: {new!r})" for k, (old, new) in sorted(differ.items()))
        raise SystemExit(
            f"{plan.name}: {split_file(plan.data, config.split_name)} was synthesized with {detail}; pass "
            "synth.split_name=<new name> to synthesize another split beside it, or delete it"
        )


def check_stages(plan: Plan) -> None:
    """Load every stage's config before anything runs: one that would select on, or evaluate while
    training, the headline split stops the benchmark (as does any bad override)."""
    speaker = load_config(SpeakerTrainConfig, ROOT / "configs" / "vln_speaker.yaml", plan.stage("speaker"))
    finetune = load_config(
        FinetuneConfig, ROOT / "configs" / "vln_finetune.yaml", finetune_overrides(plan, "a_scratch", 0, None)
    )
    stages = {
        "speaker": (speaker.select_split, speaker.data.eval_splits),
        "pretraining": (None, pretrain_config(plan).data.eval_splits),
        "fine-tuning": (finetune.select_split, finetune.data.eval_splits),
    }
    for stage, (select_split, eval_splits) in stages.items():
        try:
            check_selection_splits(
                select_split, eval_splits, reported=(HEADLINE,), owner=f"{plan.name} {stage}"
            )
        except ValueError as exc:
            raise SystemExit(str(exc)) from None


def run_finished(run_dir: Path, iterations: int) -> bool:
    """Whether a training run reached its last checkpoint (``iterations``)."""
    return (run_dir / "checkpoints" / f"ckpt_{iterations:012d}.pt").is_file()


def pretrain_config(plan: Plan) -> PretrainConfig:
    """Condition (c)'s pretraining: human ``train`` + the synthetic split."""
    extra = ["name=pretrain", "data.sources=[train]", f"data.optional_sources=[{plan.synthetic}]"]
    return load_config(PretrainConfig, ROOT / "configs" / "vln_pretrain.yaml", plan.stage("pretrain", *extra))


def pretrain(plan: Plan) -> tuple[Path, float]:
    """The pretrained follower of condition (c) and its samples/s (NaN when reused)."""
    config = pretrain_config(plan)
    run_dir = plan.work / "pretrain"
    if run_finished(run_dir, config.iterations):
        return run_dir, float("nan")
    log(plan, "pretraining on human + synthetic triplets")
    trainer = PretrainTrainer(config, run_dir)
    if trainer.checkpoints.latest() is not None:
        trainer.restore()
    if trainer.skipped_sources:
        raise FileNotFoundError(
            f"no synthetic data for pretraining: {trainer.skipped_sources} missing in {plan.data}"
        )
    result = trainer.train()
    return run_dir, result.samples_per_second


def finetune_overrides(plan: Plan, condition: str, seed: int, init: Path | None) -> list[str]:
    """The config overrides of one fine-tuning run."""
    extra = [f"name={condition}-s{seed}", f"seed={seed}"]
    if plan.parallel > 1 and plan.threads == 0:
        extra.append("torch_threads=1")  # runs side by side: one thread each, not oversubscribing the cores
    if condition == "b_augment":
        extra.append(f"data.augment_split={plan.synthetic}")
    if init is not None:
        extra.append(f"init={init}")
    return plan.stage("finetune", *extra)


def finetune(plan: Plan, condition: str, seed: int, init: Path | None) -> Path:
    """One fine-tuning run in its own process (``scripts/finetune_vln.py``); returns its directory.

    Its output goes to ``<work>/<condition>-s<seed>.log``; a run stopped midway is resumed.
    """
    name = f"{condition}-s{seed}"
    overrides = finetune_overrides(plan, condition, seed, init)
    config = load_config(FinetuneConfig, ROOT / "configs" / "vln_finetune.yaml", overrides)
    run_dir = plan.work / name
    if run_finished(run_dir, config.iterations) and (run_dir / "best.pt").is_file():
        return run_dir
    log(plan, f"fine-tuning {condition} seed {seed} (log: {plan.work / name}.log)")
    script = str(ROOT / "scripts" / "finetune_vln.py")
    if (run_dir / "checkpoints").is_dir():
        command = [sys.executable, script, "--resume", str(run_dir)]
    else:
        command = [
            sys.executable,
            script,
            "--config",
            str(ROOT / "configs" / "vln_finetune.yaml"),
            *overrides,
        ]
    env = {**os.environ, "LODESTAR_NO_PROGRESS": "1"}
    with (plan.work / f"{name}.log").open("a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"fine-tuning {name} failed (exit {done.returncode}): see {plan.work / name}.log")
    return run_dir


def selection_split(selected_by: str | None, run_dir: Path, owner: str) -> str:
    """The split a fine-tuning ``best.pt`` was chosen on, from its ``eval/<split>/<metric>`` record."""
    parts = (selected_by or "").split("/")
    if len(parts) != 3 or parts[0] != "eval":
        raise SystemExit(f"{owner}: {run_dir / 'best.pt'} does not record the split it was selected on")
    return parts[1]


def evaluate(plan: Plan, run_dir: Path) -> Scores:
    """Greedy full-split evaluation of a run's ``best.pt`` on every split of :data:`SPLITS`.

    Per split: the R2R metrics and, under ``failures/<category>``, the failure breakdown of
    :mod:`lodestar.envs.nav.eval.failures` (fractions of the split's episodes). Cached in
    ``<run>/ablation_eval.json`` with the split ``best.pt`` was selected on, which must be
    ``plan.select`` (never the headline split): a run made with another selection is not mixed in.
    """
    cache = run_dir / "ablation_eval.json"
    best = run_dir / "best.pt"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    fresh = cache.is_file() and cache.stat().st_mtime >= best.stat().st_mtime
    complete = all(
        f"failures/{name}" in cached.get("splits", {}).get(split, {}) for split in SPLITS for name in FAILURES
    )
    if fresh and complete:
        selected_by, scores = cached["selected_by"], cached["splits"]
    else:
        bundle = load_follower(best)
        selected_by = bundle.info.get("selected_by")
        dataset = NavDataset(plan.data)
        scores = {}
        for split in SPLITS:
            env = make_eval_env(
                dataset, split, None, 64, bundle.features, bundle.angle_feature_size, bundle.max_instruction_len, "cpu",
            )  # fmt: skip
            evaluation = evaluate_follower(bundle.model, env)
            if evaluation.summary is None:
                raise SystemExit(
                    f"{plan.name}: {plan.data} hides the goals of {split!r}; the benchmark needs them"
                )
            failures = {f"failures/{k}": v for k, v in breakdown(evaluation.categories).items()}
            scores[split] = {**evaluation.summary, **failures}
        cache.write_text(json.dumps({"selected_by": selected_by, "splits": scores}, indent=1))
    chosen_on = selection_split(selected_by, run_dir, plan.name)
    if chosen_on != plan.select:  # a test-selected run, or one made with another select=: never mixed in
        raise SystemExit(
            f"{plan.name}: {best} was selected on {chosen_on!r}, this benchmark selects on {plan.select!r}; "
            "use another work directory"
        )
    return scores
