"""The navigation simulator through the generic gymnasium and Stable-Baselines3 faces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import envs.gym_api  # noqa: F401 - registers the Lodestar ids
from envs.nav.simulator import NavVecEnv
from envs.sb3 import SB3VecEnvAdapter
from tests.nav_fixtures import make_dataset


def test_gymnasium_make_and_sb3_adapter_step_the_navigation_env(tmp_path):
    data = make_dataset(tmp_path / "data")
    env = gym.make("Lodestar/Nav-v0", dataset=str(data), split="train", features="random", seed=0)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, dict) and env.observation_space.contains(obs)
    stop = env.action_space.n - 1
    obs, reward, terminated, truncated, _ = env.step(stop)
    assert terminated and not truncated and isinstance(reward, float)
    env.close()

    vec = NavVecEnv(data, "train", 3, features="random", device="cpu", seed=0)
    adapter = SB3VecEnvAdapter(vec)
    first = adapter.reset()
    assert set(first) == set(vec.single_observation_space.spaces) and first["cand_mask"].shape[0] == 3
    teacher = first["teacher_action"].astype(np.int64)
    for _ in range(10):
        obs, _, dones, infos = adapter.step(teacher)
        teacher = obs["teacher_action"].astype(np.int64)
        for done, info in zip(dones, infos, strict=True):
            if done:
                assert "terminal_observation" in info and info["episode"]["r"] > 0
    adapter.close()
