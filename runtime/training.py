"""What every iteration-counted training run shares: set-up, stop signals and the loop around the update.

A trainer (speaker, pretraining, fine-tuning) owns its data, model, update, evaluation and checkpoint
contents. What is the same for all of them lives here, once:

- :class:`IterationTrainer` ``__init__``: refuse a missing dataset directory, cap torch's threads,
  pick the device, seed every generator and set up the run's checkpoint directory;
- :func:`stop_on_signals`: Ctrl-C / SIGTERM ask the run to stop after the current update, so that
  the checkpoint written on the way out is consistent;
- :meth:`IterationTrainer.train`: the loop with its periodic log / evaluation / checkpoint, the
  last evaluation, the final (or interrupted) checkpoint and the run's TensorBoard logger;
- :func:`train_run`: what a training script does with a trainer (resume, train, close).
"""

from __future__ import annotations

import math
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from lodestar.runtime.checkpoint import CheckpointManager, check_config_matches
from lodestar.runtime.config import save_config, to_dict, to_yaml
from lodestar.runtime.device import resolve_device
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.progress import progress
from lodestar.runtime.seeding import seed_everything

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunConfig(Protocol):
    """The fields every iteration-counted training config has (each trainer's dataclass schema)."""

    data_dir: str
    seed: int
    device: str
    torch_threads: int
    iterations: int
    log_every: int
    eval_every: int  # 0: no evaluation
    checkpoint_every: int  # 0: only the final checkpoint
    keep_checkpoints: int


@dataclass(kw_only=True)
class RunResult:
    """What every training run reports; each trainer extends it with its own figures."""

    run_dir: Path
    iterations: int
    interrupted: bool = False


@dataclass(frozen=True)
class Span:
    """A stretch of a run: each metric's mean over it, the iterations it took and its wall time."""

    means: dict[str, float]
    iterations: int
    seconds: float

    def per_second(self, count: float) -> float:
        """``count`` things done during the span as a rate (a zero-length span does not divide by 0)."""
        return count / max(self.seconds, 1e-9)


class MetricWindow:
    """Sums the metrics of each update between two logs.

    Means are per key, over the updates that reported it: some losses only start later (e.g. DAgger's
    once its store is full enough).
    """

    def __init__(self, iteration: int) -> None:
        self._open(time.perf_counter(), iteration)

    def _open(self, now: float, iteration: int) -> None:
        self._started, self._start_iteration = now, iteration
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1

    def close(self, iteration: int) -> Span:
        """The span since the window opened; the next one starts now, at ``iteration``."""
        now = time.perf_counter()
        means = {key: total / self._counts[key] for key, total in self._sums.items()}
        span = Span(means, iteration - self._start_iteration, now - self._started)
        self._open(now, iteration)
        return span


SignalHandler = Callable[[int, FrameType | None], Any]


