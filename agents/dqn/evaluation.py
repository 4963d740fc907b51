"""Evaluation under the standard protocol, and full-colour rollout videos.

Evaluation plays full games (all lives, raw rewards) on separate vector envs with the eval
protocol of the config (``ALE/<Game>-v5`` by default: sticky actions 0.25, 108k-frame cap) and a
small epsilon. Every env plays a fixed quota of episodes, so short episodes are not over-counted.

Videos come from one ``gymnasium.make(..., render_mode="rgb_array")`` env with the same
preprocessing (ale-py's vector env cannot render): one full-colour frame per agent step, from the
start of an episode until it ends or ``max_steps``, scaled up by a whole factor (nearest neighbour)
so the 160x210 screen is not a thumbnail, and played back in real game time (:func:`video_fps`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import DQNConfig
from lodestar.envs.atari import AtariVecEnv, atari_env_id
from lodestar.envs.base import tensor_observation
from lodestar.envs.gym_api import ALE_FRAME_RATE
from lodestar.runtime.checkpoint import CheckpointError, CheckpointManager
from lodestar.runtime.config import from_dict
from lodestar.runtime.progress import progress

# Videos are scaled up until they are at least this many pixels high (Atari's 210 -> 420).
VIDEO_MIN_HEIGHT = 400


def _bar(show: bool, **kwargs: Any) -> tqdm:
    """The repo's progress bar, or a silent one (the training loop already shows its own)."""
    return progress(**kwargs) if show else tqdm(disable=True)


def evaluate(
    agent: DQNAgent,
    config: DQNConfig,
    episodes: int,
    seed: int,
    epsilon: float | None = None,
    num_envs: int | None = None,
    show_progress: bool = False,
) -> list[float]:
    """Raw returns of ``episodes`` full games played epsilon-greedily (``config.eval.epsilon``).

    ``show_progress``: a bar of finished episodes that also counts agent steps, refreshed every
    second, since one full game can take minutes.
    """
    e = config.eval
    epsilon = e.epsilon if epsilon is None else epsilon
    num_envs = max(1, min(num_envs or e.num_envs, episodes))
    env = AtariVecEnv(
        config.env.game,
        num_envs,
        device=agent.device,
        seed=seed,
        frameskip=config.env.frameskip,
        repeat_action_probability=e.repeat_action_probability,
        max_episode_frames=e.max_episode_frames,
        noop_max=e.noop_max,
        full_action_space=config.env.full_action_space,
    )
    quota = torch.full((num_envs,), episodes // num_envs, dtype=torch.long)
    quota[: episodes % num_envs] += 1
    finished = torch.zeros(num_envs, dtype=torch.long)
    returns: list[float] = []
    generator = torch.Generator(device=agent.device).manual_seed(seed)
    bar = _bar(show_progress, total=episodes, desc=f"evaluate {env.game}", unit="episode")
    steps, shown_at = 0, time.monotonic()
    try:
        obs = tensor_observation(env.reset(seed=seed))
        while len(returns) < episodes:
            next_obs, _, terminated, truncated, info = env.step(agent.act(obs, epsilon, generator))
            obs = tensor_observation(next_obs)
            steps += num_envs
            done = (terminated | truncated).cpu()
            for index in torch.nonzero(done).flatten().tolist():
                if finished[index] < quota[index]:
                    finished[index] += 1
                    returns.append(float(info["episode_return"][index]))
                    bar.update(1)
            if time.monotonic() - shown_at >= 1.0:
                # Episodes finish rarely; the step count shows the games are running.
                bar.set_postfix_str(f"{steps} agent steps", refresh=True)
                shown_at = time.monotonic()
    finally:
        bar.close()
        env.close()
    return returns


def make_video_env(config: DQNConfig, seed: int) -> gym.Env:
    """One ``render_mode="rgb_array"`` env with the same preprocessing as the vector env."""
    e = config.eval
    env = gym.make(
        atari_env_id(config.env.game),
        render_mode="rgb_array",
        frameskip=1,
        repeat_action_probability=e.repeat_action_probability,
        full_action_space=config.env.full_action_space,
        max_num_frames_per_episode=e.max_episode_frames,
    )
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=e.noop_max, frame_skip=config.env.frameskip, screen_size=84, grayscale_obs=True
    )
    env = gym.wrappers.FrameStackObservation(env, 4)
    env.reset(seed=seed)
    return env


def video_fps(config: DQNConfig) -> float:
    """Frames per second that play a video of :func:`record_video` in real game time."""
    return ALE_FRAME_RATE / config.env.frameskip


def _render(env: gym.Env) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"the video env must render rgb_array frames, got {type(frame).__name__}")
    return frame


def _upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour scaling by a whole factor keeps Atari's hard pixel edges."""
    return frame.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else frame


def record_video(
    agent: DQNAgent,
    config: DQNConfig,
    seed: int,
    max_steps: int = 500,
    min_height: int = VIDEO_MIN_HEIGHT,
    show_progress: bool = False,
) -> np.ndarray:
    """Play one episode from its start, up to ``max_steps`` agent steps; its frames ``[T, H, W, 3]``.

    One full-colour frame per agent step (the reset screen first), each scaled up by the smallest
    whole factor that makes it at least ``min_height`` pixels high; play them at :func:`video_fps`.
    """
    env = make_video_env(config, seed)
    generator = torch.Generator(device=agent.device).manual_seed(seed)
    bar = _bar(show_progress, total=max_steps, desc="record video", unit="step")
    try:
        obs, _ = env.reset(seed=seed)
        first = _render(env)
        scale = max(1, math.ceil(min_height / first.shape[0]))
        frames = [_upscale(first, scale)]
        for _ in range(max_steps):
            batch = torch.as_tensor(np.asarray(obs), device=agent.device).unsqueeze(0)
            action = int(agent.act(batch, config.eval.epsilon, generator)[0])
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(_upscale(_render(env), scale))
            bar.update(1)
            if terminated or truncated:
                break
    finally:
        bar.close()
        env.close()
    return np.stack(frames)


def load_agent(path: str | Path, device: torch.device) -> tuple[DQNAgent, DQNConfig]:
    """A DQN agent and its config from a checkpoint file or a run directory (newest checkpoint)."""
    path = Path(path)
    manager = CheckpointManager(path / "checkpoints" if path.is_dir() else path.parent)
    state = manager.load(None if path.is_dir() else path, map_location=device)
    config = from_dict(DQNConfig, state["config"])
    q_state = state["agent"]["q_network"]
    last_bias = "advantage.2.bias" if config.agent.dueling else "head.2.bias"
    if last_bias not in q_state:
        raise CheckpointError(f"{path}: no '{last_bias}' in the saved Q-network; not a DQN checkpoint?")
    agent = DQNAgent(int(q_state[last_bias].shape[0]), config.agent, device)
    agent.load_state_dict(state["agent"], str(path))
    return agent, config
