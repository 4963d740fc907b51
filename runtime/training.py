"""What every training run shares: set-up, stop signals and the loop around the update.

A trainer (DQN, speaker, pretraining, fine-tuning) owns its data, model, update, evaluation and
checkpoint contents. What is the same for all of them lives here, once:

- :class:`Trainer` ``__init__``: cap torch's threads, pick the device, seed every generator and set up
  the run's checkpoint directory (:class:`IterationTrainer` also refuses a missing dataset directory);
- :func:`stop_on_signals`: Ctrl-C / SIGTERM ask the run to stop after the current update, so that
  the checkpoint written on the way out is consistent;
- :meth:`Trainer.train`: the loop with its periodic log / evaluation / checkpoint, the progress bar,
  the last evaluation, the final (or interrupted) checkpoint and the run's TensorBoard logger (run
  directory, ``config.yaml`` and the config as text);
- :func:`train_run`: what a training script does with a trainer (resume, train, close).

The loop counts progress in the trainer's own unit (:attr:`Trainer.progress`, bounds and periods in
its :class:`Schedule`): iterations for the navigation trainers (one per update, :class:`IterationTrainer`),
env steps for DQN (``num_envs`` per loop iteration). A periodic task runs when the counter crosses a
multiple of its period (:func:`due`); for a counter that grows by one that is ``count % every == 0``.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from lodestar.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_config_matches,
    non_finite_entries,
)
from lodestar.runtime.config import ConfigError, save_config, to_dict, to_yaml
from lodestar.runtime.device import resolve_device
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.progress import progress
from lodestar.runtime.run_lock import RunLock
from lodestar.runtime.seeding import seed_everything

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainerConfig(Protocol):
    """The fields every training config has (each trainer's dataclass schema)."""

    seed: int
    device: str
    torch_threads: int
    keep_checkpoints: int


class RunConfig(TrainerConfig, Protocol):
    """The fields of an iteration-counted training config on a navigation dataset."""

    data_dir: str
    iterations: int
    log_every: int
    eval_every: int  # 0: no evaluation
    checkpoint_every: int  # 0: only the final checkpoint


@dataclass(frozen=True)
class Schedule:
    """How far a run goes and how often the loop logs, evaluates and checkpoints, in the trainer's unit."""

    total: int
    log_every: int  # 0: never
    eval_every: int  # 0: no periodic evaluation
    checkpoint_every: int  # 0: only the final checkpoint
    evaluate_at_end: bool  # evaluate once more when the run ends (unless it just did, or was stopped)
    unit: str = "it"  # the progress bar's unit


@dataclass(kw_only=True)
class RunResult:
    """What every iteration-counted training run reports; each trainer extends it with its own figures."""

    run_dir: Path
    iterations: int
    interrupted: bool = False


@dataclass(frozen=True)
class Span:
    """A stretch of a run: each metric's mean over it, the progress it made and its wall time.

    ``iterations`` counts in the loop's unit: iterations, or env steps for a trainer counting those.
    """

    means: dict[str, float]
    iterations: int
    seconds: float

    def per_second(self, count: float) -> float:
        """``count`` things done during the span as a rate (a zero-length span does not divide by 0)."""
        return count / max(self.seconds, 1e-9)


class MetricWindow:
    """Sums the metrics of each update between two logs.

    Means are per key, over the updates that reported it: some losses only start later (e.g. DAgger's
    once its store is full enough, DQN's once learning starts).
    """

    def __init__(self, count: int) -> None:
        self._open(time.perf_counter(), count)

    def _open(self, now: float, count: int) -> None:
        self._started, self._start_count = now, count
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
            self._counts[key] = self._counts.get(key, 0) + 1

    def close(self, count: int) -> Span:
        """The span since the window opened; the next one starts now, at progress ``count``."""
        now = time.perf_counter()
        means = {key: total / self._counts[key] for key, total in self._sums.items()}
        span = Span(means, count - self._start_count, now - self._started)
        self._open(now, count)
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


def due(count: int, every: int, increment: int = 1) -> bool:
    """Whether a periodic task (log, evaluation, checkpoint) runs now that the progress counter went
    from ``count - increment`` to ``count``: it crossed a multiple of ``every``. ``every <= 0``: never."""
    return every > 0 and count // every > (count - increment) // every


C = TypeVar("C", bound=TrainerConfig)
RC = TypeVar("RC", bound=RunConfig)
R = TypeVar("R")
RR = TypeVar("RR", bound=RunResult)


class Trainer(ABC, Generic[C, R]):
    """One training run under ``run_dir``: the shared set-up and loop.

    Subclasses call ``super().__init__`` first, then build their data and model, and implement the
    progress counter (:attr:`progress`, :meth:`schedule`, :meth:`progress_text`), the update
    (:meth:`train_step`) and what the loop calls around it: :meth:`log_progress`,
    :meth:`scheduled_evaluation`, :meth:`save_checkpoint`, :meth:`restore` and :meth:`make_result`.
    Under ``torchrun`` they override :attr:`is_main`: the loop calls every hook on every process
    (hooks may be collectives) and only process 0 logs, shows progress and prints.
    """

    progress_label: str = "train"
    # The config key that sets the schedule's total, for messages.
    total_key: str = "iterations"

    def __init__(self, config: C, run_dir: str | Path) -> None:
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", config.keep_checkpoints)
        self.run_lock = RunLock(self.run_dir)
        self.stop_requested = False
        # Progress at the last evaluation: the run's end does not evaluate the same model twice.
        self.evaluated_at: int | None = None
        # Called with the trainer after every loop iteration; one may set ``stop_requested``.
        self.callbacks: list[Callable[[Any], None]] = []

    # -- what each trainer provides ---------------------------------------------------------------
    @property
    @abstractmethod
    def progress(self) -> int:
        """The loop's progress counter (iterations, env steps, ...), advanced by :meth:`train_step`."""

    @abstractmethod
    def schedule(self) -> Schedule:
        """The run's length and periods, in the unit of :attr:`progress`."""

    @abstractmethod
    def progress_text(self) -> str:
        """Where the run is, for messages (``"iteration 40"``)."""

    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows progress and prints (process 0 under ``torchrun``)."""
        return True

    @abstractmethod
    def train_step(self) -> dict[str, float]:
        """One loop iteration; advances :attr:`progress` and returns its update metrics (``"loss"`` among them)."""

    @abstractmethod
    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        """Every ``log_every``: log the window's training metrics (``logger`` is None off process 0)."""

    @abstractmethod
    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        """The evaluation run every ``eval_every`` and once at the end."""

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

    def after_loop(self) -> None:
        """Called on every process when the loop ends, before the last evaluation and checkpoint."""

    def close(self) -> None:
        """Release what the run holds beyond its lifetime (envs, the ``torchrun`` process group)."""

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> R:
        """Train up to the schedule's total or a stop signal, then evaluate, checkpoint and report."""
        schedule = self.schedule()
        self.check_not_past_end(schedule)
        locked_here = self.hold_run_directory()
        logger = self._open_logger() if self.is_main else None
        try:
            bar = (
                progress(
                    total=schedule.total, initial=self.progress, desc=self.progress_label, unit=schedule.unit
                )
                if self.is_main
                else None
            )
            try:
                with stop_on_signals(self._request_stop):
                    self.before_loop(logger)
                    loop = self._loop(schedule, logger, bar)
            finally:
                if bar is not None:
                    bar.close()
            self.after_loop()
            if schedule.evaluate_at_end and not self.stop_requested and self.evaluated_at != self.progress:
                self._evaluate(logger)
            path = self._checkpoint(logger)
            if self.stop_requested and self.is_main:
                print(f"interrupted at {self.progress_text()}; checkpoint written to {path}", flush=True)
        except FloatingPointError as exc:
            # A model that reports non-finite outputs (e.g. the follower's logits) diverged: the same
            # stop as a non-finite loss.
            raise TrainingDiverged(f"{exc} at {self.progress_text()}; {self.what_is_kept()}") from exc
        finally:
            if logger is not None:
                logger.close()
            if locked_here:
                self.run_lock.release()
        return self.make_result(loop)

    def _loop(self, schedule: Schedule, logger: RunLogger | None, bar: tqdm | None) -> Span:
        started, start = time.perf_counter(), self.progress
        window = MetricWindow(start)
        while self.progress < schedule.total and not self.stop_requested:
            before = self.progress
            window.add(self.train_step())
            count = self.progress
            advanced = count - before
            if bar is not None:
                bar.update(advanced)
            if due(count, schedule.log_every, advanced):
                span = window.close(count)
                self.log_progress(logger, span)
                if bar is not None and "loss" in span.means:
                    bar.set_postfix(loss=f"{span.means['loss']:.3f}")
            if due(count, schedule.eval_every, advanced):
                self._evaluate(logger)
            if due(count, schedule.checkpoint_every, advanced):
                self._checkpoint(logger)
            for callback in self.callbacks:
                callback(self)
        return Span({}, self.progress - start, time.perf_counter() - started)

    def _evaluate(self, logger: RunLogger | None) -> None:
        self.scheduled_evaluation(logger)
        self.evaluated_at = self.progress

    def _checkpoint(self, logger: RunLogger | None) -> Path | None:
        """Flush the logged points, then save the checkpoint they lead up to.

        A resumed run logs again only what comes after its checkpoint, so every point up to it must be
        on disk before the checkpoint is: a crash later must not take them with it.
        """
        if logger is not None:
            logger.flush()
        return self.save_checkpoint()

    def _open_logger(self) -> RunLogger:
        """The run's TensorBoard logger; the config is saved beside it and logged when the run starts.

        Earlier event files of the run directory may hold points that a crash left past the
        checkpoint this run starts from; they are purged, and the run logs them again as it goes on.
        A resumed run keeps the points of its checkpoint's own step (logged before the checkpoint was
        written); a run from step 0 (e.g. one killed before its first checkpoint) purges them all.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")
        logger = RunLogger(self.run_dir, purge_step=self.progress + 1 if self.progress else 0)
        if self.progress == 0:
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
            raise TrainingDiverged(f"{what} became {value} at {self.progress_text()}; {self.what_is_kept()}")

    def hold_run_directory(self) -> bool:
        """Lock the run directory for this process (process 0 under ``torchrun``) and remove what killed
        writes left in it; whether this call took the lock (a caller that did releases it)."""
        if not self.is_main or self.run_lock.held:
            return False
        self.run_lock.acquire()
        for path in self.checkpoints.clean():
            print(
                f"removed {path.name}, left by an interrupted checkpoint write", file=sys.stderr, flush=True
            )
        return True

    def what_is_kept(self) -> str:
        """How a run that stops now leaves its checkpoints, said truthfully."""
        latest = self.checkpoints.latest()
        if latest is None:
            return f"stopped without saving; no checkpoint was written to {self.checkpoints.directory}"
        return f"stopped without saving; the last good checkpoint {latest} is kept"

    def write_checkpoint(self, state: dict[str, Any], companions: Mapping[str, Any] | None = None) -> Path:
        """Save ``state`` (and its ``companions``) as the checkpoint at :attr:`progress`.

        A state with non-finite tensors (diverged weights) is never written: the run stops with
        :class:`TrainingDiverged`, keeping the last good checkpoint.
        """
        self.check_state_finite(state)
        return self.checkpoints.save(state, self.progress, to_dict(self.config), companions)

    def check_state_finite(self, state: Mapping[str, Any]) -> None:
        """Raise :class:`TrainingDiverged` if a tensor of ``state`` holds NaN or infinity.

        Data-parallel trainers call it on every process before gathering what process 0 saves, so
        that all of them stop together.
        """
        bad = list(non_finite_entries(state))
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise TrainingDiverged(
                f"non-finite values in {bad[0]}{more} at {self.progress_text()}; {self.what_is_kept()}"
            )

    def check_not_past_end(self, schedule: Schedule | None = None) -> None:
        """Refuse a run whose progress is already beyond the schedule's total (a resumed run given a
        smaller ``total_key``): training it would rewrite its config and checkpoint for nothing."""
        total = (schedule or self.schedule()).total
        if self.progress > total:
            raise ConfigError(
                f"{self.total_key}={total} is below where the run already is ({self.progress_text()}): "
                f"pass {self.total_key}={self.progress} or more to continue it"
            )

    def resume(self, checkpoint: str | Path | None = None) -> None:
        """Continue from ``checkpoint``, or from the newest checkpoint that loads.

        A checkpoint that fails to load (truncated, corrupt, its companion missing or mismatched) is
        skipped with a message saying why, and the next older one is tried. A run restored past its
        schedule's total is refused (:meth:`check_not_past_end`) before anything is written.
        """
        self._restore_newest(checkpoint)
        self.check_not_past_end()

    def _restore_newest(self, checkpoint: str | Path | None) -> None:
        """:meth:`restore` ``checkpoint``, or the newest checkpoint that loads."""
        if checkpoint is not None:
            self.restore(checkpoint)
            return
        candidates = self.checkpoints.checkpoints()[::-1]
        if not candidates:
            raise CheckpointError(
                f"no checkpoint found in {str(self.checkpoints.directory)!r}: nothing to resume "
                "(a run stopped before its first checkpoint starts anew with --config)"
            )
        reasons = []
        for path in candidates:
            try:
                self.restore(path)
            except CheckpointError as exc:
                reasons.append(f"skipped {path.name}: {exc}")
                if self.is_main:
                    print(reasons[-1], file=sys.stderr, flush=True)
                continue
            return
        raise CheckpointError(
            f"no checkpoint in {self.checkpoints.directory} loads:\n  " + "\n  ".join(reasons)
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


class IterationTrainer(Trainer[RC, RR]):
    """A run on a navigation dataset counted in iterations (one update each): the speaker,
    pretraining and fine-tuning trainers. Subclasses advance ``iteration`` in :meth:`train_step`."""

    def __init__(self, config: RC, run_dir: str | Path) -> None:
        if not config.data_dir:
            raise ValueError("no dataset directory: pass --data <dir> (or data_dir=<dir>)")
        super().__init__(config, run_dir)
        self.iteration = 0

    @property
    def progress(self) -> int:
        return self.iteration

    def schedule(self) -> Schedule:
        c = self.config
        return Schedule(
            total=c.iterations,
            log_every=c.log_every,
            eval_every=c.eval_every,
            checkpoint_every=c.checkpoint_every,
            evaluate_at_end=c.eval_every > 0,
        )

    def progress_text(self) -> str:
        return f"iteration {self.iteration}"


def train_run(trainer: Trainer[Any, R], resume: bool, checkpoint: str | Path | None = None) -> R:
    """Train ``trainer`` to the end, then close it.

    With ``resume`` it first continues from ``checkpoint``, or the newest checkpoint that loads; the
    run directory is locked (:class:`~lodestar.runtime.run_lock.RunLock`) before anything is read.
    """
    try:
        trainer.hold_run_directory()
        if resume:
            trainer.resume(checkpoint)
            if trainer.is_main:
                print(f"resumed {trainer.run_dir} at {trainer.progress_text()}", flush=True)
        return trainer.train()
    finally:
        trainer.run_lock.release()
        trainer.close()