@contextmanager
def stop_on_signals(handler: SignalHandler) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` inside the block, then put the previous handlers back."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def due(iteration: int, every: int) -> bool:
    """Whether a periodic task (log, evaluation, checkpoint) runs at ``iteration``; ``every <= 0``: never."""
    return every > 0 and iteration % every == 0


C = TypeVar("C", bound=RunConfig)
R = TypeVar("R", bound=RunResult)


class IterationTrainer(ABC, Generic[C, R]):
    """One training run counted in iterations, under ``run_dir``: the shared set-up and loop.

    Subclasses call ``super().__init__`` first, then build their data and model, and implement the
    update (:meth:`train_step`) and what the loop calls around it: :meth:`log_progress`,
    :meth:`scheduled_evaluation`, :meth:`save_checkpoint`, :meth:`restore` and :meth:`make_result`.
    Under ``torchrun`` they override :attr:`is_main`: the loop calls every hook on every process
    (hooks may be collectives) and only process 0 logs, shows progress and prints.
    """

    progress_label: ClassVar[str] = "train"

    def __init__(self, config: C, run_dir: str | Path) -> None:
        if not config.data_dir:
            raise ValueError("no dataset directory: pass --data <dir> (or data_dir=<dir>)")
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", config.keep_checkpoints)
        self.iteration = 0
        self.stop_requested = False

    # -- what each trainer provides ---------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows progress and prints (process 0 under ``torchrun``)."""
        return True

    @abstractmethod
    def train_step(self) -> dict[str, float]:
        """One update; advances ``iteration`` and returns its metrics (``"loss"`` among them)."""

    @abstractmethod
    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        """Every ``log_every`` iterations: log the window's training metrics (``logger`` is None off process 0)."""

    @abstractmethod
    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        """The evaluation run every ``eval_every`` iterations and once at the end."""

    @abstractmethod
    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of everything needed to resume; its path (on process 0)."""

    @abstractmethod
    def restore(self, checkpoint: str | Path | None = None) -> None:
        """Continue from the newest (or given) checkpoint of this run."""

    @abstractmethod
    def make_result(self, loop: Span) -> R:
        """The run's result, given the span of this call's loop (for throughput figures)."""

    def run_notes(self) -> dict[str, str]:
        """Extra text summaries (tag -> markdown) logged with the config when a run starts."""
        return {}

    def before_loop(self, logger: RunLogger | None) -> None:
        """Called on every process once the stop signals are routed, just before the first update."""

    def close(self) -> None:
        """Release what the run holds beyond its lifetime (e.g. the ``torchrun`` process group)."""

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> R:
        """Train up to ``config.iterations`` or a stop signal, then evaluate, checkpoint and report."""
        c = self.config
        logger = self._open_logger() if self.is_main else None
        bar = (
            progress(total=c.iterations, initial=self.iteration, desc=self.progress_label, unit="it")
            if self.is_main
            else None
        )
        try:
            with stop_on_signals(self._request_stop):
                self.before_loop(logger)
                loop = self._loop(logger, bar)
        finally:
            if bar is not None:
                bar.close()
        if c.eval_every > 0 and not self.stop_requested and self.iteration % c.eval_every != 0:
            self.scheduled_evaluation(logger)
        path = self.save_checkpoint()
        if self.stop_requested and self.is_main:
            print(f"interrupted at iteration {self.iteration}; checkpoint written to {path}", flush=True)
        if logger is not None:
            logger.close()
        return self.make_result(loop)

    def _loop(self, logger: RunLogger | None, bar: tqdm | None) -> Span:
        c = self.config
        started, start_iteration = time.perf_counter(), self.iteration
        window = MetricWindow(self.iteration)
        while self.iteration < c.iterations and not self.stop_requested:
            window.add(self.train_step())
            if bar is not None:
                bar.update()
            if due(self.iteration, c.log_every):
                span = window.close(self.iteration)
                self.log_progress(logger, span)
                if bar is not None:
                    bar.set_postfix(loss=f"{span.means.get('loss', math.nan):.3f}")
            if due(self.iteration, c.eval_every):
                self.scheduled_evaluation(logger)
            if due(self.iteration, c.checkpoint_every):
                self.save_checkpoint()
        return Span({}, self.iteration - start_iteration, time.perf_counter() - started)

    def _open_logger(self) -> RunLogger:
        """The run's TensorBoard logger; the config is saved beside it and logged when the run starts."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")
        logger = RunLogger(self.run_dir, purge_step=self.iteration or None)
        if self.iteration == 0:
            logger.text("config", "```\n" + to_yaml(self.config) + "```", 0)
            for tag, text in self.run_notes().items():
                logger.text(tag, text, 0)
        return logger

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        # Finish the current update so that the checkpoint is consistent, then stop.
        self.stop_requested = True

    # -- helpers for the subclasses ---------------------------------------------------------------
    def check_finite(self, what: str, value: float) -> None:
        """Raise :class:`TrainingDiverged` if ``value`` (named ``what``) is NaN or infinite.

        Call it before the optimizer step: the run stops without saving, so the last checkpoint on
        disk is the last good one.
        """
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{what} became {value} at iteration {self.iteration}; stopped without saving: "
                f"the last good checkpoint in {self.checkpoints.directory} is kept"
            )

    def load_checkpoint(
        self,
        checkpoint: str | Path | None,
        architecture_keys: list[str],
        map_location: str | torch.device = "cpu",
    ) -> tuple[dict[str, Any], str]:
        """The newest (or given) checkpoint of this run and its name for messages.

        Refused when its config differs from this run's on ``architecture_keys``.
        """
        state = self.checkpoints.load(checkpoint, map_location=map_location)
        source = str(checkpoint or self.checkpoints.latest())
        check_config_matches(state["config"], to_dict(self.config), architecture_keys, source)
        return state, source


def train_run(trainer: IterationTrainer[Any, R], resume: bool) -> R:
    """Train ``trainer`` to the end (after restoring its newest checkpoint when ``resume``), then close it."""
    try:
        if resume:
            trainer.restore()
            if trainer.is_main:
                print(f"resumed {trainer.run_dir} at iteration {trainer.iteration}", flush=True)
        return trainer.train()
    finally:
        trainer.close()
