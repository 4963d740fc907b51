"""``dqn-speed``: DQN training steps/s, ours vs Stable-Baselines3's DQN with identical settings.

Both train on Breakout (frameskip 4, sticky actions 0.25), batch 32, one update per 4 agent steps,
100k replay, the same learning-starts, Huber loss, Adam lr 1e-4, target copy every 1,000 updates,
and are timed over the same number of agent steps after learning starts. The compute bound is
``4 / (time of one Nature-CNN update with batch 32)``, measured here with the same network.
"""

from __future__ import annotations

import tempfile
import time

import torch

from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import AgentConfig, DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.config import load_config

GAME = "Breakout"
UPDATE_EVERY = 4


class _Stopwatch:
    """Trainer callback: time from the first step at/after ``start_step`` to the last step."""

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.start: tuple[float, int] | None = None
        self.end: tuple[float, int] | None = None

    def __call__(self, trainer: DQNTrainer) -> None:
        now, step = time.perf_counter(), trainer.collector.global_step
        if self.start is None and step >= self.start_step:
            self.start = (now, step)
        self.end = (now, step)

    def rate(self) -> float:
        assert self.start is not None and self.end is not None
        return (self.end[1] - self.start[1]) / (self.end[0] - self.start[0])


def ours(num_envs: int, learning_starts: int, measured_steps: int) -> float:
    """Agent steps/s of our trainer after learning starts."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "device=cpu",
            f"env.game={GAME}",
            f"env.num_envs={num_envs}",
            f"total_steps={learning_starts + measured_steps}",
            f"replay.learning_starts={learning_starts}",
            "replay.capacity=100000",
            f"replay.replay_ratio={1 / UPDATE_EVERY}",
            "agent.target_update_period=1000",
            "eval.episodes=0",
            "checkpoint_every_steps=0",
            "save_replay=false",
            f"log_every_steps={learning_starts + measured_steps}",
            f"runs_dir={tmp}",
        ]
        config = load_config(DQNConfig, None, overrides)
        stopwatch = _Stopwatch(learning_starts)
        DQNTrainer(config, f"{tmp}/run", callbacks=[stopwatch]).train()
        return stopwatch.rate()


def stable_baselines3(learning_starts: int, measured_steps: int) -> float:
    """Agent steps/s of SB3's DQN("CnnPolicy") on the same game and settings."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    class Stopwatch(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.marks: list[tuple[float, int]] = []

        def _on_step(self) -> bool:
            if self.num_timesteps >= learning_starts:
                self.marks.append((time.perf_counter(), self.num_timesteps))
            return True

    # frameskip=1 in the ALE env because SB3's AtariWrapper skips 4 frames itself (v5 + wrapper = 16)
    env = make_atari_env(
        "ale_py:ALE/Breakout-v5",  # the module prefix registers the ALE ids
        n_envs=1,
        seed=0,
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25},
    )
    env = VecFrameStack(env, n_stack=4)
    model = DQN(
        "CnnPolicy",
        env,
        learning_rate=1e-4,
        buffer_size=100_000,
        learning_starts=learning_starts,
        batch_size=32,
        gamma=0.99,
        train_freq=UPDATE_EVERY,
        gradient_steps=1,
        target_update_interval=1000 * UPDATE_EVERY,  # SB3 counts env steps; ours counts updates
        exploration_fraction=0.1,
        max_grad_norm=10.0,
        optimize_memory_usage=False,
        device="cpu",
        seed=0,
        verbose=0,
    )
    stopwatch = Stopwatch()
    model.learn(total_timesteps=learning_starts + measured_steps, callback=stopwatch)
    env.close()
    (t0, s0), (t1, s1) = stopwatch.marks[0], stopwatch.marks[-1]
    return (s1 - s0) / (t1 - t0)


def update_bound(repeats: int) -> float:
    """Steps/s allowed by the update cost alone: one Nature-CNN update per 4 agent steps."""
    agent = DQNAgent(4, AgentConfig(), torch.device("cpu"))

    class Batch:
        obs = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8)
        next_obs = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8)
        action = torch.randint(0, 4, (32,))
        reward = torch.zeros(32)
        discount = torch.full((32,), 0.99)
        weights = torch.ones(32)

    for _ in range(3):
        agent.update(Batch)
    start = time.perf_counter()
    for _ in range(repeats):
        agent.update(Batch)
    seconds_per_update = (time.perf_counter() - start) / repeats
    return UPDATE_EVERY / seconds_per_update


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    learning_starts = int(options.get("learning_starts", 500 if quick else 5_000))
    measured = int(options.get("steps", 400 if quick else 10_000))
    torch.set_num_threads(int(options.get("threads", torch.get_num_threads())))
    bound = update_bound(10 if quick else 50)
    sb3 = stable_baselines3(learning_starts, measured)
    ours_1 = ours(1, learning_starts, measured)
    ours_8 = ours(8, learning_starts, measured)
    name = "dqn-speed"
    figures = [
        Figure(name, "ours_1env_steps_per_s", round(ours_1, 1), "steps/s", "sb3_dqn_cnn", round(sb3, 1), 1.3),
        Figure(name, "ours_8env_steps_per_s", round(ours_8, 1), "steps/s", "sb3_dqn_cnn", round(sb3, 1), 1.3),
        # ratio = fraction of the compute bound reached
        Figure(
            name, "ours_1env_vs_update_bound", round(ours_1, 1), "steps/s", "update_bound", round(bound, 1)
        ),
        Figure(
            name, "ours_8env_vs_update_bound", round(ours_8, 1), "steps/s", "update_bound", round(bound, 1)
        ),
        # How close SB3 itself gets to the bound: 1.3x SB3 is only reachable while this ratio is < 1/1.3.
        Figure(name, "sb3_vs_update_bound", round(sb3, 1), "steps/s", "update_bound", round(bound, 1)),
    ]
    report(
        figures,
        f"dqn-speed: {GAME}, batch 32, 1 update / 4 steps, {measured} steps after {learning_starts} "
        f"learning starts (update bound {bound:.1f} steps/s)",
    )
    return figures
