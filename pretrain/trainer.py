"""Pretraining loop, single-process or data-parallel (``torchrun``), readable top to bottom.

Every iteration takes one *global* batch of ``batch_size`` triplets: the ``DistributedSampler``
order of the epoch (seeded, identical on every rank) is cut into consecutive global batches, rank
``r`` takes every ``W``-th triplet of each, and ``DistributedDataParallel`` averages the gradients.
Losses are per-sample sums divided by the local batch size, so ``W`` processes make the same
update as one process with the same global batch (tested). Only full global batches are used, so
every epoch has ``len(data) // batch_size`` iterations whatever ``W`` is.

Rank 0 logs to TensorBoard, evaluates (MLM and action accuracy on the evaluation splits) and writes
checkpoints; every checkpoint holds the follower as a self-contained bundle (``"follower"`` key) for
fine-tuning. Resume restores parameters, optimizer, schedule, iteration and every rank's RNG state.
The loop around the update (periodic log, evaluation and checkpoint; Ctrl-C) is the one every
trainer shares, :class:`lodestar.runtime.training.IterationTrainer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from lodestar.agents.vln.distributed import init_distributed
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset, console_warning
from lodestar.pretrain.datasets import MaskingConfig, TripletDataset, load_episode_sources
from lodestar.pretrain.objectives import ObjectiveConfig, PretrainModel
from lodestar.runtime.checkpoint import restore_module
from lodestar.runtime.config import to_dict
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.protocol import check_selection_splits
from lodestar.runtime.seeding import rng_state, seed_everything, set_rng_state
from lodestar.runtime.training import IterationTrainer, RunResult, Span
from lodestar.runtime.training import TrainingDiverged as TrainingDiverged  # callers catch it from here


@dataclass
class PretrainDataConfig:
    """Where the triplets come from and how routes are featurized."""

    features: str = "auto"  # <data>/features/<name>.hdf5 (or .tsv); "auto": the only features file there
    angle_feature_size: int = 32
    max_instruction_len: int = 80
    # Split names of the dataset (R2R_<name>.json) or paths to R2R JSON files.
    sources: list[str] = field(default_factory=lambda: ["train"])
    # Used when present (e.g. the speaker's R2R_synthetic.json); a missing one is reported, not an error.
    optional_sources: list[str] = field(default_factory=lambda: ["synthetic"])
    eval_splits: list[str] = field(default_factory=lambda: ["val_seen", "val_unseen"])
    eval_max_paths: int = 200  # per evaluation split; 0 = all
    feature_dtype: Literal["float32", "float16"] = "float16"


@dataclass
class PretrainConfig:
    """The typed schema of ``configs/vln_pretrain.yaml``."""

    name: str | None = None
    data_dir: str = ""
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 0
    runs_dir: str = "runs"
    iterations: int = 3000
    batch_size: int = 64  # global: split evenly over data-parallel ranks
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 200
    lr_schedule: Literal["constant", "linear"] = "linear"
    grad_clip: float = 2.0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: FollowerConfig = field(default_factory=FollowerConfig)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.model.max_instruction_len < self.data.max_instruction_len:
            raise ValueError(
                f"model.max_instruction_len ({self.model.max_instruction_len}) must be >= "
                f"data.max_instruction_len ({self.data.max_instruction_len})"
            )
        # Pretraining selects nothing (fine-tuning starts from its last checkpoint); its evaluation
        # splits are only logged, and the reported split is not among them.
        check_selection_splits(None, self.data.eval_splits, owner="pretraining config")


ARCHITECTURE_KEYS = [
    "data.features",
    "data.angle_feature_size",
    "data.max_instruction_len",
    "model.hidden_dim",
    "model.num_heads",
    "model.ffn_dim",
    "model.text_layers",
    "model.cross_layers",
    "model.pano",
    "model.max_instruction_len",
    "objectives.mlm_layers",
    "objectives.max_route_steps",
]


@dataclass(kw_only=True)
class PretrainResult(RunResult):
    last_metrics: dict[str, float]
    samples_per_second: float


class PretrainTrainer(IterationTrainer[PretrainConfig, PretrainResult]):
    """Owns one pretraining run (one process of it under ``torchrun``)."""

    progress_label = "pretrain"

    def __init__(self, config: PretrainConfig, run_dir: str | Path) -> None:
        super().__init__(config, run_dir)
        c = config
        self.dist, device = init_distributed(self.device)
        self.device = device
        if c.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch_size ({c.batch_size}) must be divisible by the number of processes ({self.dist.world_size})"
            )
        self.local_batch = c.batch_size // self.dist.world_size

        self.dataset = NavDataset(c.data_dir)
        # "auto" becomes the file it stands for, so the saved config and the follower file name it.
        c.data.features = self.dataset.resolve_features(c.data.features)
        self.vocab = self.dataset.vocab()
        sources = load_episode_sources(self.dataset, c.data.sources)
        self.skipped_sources = []
        for source in c.data.optional_sources:
            try:
                sources.update(load_episode_sources(self.dataset, [source]))
            except FileNotFoundError as exc:
                self.skipped_sources.append(source)
                if self.dist.is_main:  # on the console, not only in the run's TensorBoard notes
                    console_warning(
                        f"{exc}; pretraining goes on without the optional source {source!r} "
                        "(scripts/synthesize.py writes synthetic splits)"
                    )
        evals = {s: self.dataset.episodes(s) for s in c.data.eval_splits}
        if c.data.eval_max_paths > 0:
            evals = {s: eps[: c.data.eval_max_paths] for s, eps in evals.items()}
        scans = sorted({ep.scan for eps in [*sources.values(), *evals.values()] for ep in eps})
        self.featurizer = PathFeaturizer.from_dataset(
            self.dataset,
            scans,
            c.data.features,
            device,
            c.data.angle_feature_size,
            getattr(torch, c.data.feature_dtype),
        )
        self.source_sizes = {name: len(eps) for name, eps in sources.items()}
        episodes = [ep for eps in sources.values() for ep in eps]
        self.data = TripletDataset(
            self.featurizer, episodes, self.vocab, c.data.max_instruction_len, c.masking, c.seed
        )
        self.eval_data = {
            s: TripletDataset(
                self.featurizer, eps, self.vocab, c.data.max_instruction_len, c.masking, c.seed + 1
            )
            for s, eps in evals.items()
            if eps
        }
        self.steps_per_epoch = len(self.data) // c.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size {c.batch_size} exceeds the {len(self.data)} pretraining triplets")

        follower = Follower(
            len(self.vocab), self.featurizer.visual_dim, c.data.angle_feature_size, c.model, self.vocab.pad_id
        )
        self.model = PretrainModel(follower, c.objectives).to(device)
        # Parameters are identical on every rank (same seed); dropout draws differ per rank.
        seed_everything(c.seed + self.dist.rank)
        self.ddp = (
            DistributedDataParallel(
                self.model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
            if self.dist.enabled
            else None
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.sampler: DistributedSampler[int] = DistributedSampler(
            # The sampler only takes len() of its dataset; torch annotates that argument as a Dataset.
            range(len(self.data)),  # type: ignore[arg-type]
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=c.seed,
        )
        self._epoch_order: tuple[int, torch.Tensor] | None = None
        self.last_metrics: dict[str, float] = {}

    @property
    def follower(self) -> Follower:
        return self.model.follower

    def _lr_factor(self, step: int) -> float:
        c = self.config
        warm = min(1.0, (step + 1) / c.warmup) if c.warmup > 0 else 1.0
        if c.lr_schedule == "linear":
            return warm * max(0.0, 1.0 - step / c.iterations)
        return warm

    # -- data -------------------------------------------------------------------------------------
    def local_indices(self, iteration: int) -> tuple[torch.Tensor, int]:
        """This rank's triplet indices for ``iteration`` and the epoch they belong to."""
        epoch, position = divmod(iteration, self.steps_per_epoch)
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._epoch_order = (epoch, torch.tensor(list(iter(self.sampler)), dtype=torch.int64))
        order = self._epoch_order[1]
        start = position * self.local_batch
        return order[start : start + self.local_batch], epoch

    # -- one update -------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        indices, epoch = self.local_indices(self.iteration)
        batch = self.data.batch(indices, epoch)
        self.model.train()
        out = (self.ddp or self.model)(batch)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        stats = torch.stack([v.detach().float() for v in out.values()])
        stop = torch.tensor([float(self.stop_requested)], device=stats.device)
        stats = self.dist.all_reduce_mean(torch.cat([stats, stop]))
        metrics = dict(zip(out.keys(), stats[:-1].tolist(), strict=True))
        # Every rank sees the same reduced loss and stop flag, so they all stop at the same iteration.
        self.stop_requested = bool(stats[-1] > 0)  # mean > 0: some process was asked to stop
        for what in ("loss", "grad_norm"):
            self.check_finite(f"pretraining {what}", metrics[what])
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return metrics

    # -- what the shared loop calls (runtime.training) ---------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def run_notes(self) -> dict[str, str]:
        return {"data": self._data_summary()}

    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        self.last_metrics = dict(span.means)
        if logger is not None:
            logger.scalars({f"train/{k}": v for k, v in span.means.items()}, self.iteration)
            logger.scalars(
                {
                    "perf/samples_per_second": span.per_second(span.iterations * self.config.batch_size),
                    "train/lr": float(self.scheduler.get_last_lr()[0]),
                },
                self.iteration,
            )

    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        self._evaluate_on_main(logger)

    def make_result(self, loop: Span) -> PretrainResult:
        return PretrainResult(
            run_dir=self.run_dir,
            iterations=self.iteration,
            last_metrics=dict(self.last_metrics),
            samples_per_second=loop.per_second(loop.iterations * self.config.batch_size),
            interrupted=self.stop_requested,
        )

    def _data_summary(self) -> str:
        lines = [f"- {name}: {count} paths" for name, count in self.source_sizes.items()]
        lines.append(f"- {len(self.data)} triplets (instructions), {self.data.num_paths} paths")
        lines += [f"- optional source {s!r} not found: not used" for s in self.skipped_sources]
        return "\n".join(lines)

    # -- evaluation -------------------------------------------------------------------------------
    def _evaluate_on_main(self, logger: RunLogger | None) -> None:
        if self.dist.is_main:
            scores = self.evaluate()
            self.last_metrics.update(scores)
            if logger is not None:
                logger.scalars(scores, self.iteration)
                logger.flush()
        self.dist.barrier()

    @torch.no_grad()
    def evaluate(self, batch_size: int = 128) -> dict[str, float]:
        """Masked-word and next-action accuracy (teacher-forced) on every evaluation split."""
        self.model.eval()
        scores: dict[str, float] = {}
        for split, data in self.eval_data.items():
            totals: dict[str, float] = {}
            for start in range(0, len(data), batch_size):
                index = torch.arange(start, min(start + batch_size, len(data)))
                out = self.model(data.batch(index, epoch=0))
                for key, value in out.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * len(index)
            scores.update({f"eval/{split}/{k}": v / len(data) for k, v in totals.items()})
        return scores

    # -- checkpoints ------------------------------------------------------------------------------
    def bundle(self) -> FollowerBundle:
        d = self.config.data
        info = {"stage": "pretrain", "iteration": self.iteration, "config": to_dict(self.config)}
        return FollowerBundle(
            self.follower, self.vocab, d.features, d.angle_feature_size, d.max_instruction_len, info
        )

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes the checkpoint (with every rank's RNG state); returns its path there."""
        self.check_state_finite({"model": self.model.state_dict()})  # on every process: all stop together
        states = self.dist.gather(rng_state())
        path = None
        if self.dist.is_main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "iteration": self.iteration,
                "rng": states,
                "last_metrics": dict(self.last_metrics),
                "follower": self.bundle().state(),
            }
            path = self.write_checkpoint(state)
        self.dist.barrier()
        return path

    def restore(self, checkpoint: str | Path | None = None) -> None:
        """Continue from the newest (or given) checkpoint of this run, on every rank."""
        state, source = self.load_checkpoint(checkpoint, [*ARCHITECTURE_KEYS, "batch_size"], self.device)
        restore_module(self.model, state["model"], "pretraining model", source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.last_metrics = dict(state["last_metrics"])
        states = state["rng"]
        if len(states) == self.dist.world_size:
            set_rng_state(states[self.dist.rank])
        else:  # a different number of processes: dropout draws cannot continue exactly
            seed_everything(self.config.seed + self.dist.rank + self.iteration)
            if self.dist.is_main:
                print(
                    f"note: {source} was written by {len(states)} processes, this run has "
                    f"{self.dist.world_size}: parameters and data order continue exactly, dropout draws do not",
                    flush=True,
                )

    def close(self) -> None:
        self.dist.close()
