"""DQN end to end on real ALE games: the scripts, the shared loop, exact resume, NaN stop, eval protocol.

Most tests call the scripts' ``main`` in-process; one subprocess smoke test per script checks that it
runs as a command. Several tests read one small shared run (:func:`shared_run`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import evaluate_dqn
import pytest
import torch
import train_dqn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.dqn import evaluation
from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.runtime import training
from lodestar.runtime.checkpoint import CheckpointError, CheckpointManager, load_file
from lodestar.runtime.config import load_config
from lodestar.runtime.logger import SECTIONS
from tests.dqn_runs import PRESET, TINY_PONG

ROOT = Path(__file__).resolve().parent.parent
# Every episode seeded: resume replays only the current ones.
SMALL = [*TINY_PONG, "replay.capacity=2000", "env.reseed_after_steps=0"]
# The shared run: 100 env steps, evaluated and checkpointed every 60 (and at the end).
SHARED = [
    "total_steps=100",
    "checkpoint_every_steps=60",
    "keep_checkpoints=5",
    "eval.episodes=1",
    "eval.num_envs=1",
    "eval.every_steps=60",
    "eval.max_episode_frames=200",
    "eval.video_max_steps=20",
]


def _config(*extra: str) -> DQNConfig:
    return load_config(DQNConfig, PRESET, [*SMALL, *extra])


def _main(script, argv: list[str]) -> tuple[int, str, str]:
    """``script.main(argv)`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = script.main(argv)
    return code, out.getvalue(), err.getvalue()


@dataclass
class Run:
    run_dir: Path
    code: int
    stdout: str


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One run of ``train_dqn.main`` that several tests only read."""
    runs = tmp_path_factory.mktemp("dqn-runs")
    argv = ["--config", str(PRESET), *SMALL, *SHARED, "name=shared", f"runs_dir={runs}"]
    code, stdout, _ = _main(train_dqn, argv)
    return Run(runs / "shared", code, stdout)


def _events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in acc.Scalars(tag)]


# -- the scripts as commands -----------------------------------------------------------------------


def _train_smoke_args(fixture, work: Path) -> list[object]:
    return ["--config", PRESET, *SMALL, "total_steps=20", "name=smoke", f"runs_dir={work}"]


@pytest.mark.script_run("train_dqn.py", _train_smoke_args)
def test_train_script_runs_as_a_command(script_run):
    """The one command-line run of ``scripts/train_dqn.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "trained 20 steps (0 updates)" in script_run.stdout and "tensorboard --logdir" in script_run.stdout
    checkpoints = CheckpointManager(script_run.work / "smoke" / "checkpoints")
    assert checkpoints.latest().name == "ckpt_000000000020.pt"


def _evaluate_smoke_args(fixture, work: Path) -> list[object]:
    DQNTrainer(
        _config("total_steps=2", "save_replay=false", "eval.max_episode_frames=120"), work / "run"
    ).train()
    return ["--checkpoint", work / "run", "--episodes", "1", "--num-envs", "1", "--protocol", "config",
            "--out", work / "eval.json"]  # fmt: skip


@pytest.mark.script_run("evaluate_dqn.py", _evaluate_smoke_args)
def test_evaluate_script_runs_as_a_command(script_run):
    """The one command-line run of ``scripts/evaluate_dqn.py`` (in the background)."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "pong" in script_run.stdout.lower()
    (result,) = json.loads((script_run.work / "eval.json").read_text())["results"]
    assert result["episodes"] == 1 and result["epsilon"] == 0.001


def test_evaluate_script_reports_scores_and_aggregates(shared_run, tmp_path):
    other_config = _config("total_steps=2", "seed=2", "save_replay=false", "eval.max_episode_frames=200")
    other = DQNTrainer(other_config, tmp_path / "pong-s2")
    other.train()
    out, video = tmp_path / "eval.json", tmp_path / "eval.gif"
    argv = [
        "--games",
        str(shared_run.run_dir),
        str(tmp_path / "pong-s2"),
        "--episodes",
        "2",
        "--num-envs",
        "2",
    ]
    argv += ["--protocol", "config", "--out", str(out), "--video", str(video)]
    code, stdout, stderr = _main(evaluate_dqn, argv)
    assert code == 0, stderr[-3000:]
    assert "HNS iqm" in stdout and "pong" in stdout
    result = json.loads(out.read_text())
    assert [(r["seed"], r["episodes"]) for r in result["results"]] == [(1, 2), (2, 2)]
    assert all(r["protocol"] == "config" and r["epsilon"] == 0.001 for r in result["results"])
    # The shared run's protocol: 200 frames / frameskip 4 = 50 agent steps per episode, so at most
    # 50 points either way in Pong.
    assert all(abs(x) <= 50 for r in result["results"] for x in r["returns"])
    low, high = result["aggregate"]["iqm"]["ci95"]
    assert low <= result["aggregate"]["iqm"]["value"] <= high
    assert Path(result["results"][0]["video"]).is_file()


def test_evaluate_script_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        _main(evaluate_dqn, ["--checkpoint", str(tmp_path / "nope")])


@pytest.mark.parametrize(
    ("option", "value"), [("--num-envs", "0"), ("--num-envs", "-2"), ("--episodes", "0")]
)
def test_evaluate_script_refuses_counts_below_one(tmp_path, run_script, option, value):
    result = run_script(evaluate_dqn.main, "--checkpoint", tmp_path / "nope", option, value)
    assert result.returncode == 2  # refused while parsing, before any checkpoint is read
    assert f"argument {option}: must be >= 1, got {int(value)}" in result.stderr


def test_resuming_with_total_steps_below_the_current_step_is_refused(shared_run, tmp_path, run_script):
    run_dir = tmp_path / "run"
    shutil.copytree(shared_run.run_dir, run_dir)
    written = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    result = run_script(train_dqn.main, "--resume", run_dir, "total_steps=80")
    assert result.returncode == 2
    assert "error: total_steps=80 is below where the run already is (step 100 (update " in result.stderr
    assert "pass total_steps=100 or more to continue it" in result.stderr
    # Nothing was written: config.yaml still says 100, the checkpoints and event files are untouched.
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == written


# -- what one run writes ---------------------------------------------------------------------------


def test_a_run_writes_its_directory_and_checkpoints_on_the_shared_schedule(shared_run):
    assert shared_run.code == 0
    assert (
        "trained 100 steps" in shared_run.stdout and "last evaluation: mean raw return" in shared_run.stdout
    )
    run = shared_run.run_dir
    assert load_config(DQNConfig, run / "config.yaml").total_steps == 100
    # Env steps go 2 at a time: periodic checkpoints at 60, the final one at 100.
    names = [path.name for path in CheckpointManager(run / "checkpoints").checkpoints()]
    assert names == ["ckpt_000000000060.pt", "ckpt_000000000100.pt"]
    # Each checkpoint has the replay buffer of its own step beside it, pruned with it.
    replays = sorted(path.name for path in (run / "checkpoints").glob("replay_*.pt"))
    assert replays == ["replay_000000000060.pt", "replay_000000000100.pt"]
    final = load_file(run / "checkpoints" / "ckpt_000000000100.pt")
    # Resume needs only the current episodes: 50 loop iterations of 2 envs whose episodes are cut at
    # 30 agent steps leave both in their second episode, 20 steps in; one byte per action.
    episodes, actions = final["episodes"], final["episode_actions"]
    assert episodes["seed_index"].tolist() == [1, 1] and episodes["episode_length"].tolist() == [20, 20]
    assert episodes["replay_length"].tolist() == [20, 20]
    assert actions.dtype == torch.uint8 and actions.shape == (20, 2) and int(actions.max()) < 6
    assert final["global_step"] == 100 and final["last_eval_step"] == 100


def test_a_run_logs_under_the_one_tag_scheme(shared_run):
    acc = _events(shared_run.run_dir)
    scalars = set(acc.Tags()["scalars"])
    assert scalars == {
        "rollout/episodic_return",
        "rollout/episodic_length",
        "rollout/clipped_episodic_return",
        "rollout/epsilon",
        "rollout/replay_size",
        "perf/steps_per_second",
        "perf/updates_per_second",
        "train/loss",
        "train/q_mean",
        "eval/episodic_return_mean",
        "eval/episodic_return_median",
    }
    assert all(tag.split("/")[0] in SECTIONS for tag in scalars | set(acc.Tags()["images"]))
    assert acc.Tags()["images"] == ["eval/video"]
    assert any(tag.startswith("config") for tag in acc.Tags()["tensors"])
    # Steps are env steps: logs every 20, losses once updates began (the first at step 42),
    # evaluations at the periodic step 60 and at the end.
    assert _steps(acc, "perf/steps_per_second") == [20, 40, 60, 80, 100]
    assert _steps(acc, "train/loss") == [60, 80, 100]
    assert _steps(acc, "eval/episodic_return_mean") == [60, 100]
    # Episodes are cut at 30 agent steps and Pong scores -1/+1: returns stay within that.
    episodes = acc.Scalars("rollout/episodic_length")
    assert len(episodes) >= 2 and all(0 < e.value <= 30 for e in episodes)
    assert all(abs(e.value) <= 30 for e in acc.Scalars("rollout/episodic_return"))


def test_dqn_runs_on_the_shared_loop():
    assert issubclass(DQNTrainer, training.Trainer)
    assert train_dqn.TrainingDiverged is training.TrainingDiverged  # defined once


# -- acting has no side effects; resume replays what the collector recorded ------------------------


def test_the_policy_has_no_side_effects_and_resume_replays_the_recorded_actions(tmp_path):
    trainer = DQNTrainer(_config("total_steps=20"), tmp_path / "run")
    trainer.train()
    collector = trainer.collector
    recorded = collector.recorded_actions()
    assert recorded.shape == (10, 2)
    before = (collector.global_step, len(trainer.replay), list(trainer.episode_returns))
    for _ in range(2):
        action = collector.policy(collector.obs)
        assert action.shape == (2,) and bool(((action >= 0) & (action < trainer.num_actions)).all())
    assert torch.equal(collector.recorded_actions(), recorded)
    assert (collector.global_step, len(trainer.replay), trainer.episode_returns) == before

    resumed = DQNTrainer(_config("total_steps=20"), tmp_path / "run")
    resumed.restore()
    assert torch.equal(resumed.collector.recorded_actions(), recorded)
    assert resumed.collector.global_step == 20 and len(resumed.replay) == len(trainer.replay)
    assert torch.equal(resumed.collector.obs, collector.obs)  # the emulators are where they were


def _interrupt_at(step: int):
    """A trainer callback that sends this process SIGINT (Ctrl-C) once the run reaches ``step``."""

    def callback(trainer: DQNTrainer) -> None:
        if trainer.collector.global_step == step:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def _assert_same_run(a: dict, b: dict) -> None:
    """Two final checkpoints hold the same networks, optimizer, actions, counters and generators."""
    assert a["global_step"] == b["global_step"] and a["updates_owed"] == b["updates_owed"]
    assert a["agent"]["updates"] == b["agent"]["updates"] > 0
    for name in ("q_network", "target_network"):
        x, y = a["agent"][name], b["agent"][name]
        assert all(torch.equal(x[k], y[k]) for k in x), name
    assert torch.equal(a["episode_actions"], b["episode_actions"])
    for key in ("episode_length", "replay_length", "seed_index"):
        assert a["episodes"][key].tolist() == b["episodes"][key].tolist(), key
    assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.mark.parametrize("replay", ["shared", pytest.param("uniform", marks=pytest.mark.slow)])
def test_ctrl_c_then_resume_is_bit_identical(shared_run, tmp_path, replay):
    if replay == "shared":  # prioritized, 10-step, random shifts, evaluated: the shared run is straight
        overrides, straight = SHARED, shared_run.run_dir
    else:
        overrides = ["total_steps=100", "replay.prioritized=false", "agent.n_step=1", "agent.augment=none"]
        straight = tmp_path / "straight"
        DQNTrainer(_config(*overrides), straight).train()
    run_dir = tmp_path / "resumed"
    first = DQNTrainer(_config(*overrides), run_dir, callbacks=[_interrupt_at(60)])
    result = first.train()
    assert result.interrupted and result.steps == 60
    assert CheckpointManager(run_dir / "checkpoints").latest().name == "ckpt_000000000060.pt"

    code, stdout, _ = _main(train_dqn, ["--resume", str(run_dir)])
    assert code == 0 and f"resumed {run_dir} at step 60 (update " in stdout
    _assert_same_run(
        load_file(CheckpointManager(straight / "checkpoints").latest()),
        load_file(CheckpointManager(run_dir / "checkpoints").latest()),
    )


def test_training_time_adds_up_over_resumed_segments(tmp_path):
    no_learning = ["save_replay=false", "replay.learning_starts=1000"]  # only time matters here
    config = _config("total_steps=40", *no_learning)
    first = DQNTrainer(config, tmp_path / "run", callbacks=[_interrupt_at(20)])
    first_seconds = first.train().train_seconds
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    assert first_seconds is not None and first_seconds > 0
    assert manager.load()["train_seconds"] == pytest.approx(first_seconds)

    second = DQNTrainer(config, tmp_path / "run")
    second.restore()
    total = second.train().train_seconds
    assert first_seconds < total and manager.load()["step"] == 40
    assert manager.load()["train_seconds"] == pytest.approx(total)

    # A checkpoint written before the time was recorded: the run's total is unknown, not understated.
    legacy = manager.load()
    del legacy["train_seconds"]
    torch.save(legacy, manager.latest())
    third = DQNTrainer(_config("total_steps=44", *no_learning), tmp_path / "run")
    third.restore()
    assert third.train().train_seconds is None


def test_a_nan_loss_stops_the_script_with_code_3_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_update = DQNAgent.update

    def poisoned(self, batch, generator=None):
        out = real_update(self, batch, generator)
        if self.updates > 5:  # one update per 4 env steps from step 42: 5 by the checkpoint at 60
            out["loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(DQNAgent, "update", poisoned)
    argv = ["--config", str(PRESET), *SMALL, "total_steps=100", "checkpoint_every_steps=60"]
    code, _, stderr = _main(train_dqn, [*argv, "name=nan", f"runs_dir={tmp_path}", "save_replay=false"])
    assert code == 3
    assert "error: loss became nan at step 62 (update 6); stopped without saving" in stderr
    manager = CheckpointManager(tmp_path / "nan" / "checkpoints")
    assert [path.name for path in manager.checkpoints()] == ["ckpt_000000000060.pt"]
    assert all(torch.isfinite(v).all() for v in manager.load()["agent"]["q_network"].values())


def test_evaluation_uses_the_configured_protocol(monkeypatch):
    config = _config("eval.epsilon=0.05", "eval.repeat_action_probability=0.25", "eval.noop_max=0")
    config.eval.max_episode_frames = 200
    created = {}
    real_env = evaluation.AtariVecEnv

    def spy_env(game, num_envs, **kwargs):
        created.update(kwargs, game=game, num_envs=num_envs)
        return real_env(game, num_envs, **kwargs)

    monkeypatch.setattr(evaluation, "AtariVecEnv", spy_env)
    agent = DQNAgent(6, config.agent, torch.device("cpu"))  # Pong's minimal action set
    epsilons = []
    real_act = agent.act
    agent.act = lambda obs, eps, gen=None: (epsilons.append(eps), real_act(obs, eps, gen))[1]
    returns = evaluation.evaluate(agent, config, episodes=3, seed=0, num_envs=2)
    assert len(returns) == 3
    assert created["repeat_action_probability"] == 0.25 and created["noop_max"] == 0
    assert created["max_episode_frames"] == 200 and created["num_envs"] == 2
    assert set(epsilons) == {0.05}
    # episodes are full games capped by frames only: 200 frames / frameskip 4 = 50 agent steps each
    assert all(-50 <= r <= 50 for r in returns)
