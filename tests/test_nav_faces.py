"""The navigation simulator through the generic gymnasium and Stable-Baselines3 faces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import lodestar.envs.gym_api  # noqa: F401 - registers the Lodestar ids
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.envs.sb3 import SB3VecEnvAdapter


def test_gymnasium_make_and_sb3_adapter_step_the_navigation_env(grid_dataset):
    data = grid_dataset
    env = gym.make("Lodestar/Nav-v0", dataset=str(data), split="train", features="random", seed=0)
    first, _ = env.reset(seed=0)
    assert isinstance(first, dict) and env.observation_space.contains(first)
    teacher = int(first["teacher_action"])
    obs, reward, terminated, truncated, _ = env.step(teacher)
    # the same episode goes on: its instruction is equal, but in arrays of its own
    assert not terminated and np.array_equal(obs["instr_ids"], first["instr_ids"])
    assert not any(np.shares_memory(obs[key], first[key]) for key in obs)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.n - 1)
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
