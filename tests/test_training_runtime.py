"""The shared training scaffolding: run set-up, stop signals, the loop's schedule."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.vln.speaker_training import SpeakerTrainConfig
from runtime.checkpoint import CheckpointManager
from runtime.config import to_dict
from runtime.logger import RunLogger
from runtime.training import (
    IterationTrainer,
    MetricWindow,
    RunResult,
    Span,
    TrainingDiverged,
    stop_on_signals,
    train_run,
)


def toy_config(**values: object) -> SpeakerTrainConfig:
    """A run config for the toy trainer below. The speaker's schema stands in for any trainer's: the
    loop only reads the fields of :class:`runtime.training.RunConfig`."""
    schedule = {
        "iterations": 7,
        "log_every": 2,
        "eval_every": 3,
        "checkpoint_every": 4,
        "keep_checkpoints": 10,
    }
    return SpeakerTrainConfig(**{"data_dir": "toy-data", "seed": 3, "device": "cpu", **schedule, **values})


# -- the loop --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ToyResult(RunResult):
    loop_iterations: int


class ToyTrainer(IterationTrainer[SpeakerTrainConfig, ToyResult]):
    """Records what the shared loop calls, and when; ``signal_at`` sends itself a signal mid-run."""

    progress_label = "toy"

    def __init__(
        self, config: SpeakerTrainConfig, run_dir: Path, signal_at: tuple[int, int] | None = None
    ) -> None:
        super().__init__(config, run_dir)
        self.signal_at = signal_at
        self.calls: list[tuple[str, int]] = []
        self.logged: list[Span] = []

    def train_step(self) -> dict[str, float]:
        self.iteration += 1
        if self.signal_at is not None and self.iteration == self.signal_at[0]:
            os.kill(os.getpid(), self.signal_at[1])
        return {"loss": float(self.iteration)}

    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        self.calls.append(("log", self.iteration))
        self.logged.append(span)

    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        self.calls.append(("eval", self.iteration))

    def save_checkpoint(self) -> Path:
        self.calls.append(("checkpoint", self.iteration))
        return self.checkpoints.save({"iteration": self.iteration}, self.iteration, to_dict(self.config))

    def restore(self, checkpoint: str | Path | None = None) -> None:
        state, _ = self.load_checkpoint(checkpoint, ["data.features"])
        self.iteration = state["iteration"]

    def make_result(self, loop: Span) -> ToyResult:
        return ToyResult(
            run_dir=self.run_dir,
            iterations=self.iteration,
            interrupted=self.stop_requested,
            loop_iterations=loop.iterations,
        )


def test_periodic_log_evaluation_and_checkpoint(tmp_path: Path) -> None:
    trainer = ToyTrainer(toy_config(), tmp_path / "run")
    result = trainer.train()
    assert result.iterations == result.loop_iterations == 7 and not result.interrupted
    assert trainer.calls == [
        ("log", 2), ("eval", 3), ("log", 4), ("checkpoint", 4),
        ("log", 6), ("eval", 6), ("eval", 7), ("checkpoint", 7),
    ]  # fmt: skip
    assert [s.means["loss"] for s in trainer.logged] == [1.5, 3.5, 5.5]
    assert (tmp_path / "run" / "config.yaml").is_file()
    # Resuming continues the schedule; the last evaluation is not repeated when it was just done.
    again = ToyTrainer(toy_config(iterations=9), tmp_path / "run")
    again.restore()
    assert train_run(again, resume=False).loop_iterations == 2
    assert again.calls == [("log", 8), ("checkpoint", 8), ("eval", 9), ("checkpoint", 9)]


def test_zero_periods_switch_evaluation_and_periodic_checkpoints_off(tmp_path: Path) -> None:
    trainer = ToyTrainer(toy_config(iterations=3, eval_every=0, checkpoint_every=0, log_every=0), tmp_path)
    trainer.train()
    assert trainer.calls == [("checkpoint", 3)]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_finishes_the_update_and_writes_a_checkpoint(
    tmp_path: Path, signum: int, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signum)
    trainer = ToyTrainer(toy_config(iterations=100), tmp_path / "run", signal_at=(5, signum))
    result = trainer.train()
    assert result.interrupted and result.iterations == 5
    assert trainer.calls[-1] == ("checkpoint", 5)  # no final evaluation for an interrupted run
    assert ("eval", 5) not in trainer.calls
    assert CheckpointManager(tmp_path / "run" / "checkpoints").latest().name == "ckpt_000000000005.pt"
    assert "interrupted at iteration 5; checkpoint written to" in capsys.readouterr().out
    assert signal.getsignal(signum) is before  # the handler is only routed during the loop


def test_stop_on_signals_routes_and_restores(tmp_path: Path) -> None:
    received: list[int] = []
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals(lambda signum, frame: received.append(signum)):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert received == [signal.SIGINT, signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is before


def test_resume_through_train_run_prints_where_it_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ToyTrainer(toy_config(iterations=4), tmp_path / "run").train()
    trainer = ToyTrainer(toy_config(iterations=6), tmp_path / "run")
    result = train_run(trainer, resume=True)
    assert f"resumed {tmp_path / 'run'} at iteration 4" in capsys.readouterr().out
    assert result.iterations == 6 and result.loop_iterations == 2


def test_set_up_refuses_a_missing_dataset_and_a_diverged_loss(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--data"):
        ToyTrainer(toy_config(data_dir=""), tmp_path)
    trainer = ToyTrainer(toy_config(), tmp_path / "run")
    trainer.check_finite("toy loss", 1.0)
    with pytest.raises(TrainingDiverged, match=r"toy loss became nan at iteration 0; .*last good checkpoint"):
        trainer.check_finite("toy loss", float("nan"))


def test_metric_window_means_are_per_key() -> None:
    window = MetricWindow(iteration=10)
    window.add({"loss": 1.0})
    window.add({"loss": 3.0, "dagger": 4.0})  # a loss that starts later is averaged over its own updates
    span = window.close(iteration=12)
    assert span.means == {"loss": 2.0, "dagger": 4.0} and span.iterations == 2
    assert window.close(iteration=12).means == {}
