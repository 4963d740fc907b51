"""DQN learns: the Atari-100k preset beats a uniform-random policy on RoadRunner within 10k steps.

RoadRunner is the easy setting: running left eats seeds worth 100 points each, which data-efficient
agents pick up within the first few thousand updates, while random play scores about 10 points.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from lodestar.agents.dqn import evaluation
from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.runtime.config import load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_atari100k_preset_beats_random_play_on_road_runner(tmp_path):
    config = load_config(
        DQNConfig,
        ROOT / "configs" / "dqn_atari100k.yaml",
        [
            "device=cpu",
            "env.game=RoadRunner",
            "total_steps=10000",
            "eval.every_steps=0",
            "eval.episodes=0",
            "checkpoint_every_steps=0",
            "save_replay=false",
            "eval.max_episode_frames=27000",  # 7.5 minutes of play: bounds the test, not the learner
        ],
    )
    trainer = DQNTrainer(config, tmp_path / "run")
    result = trainer.train()
    assert result.steps == 10_000 and result.updates > 8_000
    learned = evaluation.evaluate(trainer.agent, config, episodes=8, seed=123)
    random_play = evaluation.evaluate(trainer.agent, config, episodes=8, seed=123, epsilon=1.0)
    # the same protocol for both: full games, raw rewards, no sticky actions, up to 30 no-ops
    assert statistics.fmean(learned) > statistics.fmean(random_play) + 200, (learned, random_play)
