"""The tiny DQN run the DQN tests share: Pong, 2 envs, episodes cut at 120 frames (30 agent steps),
learning from env step 40 at one update per 2 loop iterations; and the hand-built replay batch the
DQN learner tests feed to ``DQNAgent.update``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

PRESET = Path(__file__).resolve().parent.parent / "configs" / "dqn_atari100k.yaml"

TINY_PONG = [
    "device=cpu",
    "torch_threads=1",
    "env.game=Pong",
    "env.num_envs=2",
    "env.max_episode_frames=120",
    "replay.learning_starts=40",
    "replay.replay_ratio=0.25",
    "agent.batch_size=8",
    "agent.target_update_period=5",
    "agent.epsilon_decay_steps=100",
    "log_every_steps=20",
    "eval.episodes=0",
]


@dataclass
class Batch:
    """The fields of a replay sample that ``DQNAgent.update`` reads."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    weights: torch.Tensor
