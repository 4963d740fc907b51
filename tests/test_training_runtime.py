"""The shared training scaffolding: script options, run naming and guards, stop signals, the loop's schedule."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.vln.speaker_training import SpeakerTrainConfig
from lodestar.runtime.checkpoint import CheckpointError, CheckpointManager
from lodestar.runtime.cli import resolve_run, run_main, training_parser
from lodestar.runtime.config import ConfigError, save_config
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.run_lock import RunLockedError
from lodestar.runtime.training import (
    IterationTrainer,
    MetricWindow,
    RunResult,
    Span,
    TrainingDiverged,
    due,
    stop_on_signals,
    train_run,
)


def toy_config(**values: object) -> SpeakerTrainConfig:
    """A run config for the toy trainer below. The speaker's schema stands in for any trainer's: the
    loop only reads the fields of :class:`lodestar.runtime.training.RunConfig`."""
    schedule = {
        "iterations": 7,
        "log_every": 2,
        "eval_every": 3,
        "checkpoint_every": 4,
        "keep_checkpoints": 10,
    }
    return SpeakerTrainConfig(**{"data_dir": "toy-data", "seed": 3, "device": "cpu", **schedule, **values})


# -- script options and run directories ------------------------------------------------------------


def _write_config(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / "toy.yaml"
    save_config(toy_config(runs_dir=str(tmp_path / "runs"), **values), path)
    return path


def test_config_and_resume_are_exclusive_and_one_is_required(tmp_path: Path) -> None:
    parser = training_parser("toy", "configs/toy.yaml", SpeakerTrainConfig)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", "a.yaml", "--resume", "runs/a"])
    args = parser.parse_args(["--config", "a.yaml", "--data", "d", "seed=1", "lr=0.1"])
    assert args.config == Path("a.yaml") and args.resume is None
    assert args.data == Path("d") and args.overrides == ["seed=1", "lr=0.1"]
    with pytest.raises(SystemExit):  # scripts without a dataset have no --data
        training_parser("toy", "configs/toy.yaml", SpeakerTrainConfig, data=False).parse_args(
            ["--config", "a", "--data", "d"]
        )


def test_a_new_run_is_named_after_prefix_seed_and_time(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    args = training_parser("toy", "x", SpeakerTrainConfig).parse_args(
        ["--config", str(config), "--data", "/d", "seed=5"]
    )
    run = resolve_run(SpeakerTrainConfig, args, "toy")
    assert not run.resume and run.config.data_dir == "/d" and run.config.seed == 5
    assert re.fullmatch(r"toy-s5-\d{8}-\d{6}", run.config.name or "")
    assert run.run_dir == tmp_path / "runs" / run.config.name
    # The prefix may depend on the config; a given name is kept.
    named = resolve_run(SpeakerTrainConfig, args, lambda c: f"toy-{c.data.features}")
    assert named.config.name.startswith("toy-auto-s5-")
    args = training_parser("toy", "x", SpeakerTrainConfig).parse_args(["--config", str(config), "name=mine"])
    assert resolve_run(SpeakerTrainConfig, args, "toy").run_dir == tmp_path / "runs" / "mine"


def test_distributed_runs_need_a_name(tmp_path: Path) -> None:
    args = training_parser("toy", "x", SpeakerTrainConfig).parse_args(
        ["--config", str(_write_config(tmp_path))]
    )
    with pytest.raises(ValueError, match="under torchrun pass name="):
        resolve_run(SpeakerTrainConfig, args, "toy", distributed=True)
    args.overrides = ["name=shared"]
    assert resolve_run(SpeakerTrainConfig, args, "toy", distributed=True).config.name == "shared"


def test_a_new_run_over_existing_checkpoints_is_refused(tmp_path: Path) -> None:
    checkpoints = tmp_path / "runs" / "taken" / "checkpoints"
    checkpoints.mkdir(parents=True)
    args = training_parser("toy", "x", SpeakerTrainConfig).parse_args(
        ["--config", str(_write_config(tmp_path)), "name=taken"]
    )
    # What a kill inside the first checkpoint write leaves is no run to protect: it starts anew.
    (checkpoints / ".ckpt_000000000004.pt.x.tmp").write_bytes(b"partial")
    assert resolve_run(SpeakerTrainConfig, args, "toy").run_dir == tmp_path / "runs" / "taken"
    CheckpointManager(checkpoints).save({}, 4, {})
    with pytest.raises(ValueError, match=r"already has checkpoints: use --resume .*taken"):
        resolve_run(SpeakerTrainConfig, args, "toy")


def test_resume_reads_the_runs_own_config_plus_overrides(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "old"
    save_config(toy_config(name="old", seed=9, iterations=5), run_dir / "config.yaml")
    (run_dir / "checkpoints").mkdir()  # a resumed run has checkpoints: no guard
    args = training_parser("toy", "x", SpeakerTrainConfig).parse_args(
        ["--resume", str(run_dir), "iterations=8"]
    )
    run = resolve_run(SpeakerTrainConfig, args, "toy")
    assert run.resume and run.run_dir == run_dir
    assert (run.config.name, run.config.seed, run.config.iterations) == ("old", 9, 8)


def test_run_main_reports_user_errors_and_divergence(capsys: pytest.CaptureFixture[str]) -> None:
    def bad_input(argv: list[str] | None) -> int:
        raise ValueError("no such thing")

    def diverged(argv: list[str] | None) -> int:
        raise TrainingDiverged("loss became nan")

    for main, code, message in ((bad_input, 2, "no such thing"), (diverged, 3, "loss became nan")):
        with pytest.raises(SystemExit) as exit_info:
            run_main(main)
        assert exit_info.value.code == code
        assert capsys.readouterr().err == f"error: {message}\n"


# -- the loop --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ToyResult(RunResult):
    loop_iterations: int


class ToyTrainer(IterationTrainer[SpeakerTrainConfig, ToyResult]):
    """Records what the shared loop calls, and when; ``signal_at`` sends itself a signal mid-run.

    Its counter grows by ``increment`` per update (as DQN's env steps grow by ``num_envs``).
    """

    progress_label = "toy"

    def __init__(
        self,
        config: SpeakerTrainConfig,
        run_dir: Path,
        signal_at: tuple[int, int] | None = None,
        increment: int = 1,
    ) -> None:
        super().__init__(config, run_dir)
        self.signal_at = signal_at
        self.increment = increment
        self.calls: list[tuple[str, int]] = []
        self.logged: list[Span] = []
        self.weights = torch.zeros(3)
        self.fail_at: int | None = None  # the "model" raises FloatingPointError at this iteration

    def train_step(self) -> dict[str, float]:
        self.iteration += self.increment
        if self.iteration == self.fail_at:
            raise FloatingPointError("the toy model produced non-finite outputs")
        if self.signal_at is not None and self.iteration == self.signal_at[0]:
            os.kill(os.getpid(), self.signal_at[1])
        return {"loss": float(self.iteration)}

    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        self.calls.append(("log", self.iteration))
        self.logged.append(span)
        if logger is not None:
            logger.scalar("train/loss", span.means["loss"], self.iteration)

    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        self.calls.append(("eval", self.iteration))

    def save_checkpoint(self) -> Path:
        self.calls.append(("checkpoint", self.iteration))
        return self.write_checkpoint({"iteration": self.iteration, "weights": self.weights.clone()})

    def restore(self, checkpoint: str | Path | None = None) -> None:
        state, _ = self.load_checkpoint(checkpoint, ["data.features"])
        self.iteration = state["iteration"]
        self.weights = state["weights"]

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


def test_a_counter_growing_by_more_than_one_fires_each_period_once(tmp_path: Path) -> None:
    config = toy_config(iterations=20, log_every=5, eval_every=10, checkpoint_every=8)
    trainer = ToyTrainer(config, tmp_path / "run", increment=3)
    result = trainer.train()
    assert result.iterations == result.loop_iterations == 21
    assert trainer.calls == [
        ("log", 6), ("checkpoint", 9), ("log", 12), ("eval", 12), ("log", 15),
        ("checkpoint", 18), ("log", 21), ("eval", 21), ("checkpoint", 21),
    ]  # fmt: skip
    assert [span.iterations for span in trainer.logged] == [6, 6, 3, 6]


def test_callbacks_run_after_every_iteration_and_may_stop_the_run(tmp_path: Path) -> None:
    trainer = ToyTrainer(toy_config(iterations=100), tmp_path / "run")
    seen: list[int] = []

    def stop_at_four(toy: ToyTrainer) -> None:
        seen.append(toy.iteration)
        toy.stop_requested = toy.iteration >= 4

    trainer.callbacks.append(stop_at_four)
    result = trainer.train()
    assert seen == [1, 2, 3, 4] and result.interrupted and result.iterations == 4
    assert trainer.calls == [("log", 2), ("eval", 3), ("log", 4), ("checkpoint", 4), ("checkpoint", 4)]


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
    with pytest.raises(
        TrainingDiverged, match=r"toy loss became nan at iteration 0; .*no checkpoint was written"
    ):
        trainer.check_finite("toy loss", float("nan"))
    first = trainer.save_checkpoint()
    with pytest.raises(TrainingDiverged, match=f"the last good checkpoint {re.escape(str(first))} is kept"):
        trainer.check_finite("toy loss", float("inf"))


def test_diverged_weights_are_never_saved(tmp_path: Path) -> None:
    trainer = ToyTrainer(toy_config(), tmp_path / "run")
    trainer.train()  # checkpoints at 4 and 7
    kept = trainer.checkpoints.latest()
    again = ToyTrainer(toy_config(iterations=12), tmp_path / "run")
    again.resume()
    again.weights[1] = float("nan")
    with pytest.raises(
        TrainingDiverged, match=r"non-finite values in weights at iteration 8; .*last good checkpoint"
    ):
        again.train()
    assert again.checkpoints.latest() == kept


def test_a_model_reporting_non_finite_outputs_stops_like_a_diverged_loss(tmp_path: Path) -> None:
    trainer = ToyTrainer(toy_config(), tmp_path / "run")
    trainer.fail_at = 5
    with pytest.raises(
        TrainingDiverged, match=r"non-finite outputs at iteration 5; .*ckpt_000000000004.pt is kept"
    ):
        trainer.train()


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path: Path, capsys) -> None:
    ToyTrainer(toy_config(keep_checkpoints=3), tmp_path / "run").train()  # checkpoints at 4 and 7
    newest = tmp_path / "run" / "checkpoints" / "ckpt_000000000007.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    trainer = ToyTrainer(toy_config(), tmp_path / "run")
    trainer.resume()
    assert trainer.iteration == 4
    assert "skipped ckpt_000000000007.pt: checkpoint" in capsys.readouterr().err
    picked = ToyTrainer(toy_config(), tmp_path / "run")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        picked.resume(newest)  # an explicit choice is not replaced by another
    newest.write_bytes(b"")
    (tmp_path / "run" / "checkpoints" / "ckpt_000000000004.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no checkpoint in .* loads:\n  skipped ckpt_000000000007.pt"):
        ToyTrainer(toy_config(), tmp_path / "run").resume()


def test_one_writer_per_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid} on "):
            ToyTrainer(toy_config(), run).train()
        assert not (run / "checkpoints").exists()  # it wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # The lock of a dead process is taken over; leftovers of its interrupted writes are removed.
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".ckpt_000000000004.pt.x.tmp").write_bytes(b"partial")
    assert ToyTrainer(toy_config(), run).train().iterations == 7
    assert not list((run / "checkpoints").glob("*.tmp"))


HOLD_LOCK = """
import sys, time
from lodestar.runtime.run_lock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire(); print("locked", flush=True); time.sleep(60)
"""


def test_metric_window_means_are_per_key() -> None:
    window = MetricWindow(count=10)
    window.add({"loss": 1.0})
    window.add({"loss": 3.0, "dagger": 4.0})  # a loss that starts later is averaged over its own updates
    span = window.close(count=12)
    assert span.means == {"loss": 2.0, "dagger": 4.0} and span.iterations == 2
    assert window.close(count=12).means == {}


def test_a_task_is_due_when_the_counter_crosses_a_multiple_of_its_period() -> None:
    # Counted by one, due is count % every == 0.
    assert [count for count in range(13) if due(count, 4)] == [0, 4, 8, 12]
    # Counted by 3 (e.g. env steps of 3 envs): each multiple of 4 fires once, at the first count past it.
    assert [count for count in range(3, 25, 3) if due(count, 4, increment=3)] == [6, 9, 12, 18, 21, 24]
    assert not any(due(count, 0, 3) for count in range(3, 25, 3))  # period 0: never


def test_resuming_with_a_total_below_the_current_step_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    ToyTrainer(toy_config(), run).train()  # checkpoints at 4 and 7
    config_file = run / "config.yaml"
    written = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    message = r"iterations=5 is below where the run already is \(iteration 7\): pass iterations=7 or more"
    with pytest.raises(ConfigError, match=message):
        train_run(ToyTrainer(toy_config(iterations=5), run), resume=True)
    restored = ToyTrainer(toy_config(iterations=5), run)
    restored.restore()
    with pytest.raises(ConfigError, match=message):  # a trainer restored by hand is refused the same way
        restored.train()
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == written
    assert "iterations: 7" in config_file.read_text()
    # The run's own total (it is finished) and a larger one are accepted.
    assert train_run(ToyTrainer(toy_config(iterations=9), run), resume=True).iterations == 9


CRASH_AFTER_CHECKPOINT = """
import os, signal, sys
from pathlib import Path
from tests.test_training_runtime import ToyTrainer, toy_config

trainer = ToyTrainer(toy_config(iterations=12, log_every=1, eval_every=0, checkpoint_every=4), Path(sys.argv[1]))

def crash(toy):
    if toy.iteration == int(sys.argv[2]):  # killed with no chance to flush or checkpoint
        os.kill(os.getpid(), signal.SIGKILL)

trainer.callbacks.append(crash)
trainer.train()
"""


@pytest.mark.parametrize(
    ("crash_at", "resumed_from"), [(10, 8), pytest.param(3, None, marks=pytest.mark.slow)]
)
def test_a_run_continued_after_a_crash_shows_every_logged_step_once(
    tmp_path: Path, crash_at: int, resumed_from: int | None
) -> None:
    run = tmp_path / "run"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_CHECKPOINT, str(run), str(crash_at)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    latest = CheckpointManager(run / "checkpoints").latest()
    assert (latest and latest.name) == (resumed_from and f"ckpt_{resumed_from:012d}.pt")

    # Resumed from its checkpoint, or started anew when the crash came before the first one.
    config = toy_config(iterations=12, log_every=1, eval_every=0, checkpoint_every=4)
    assert train_run(ToyTrainer(config, run), resume=resumed_from is not None).iterations == 12
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    points = [(event.step, event.value) for event in events.Scalars("train/loss")]
    # The points up to the checkpoint survive the crash, those after it are replaced by the resumed
    # run's: each step once, with the values of an uninterrupted run (the toy's loss is its iteration).
    assert points == [(step, float(step)) for step in range(1, 13)]
