"""The typed schema of a DQN run (``configs/dqn_*.yaml`` are instances of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lodestar.runtime.config import require


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
    # Exact resume replays, per env, the actions since its last seeded episode start: an ending episode
    # is restarted from a seed of its own once the last one is this many agent steps back (0: every
    # episode). Each seeded start costs ale-py a ROM reload (~0.1 s), so this trades training speed
    # against resume time; see lodestar.envs.atari.
    reseed_after_steps: int = 2000

    def __post_init__(self) -> None:
        require(self.num_envs >= 1, "env.num_envs", ">= 1", self.num_envs)
        require(self.num_threads >= 0, "env.num_threads", ">= 0 (0: ale-py's default)", self.num_threads)
        require(
            0.0 <= self.repeat_action_probability <= 1.0,
            "env.repeat_action_probability",
            "in [0, 1]",
            self.repeat_action_probability,
        )
        require(self.frameskip >= 1, "env.frameskip", ">= 1", self.frameskip)
        require(self.noop_max >= 0, "env.noop_max", ">= 0", self.noop_max)
        require(self.max_episode_frames >= 1, "env.max_episode_frames", ">= 1", self.max_episode_frames)
        require(self.reseed_after_steps >= 0, "env.reseed_after_steps", ">= 0", self.reseed_after_steps)


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
    # Speed levers of the update (measured by ``scripts/benchmark.py dqn-speed``); each one leaves its
    # arithmetic as it is, up to float rounding (bfloat16: to its precision).
    # Adam's kernels: "fused" (one pass over all parameters), "foreach" (one op per step for all of
    # them) or "for_loop" (PyTorch's CPU default, several ops per parameter tensor).
    adam_impl: Literal["fused", "foreach", "for_loop"] = "fused"
    # Convolution weights and input frames in channels-last memory layout (oneDNN's and cuDNN's own).
    channels_last: bool = True
    # torch.compile the update's forward and backward passes: a few percent per update on CPU for
    # minutes of compiling, so it pays only in long runs.
    compile: bool = False
    # Autocast of the forward passes: bfloat16 pays on CUDA and on CPUs with native bfloat16
    # (AVX-512 BF16 or AMX); elsewhere it is emulated and slower than float32.
    precision: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        require(self.lr > 0.0, "agent.lr", "> 0", self.lr)
        require(self.adam_eps > 0.0, "agent.adam_eps", "> 0", self.adam_eps)
        require(0.0 < self.gamma <= 1.0, "agent.gamma", "in (0, 1]", self.gamma)
        require(self.batch_size >= 1, "agent.batch_size", ">= 1", self.batch_size)
        require(self.n_step >= 1, "agent.n_step", ">= 1", self.n_step)
        require(
            self.max_grad_norm is None or self.max_grad_norm > 0.0,
            "agent.max_grad_norm",
            "> 0 (or null: no clipping)",
            self.max_grad_norm,
        )
        require(
            self.target_update_period >= 1, "agent.target_update_period", ">= 1", self.target_update_period
        )
        require(0.0 < self.tau <= 1.0, "agent.tau", "in (0, 1]", self.tau)
        for key in ("epsilon_start", "epsilon_end"):
            value = getattr(self, key)
            require(0.0 <= value <= 1.0, f"agent.{key}", "in [0, 1]", value)
        require(self.epsilon_decay_steps >= 0, "agent.epsilon_decay_steps", ">= 0", self.epsilon_decay_steps)


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

    def __post_init__(self) -> None:
        require(self.capacity >= 1, "replay.capacity", ">= 1", self.capacity)
        require(self.learning_starts >= 0, "replay.learning_starts", ">= 0", self.learning_starts)
        # A ratio of 0 or less would train without a single update.
        require(self.replay_ratio > 0.0, "replay.replay_ratio", "> 0", self.replay_ratio)
        require(self.alpha >= 0.0, "replay.alpha", ">= 0", self.alpha)
        for key in ("beta_start", "beta_end"):
            value = getattr(self, key)
            require(0.0 <= value <= 1.0, f"replay.{key}", "in [0, 1]", value)
        require(self.priority_eps > 0.0, "replay.priority_eps", "> 0", self.priority_eps)


@dataclass
class EvalConfig:
    every_steps: int = 250_000
    episodes: int = 10
    epsilon: float = 0.001
    num_envs: int = 8
    video: bool = True
    video_max_steps: int = 500
    # Standard evaluation protocol (ALE/<Game>-v5): sticky actions, no no-op starts, full games.
    repeat_action_probability: float = 0.25
    noop_max: int = 0
    max_episode_frames: int = 108_000

    def __post_init__(self) -> None:
        require(self.every_steps >= 0, "eval.every_steps", ">= 0 (0: only at the end)", self.every_steps)
        require(self.episodes >= 0, "eval.episodes", ">= 0 (0: no evaluation)", self.episodes)
        require(0.0 <= self.epsilon <= 1.0, "eval.epsilon", "in [0, 1]", self.epsilon)
        require(self.num_envs >= 1, "eval.num_envs", ">= 1", self.num_envs)
        require(self.video_max_steps >= 1, "eval.video_max_steps", ">= 1", self.video_max_steps)
        require(
            0.0 <= self.repeat_action_probability <= 1.0,
            "eval.repeat_action_probability",
            "in [0, 1]",
            self.repeat_action_probability,
        )
        require(self.noop_max >= 0, "eval.noop_max", ">= 0", self.noop_max)
        require(self.max_episode_frames >= 1, "eval.max_episode_frames", ">= 1", self.max_episode_frames)


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
    # Make each loop iteration's gradient updates while the emulators step (ale-py's C++ threads):
    # the updates then sample the replay buffer as it was before that step's transitions.
    overlap_env_step: bool = True
    env: AtariEnvConfig = field(default_factory=AtariEnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        require(self.total_steps >= 1, "total_steps", ">= 1", self.total_steps)
        require(self.torch_threads >= 0, "torch_threads", ">= 0 (0: torch's default)", self.torch_threads)
        require(self.log_every_steps >= 0, "log_every_steps", ">= 0 (0: never)", self.log_every_steps)
        require(
            self.checkpoint_every_steps >= 0,
            "checkpoint_every_steps",
            ">= 0 (0: only the final checkpoint)",
            self.checkpoint_every_steps,
        )
        require(self.keep_checkpoints >= 1, "keep_checkpoints", ">= 1", self.keep_checkpoints)
        # Otherwise the first fails only once learning starts, the second as a buffer error naming
        # neither key.
        capacity, batch_size, num_envs = self.replay.capacity, self.agent.batch_size, self.env.num_envs
        if capacity < batch_size:
            raise ValueError(
                f"replay.capacity ({capacity}) must be at least agent.batch_size ({batch_size}): "
                "a batch is drawn from the transitions the buffer holds"
            )
        if capacity % num_envs:
            raise ValueError(
                f"replay.capacity ({capacity}) must be a multiple of env.num_envs ({num_envs}): "
                "every env stream gets capacity / num_envs slots"
            )


# Keys that shape the network or the meaning of stored data; a checkpoint must agree on them.
ARCHITECTURE_KEYS = [
    "env.game",
    "env.full_action_space",
    "agent.dueling",
    "agent.n_step",
    "replay.prioritized",
]
