"""The evaluation commands show progress bars (on stderr): DQN games and video, navigation scoring."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import evaluate_dqn
import evaluate_nav
import pytest
import torch

from lodestar.agents.dqn import evaluation
from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.metrics import write_predictions
from lodestar.runtime.config import load_config
from tests.dqn_runs import PRESET, TINY_PONG


@pytest.fixture
def bars_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress bars on, as on a user's terminal (the test settings silence them)."""
    monkeypatch.delenv("LODESTAR_NO_PROGRESS", raising=False)


def test_evaluate_dqn_shows_episodes_steps_and_video_progress(
    bars_shown, tmp_path: Path, run_script, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        DQNConfig, PRESET, [*TINY_PONG, "total_steps=2", "save_replay=false", "eval.max_episode_frames=120"]
    )
    DQNTrainer(config, tmp_path / "run").train()
    # A clock that moves 2 s per reading: the bar refreshes its agent-step count at every step.
    clock = itertools.count(step=2.0)
    monkeypatch.setattr(evaluation.time, "monotonic", lambda: next(clock))
    argv = ["--checkpoint", tmp_path / "run", "--episodes", "3", "--num-envs", "2", "--protocol", "config"]
    result = run_script(evaluate_dqn.main, *argv, "--video", tmp_path / "eval.gif")
    assert result.returncode == 0, result.stderr
    bars = result.stderr.replace("\r", "\n")
    assert re.search(r"evaluate pong: 100%.* 3/3 .*, \d+ agent steps\]", bars), bars
    # the video: one game (at most 120 frames, 30 agent steps) out of at most eval.video_max_steps
    assert re.search(r"record video: .* ([1-9]|[12]\d|30)/500 ", bars), bars
    assert (tmp_path / "eval.gif").is_file()


def test_evaluation_inside_training_shows_no_bar_of_its_own(bars_shown, capsys) -> None:
    config = load_config(DQNConfig, PRESET, [*TINY_PONG, "eval.max_episode_frames=120"])
    agent = DQNAgent(6, config.agent, torch.device("cpu"))  # Pong's minimal action set
    capsys.readouterr()
    evaluation.evaluate(agent, config, episodes=1, seed=0, num_envs=1)
    evaluation.record_video(agent, config, seed=0, max_steps=5)
    assert capsys.readouterr().err == ""


def test_evaluate_nav_shows_the_instructions_scored(
    bars_shown, grid_dataset: Path, tmp_path: Path, run_script
) -> None:
    dataset = NavDataset(grid_dataset)
    records = [
        {"instr_id": ep.instr_id(k), "trajectory": [[vp, 0.0, 0.0] for vp in ep.path]}
        for ep in dataset.episodes("val_unseen")
        for k in range(len(ep.instructions))
    ]
    write_predictions(tmp_path / "p.json", records)
    argv = ["--data", grid_dataset, "--split", "val_unseen", "--predictions", tmp_path / "p.json", "--json"]
    result = run_script(evaluate_nav.main, *argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{")  # the bar stays on stderr: stdout is the JSON alone
    n = len(records)
    assert "score val_unseen: 100%" in result.stderr and f"{n}/{n}" in result.stderr
