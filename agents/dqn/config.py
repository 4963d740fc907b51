"""The typed schema of a DQN run (``configs/dqn_*.yaml`` are instances of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class AtariEnvConfig:
    """Emulator protocol; defaults are ``ALE/<Game>-v5``."""

    game: str = "Breakout"
    num_envs: int = 1
    num_threads: int = 0
    repeat_action_probability: float = 0.25
    frameskip: int = 4
    noop_max: int = 0
    max_episode_frames: int = 108_000
    full_action_space: bool = False
    # Training only: a lost life ends the bootstrap (the game goes on); evaluation always plays full games.
    terminal_on_life_loss: bool = False


@dataclass
class AgentConfig:
    lr: float = 1e-4
    adam_eps: float = 1e-8
    gamma: float = 0.99
    batch_size: int = 32
    loss: Literal["huber", "mse"] = "huber"
    double: bool = False
    dueling: bool = False
    n_step: int = 1
    max_grad_norm: float | None = 10.0
    # Hard copy every ``target_update_period`` updates when tau == 1, Polyak averaging otherwise.
    target_update_period: int = 1000
    tau: float = 1.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay_steps: int = 1_000_000
    clip_rewards: bool = True
    augment: Literal["none", "random_shift"] = "none"

    def __post_init__(self) -> None:
        if self.n_step < 1:
            raise ValueError(f"agent.n_step must be >= 1, got {self.n_step}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"agent.tau must be in (0, 1], got {self.tau}")
        if self.batch_size < 1:
            raise ValueError(f"agent.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class ReplayConfig:
    capacity: int = 1_000_000
    learning_starts: int = 80_000
    # Gradient updates per agent (env) step, summed over envs: 0.25 = one update per 4 env steps.
    replay_ratio: float = 0.25
    prioritized: bool = False
    alpha: float = 0.5
    beta_start: float = 0.4
    beta_end: float = 1.0
    priority_eps: float = 1e-6


@dataclass
class EvalConfig:
    every_steps: int = 250_000
    episodes: int = 10
    epsilon: float = 0.001
    num_envs: int = 8
    video: bool = True
    video_max_steps: int = 2_000
    # Standard evaluation protocol (ALE/<Game>-v5): sticky actions, no no-op starts, full games.
    repeat_action_probability: float = 0.25
    noop_max: int = 0
    max_episode_frames: int = 108_000


@dataclass
class DQNConfig:
    name: str | None = None
    seed: int = 1
    device: str = "auto"
    torch_threads: int = 0
    total_steps: int = 10_000_000
    log_every_steps: int = 1_000
    checkpoint_every_steps: int = 100_000
    keep_checkpoints: int = 2
    save_replay: bool = True
    runs_dir: str = "runs"
    env: AtariEnvConfig = field(default_factory=AtariEnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")


# Keys that shape the network or the meaning of stored data; a checkpoint must agree on them.
ARCHITECTURE_KEYS = [
    "env.game",
    "env.full_action_space",
    "agent.dueling",
    "agent.n_step",
    "replay.prioritized",
]
