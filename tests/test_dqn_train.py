"""DQN end to end on real ALE games: the train script, exact resume, NaN stop, eval protocol."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.dqn import evaluation
from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer, TrainingDiverged
from lodestar.runtime.checkpoint import CheckpointManager
from lodestar.runtime.config import load_config

ROOT = Path(__file__).resolve().parent.parent

SMALL = [
    "device=cpu",
    "torch_threads=1",
    "env.game=Pong",
    "env.num_envs=2",
    "env.max_episode_frames=240",
    "replay.capacity=2000",
    "replay.learning_starts=40",
    "replay.replay_ratio=0.25",
    "agent.batch_size=8",
    "agent.target_update_period=5",
    "agent.epsilon_decay_steps=100",
    "log_every_steps=20",
    "eval.episodes=0",
]


def _config(*extra: str) -> DQNConfig:
    return load_config(DQNConfig, ROOT / "configs" / "dqn_atari100k.yaml", [*SMALL, *extra])


def test_train_script_end_to_end(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train_dqn.py"),
        "--config",
        str(ROOT / "configs" / "dqn_atari100k.yaml"),
        *SMALL,
        "total_steps=300",
        "name=e2e",
        f"runs_dir={tmp_path}",
        "eval.episodes=1",
        "eval.num_envs=1",
        "eval.every_steps=300",
        "eval.max_episode_frames=400",
        "eval.video_max_steps=30",
    ]
    env = {**os.environ, "LODESTAR_NO_PROGRESS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "e2e"
    assert "trained 300 steps" in done.stdout and "tensorboard --logdir" in done.stdout
    assert (run / "config.yaml").is_file() and CheckpointManager(run / "checkpoints").latest() is not None
    acc = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in [
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/clipped_episodic_return",
        "charts/epsilon",
        "charts/steps_per_second",
        "charts/updates_per_second",
        "charts/replay_size",
        "losses/loss",
        "losses/q_mean",
        "eval/episodic_return_mean",
    ]:
        assert tag in scalars, tag
    assert "eval/video" in acc.Tags()["images"]
    assert any(tag.startswith("config") for tag in acc.Tags()["tensors"])
    # Pong rewards are -1/+1 and episodes here are cut at 60 steps: returns stay within the step count
    assert all(abs(e.value) <= 60 for e in acc.Scalars("charts/episodic_return"))


def _stop_at(step: int):
    def callback(trainer: DQNTrainer) -> None:
        if trainer.collector.global_step >= step:
            trainer.stop_requested = True

    return callback


@pytest.mark.parametrize("extra", [[], ["replay.prioritized=false", "agent.n_step=1", "agent.augment=none"]])
def test_resume_is_bit_identical(tmp_path, extra):
    config = _config("total_steps=160", *extra)
    straight = DQNTrainer(config, tmp_path / "straight")
    straight.train()

    first = DQNTrainer(config, tmp_path / "resumed", callbacks=[_stop_at(90)])
    assert first.train().interrupted
    second = DQNTrainer(config, tmp_path / "resumed")
    second.restore()
    assert second.collector.global_step == 90
    second.train()

    assert second.agent.updates == straight.agent.updates > 0
    for name in ("q_network", "target_network"):
        a = getattr(straight.agent, name).state_dict()
        b = getattr(second.agent, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(straight.collector.obs, second.collector.obs)


def test_training_time_adds_up_over_resumed_segments(tmp_path):
    config = _config("total_steps=120")
    first = DQNTrainer(config, tmp_path / "run", callbacks=[_stop_at(60)])
    first_seconds = first.train().train_seconds
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    assert first_seconds is not None and first_seconds > 0
    assert manager.load()["train_seconds"] == pytest.approx(first_seconds, abs=0.5)

    second = DQNTrainer(config, tmp_path / "run")
    second.restore()
    started = time.perf_counter()
    total = second.train().train_seconds
    assert first_seconds < total <= first_seconds + (time.perf_counter() - started)
    assert manager.load()["step"] == 120 and manager.load()["train_seconds"] == pytest.approx(total, abs=0.5)

    # A checkpoint written before the time was recorded: the run's total is unknown, not understated.
    legacy = manager.load()
    del legacy["train_seconds"]
    torch.save(legacy, manager.latest())
    third = DQNTrainer(_config("total_steps=130"), tmp_path / "run")
    third.restore()
    assert third.train().train_seconds is None


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = DQNTrainer(_config("total_steps=200", "checkpoint_every_steps=60"), tmp_path / "run")
    real_update = trainer.agent.update

    def poisoned(batch, generator=None):
        out = real_update(batch, generator)
        if trainer.collector.global_step >= 100:
            out["loss"] = torch.tensor(float("nan"))
        return out

    trainer.agent.update = poisoned
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at step 10\d \(update \d+\); stopped without saving"
    ):
        trainer.train()
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    assert manager.load()["step"] == 60
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
    trainer = DQNTrainer(config, "unused")
    epsilons = []
    real_act = trainer.agent.act
    trainer.agent.act = lambda obs, eps, gen=None: (epsilons.append(eps), real_act(obs, eps, gen))[1]
    returns = evaluation.evaluate(trainer.agent, config, episodes=3, seed=0, num_envs=2)
    assert len(returns) == 3
    assert created["repeat_action_probability"] == 0.25 and created["noop_max"] == 0
    assert created["max_episode_frames"] == 200 and created["num_envs"] == 2
    assert set(epsilons) == {0.05}
    # episodes are full games capped by frames only: 200 frames / frameskip 4 = 50 agent steps each
    assert all(-50 <= r <= 50 for r in returns)


def test_evaluate_script_reports_scores_and_aggregates(tmp_path):
    runs = []
    for seed in (1, 2):
        config = _config("total_steps=60", f"seed={seed}", "eval.max_episode_frames=160", "save_replay=false")
        trainer = DQNTrainer(config, tmp_path / f"pong-s{seed}")
        trainer.train()
        runs.append(str(tmp_path / f"pong-s{seed}"))
    out = tmp_path / "eval.json"
    video = tmp_path / "eval.gif"
    cmd = [sys.executable, str(ROOT / "scripts" / "evaluate_dqn.py"), "--games", *runs, "--episodes", "2"]
    cmd += ["--num-envs", "2", "--protocol", "config", "--out", str(out), "--video", str(video)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HNS iqm" in done.stdout and "pong" in done.stdout
    result = json.loads(out.read_text())
    assert [r["episodes"] for r in result["results"]] == [2, 2]
    assert all(r["protocol"] == "config" and r["epsilon"] == 0.001 for r in result["results"])
    # 160 frames / frameskip 4 = 40 agent steps per episode: at most 40 points either way in Pong
    assert all(abs(x) <= 40 for r in result["results"] for x in r["returns"])
    low, high = result["aggregate"]["iqm"]["ci95"]
    assert low <= result["aggregate"]["iqm"]["value"] <= high
    assert Path(result["results"][0]["video"]).is_file()
    missing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate_dqn.py"), "--checkpoint", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
