"""Gymnasium faces: registered ids, gymnasium.make / make_vec, generic (dict) observations."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from lodestar.envs.base import StepResult, VecEnv
from lodestar.envs.gym_api import ATARI_ID, GymEnv, GymVectorEnv, register, register_protocol_env
from tests.countdown_env import CountdownEnv


class DictCountdown(VecEnv):
    """CountdownEnv with a dict observation, to exercise the generic conversions."""

    def __init__(self, num_envs: int = 1, length: int = 3) -> None:
        self.inner = CountdownEnv([length + i for i in range(num_envs)])
        self.num_envs = num_envs
        self.device = self.inner.device
        self.single_observation_space = gym.spaces.Dict(
            {
                "state": self.inner.single_observation_space,
                "step": gym.spaces.Box(0, 1000, (), np.int64),
            }
        )
        self.single_action_space = self.inner.single_action_space

    def _wrap(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"state": obs, "step": obs[:, 2].long()}

    def reset(self, seed: int | None = None) -> dict[str, torch.Tensor]:
        return self._wrap(self.inner.reset(seed))

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.inner.step(actions)
        info = {**info, "final_obs": self._wrap(info["final_obs"])}
        return self._wrap(obs), reward, terminated, truncated, info


def _dict_countdown(num_envs: int = 1, length: int = 3) -> DictCountdown:
    return DictCountdown(num_envs, length)


register_protocol_env("LodestarTest/DictCountdown-v0", _dict_countdown)


def test_register_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register()
        register()
    assert ATARI_ID in gym.registry


def test_make_gives_a_checked_single_atari_env() -> None:
    env = gym.make(ATARI_ID, game="Pong", seed=0)
    assert isinstance(env.unwrapped, GymEnv)
    assert env.unwrapped.vec_env.device == torch.device("cpu")  # numpy faces keep frames on the host
    obs, info = env.reset(seed=3)
    assert isinstance(obs, np.ndarray) and obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs) and info == {}
    obs, reward, terminated, truncated, info = env.step(1)
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert set(info) == {"episode_return", "episode_length", "lives", "life_lost", "episode_frame_number"}
    assert info["episode_frame_number"] > 0
    env.close()
    # gymnasium's own checker: spaces, seeding determinism, step/reset signatures.
    check_env(gym.make(ATARI_ID, game="Breakout").unwrapped, skip_render_check=True)


def test_single_env_returns_final_obs_at_episode_end_then_the_reset_one() -> None:
    env = gym.make(ATARI_ID, game="Pong", seed=0, max_episode_frames=40)
    first, _ = env.reset()
    previous = first
    for _ in range(10):
        obs, _, terminated, truncated, info = env.step(0)
        if truncated:
            break
        previous = obs
    assert truncated and not terminated and info["episode_length"] == 10
    # The episode's last observation continues its frame stack; it is not the reset screen.
    np.testing.assert_array_equal(obs[:3], previous[1:])
    assert not np.array_equal(obs, first)
    # reset() without a seed hands out the already auto-reset observation.
    again, _ = env.reset()
    np.testing.assert_array_equal(again, first)


def test_single_env_errors() -> None:
    with pytest.raises(ValueError, match="not supported by AtariVecEnv; use gymnasium.make\\('ALE/Pong-v5'"):
        gym.make(ATARI_ID, game="Pong", render_mode="human")
    with pytest.raises(ValueError, match="make_vec"):
        gym.make(ATARI_ID, game="Pong", num_envs=4)
    with pytest.raises(ValueError, match="num_envs=1"):
        GymEnv(CountdownEnv([3, 4]))
    with pytest.raises(ValueError, match="unknown Atari game 'Pongg'"):
        gym.make(ATARI_ID, game="Pongg")


def test_make_vec_defaults_to_one_batched_env() -> None:
    vec = gym.make_vec(ATARI_ID, num_envs=3, game="Pong", seed=0, max_episode_frames=40)
    assert isinstance(vec.unwrapped, GymVectorEnv)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert vec.observation_space.shape == (3, 4, 84, 84)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
    for _ in range(10):
        last = obs
        obs, reward, terminated, truncated, infos = vec.step(vec.action_space.sample())
    assert reward.dtype == np.float32 and truncated.all() and not terminated.any()
    assert infos["_final_obs"].all()
    np.testing.assert_array_equal(infos["final_obs"][:, :3], last[:, 1:])
    np.testing.assert_array_equal(infos["episode_length"], [10, 10, 10])
    obs, *_, infos = vec.step(vec.action_space.sample())
    assert "final_obs" not in infos
    vec.close()


def test_make_vec_sync_mode_builds_single_envs() -> None:
    vec = gym.make_vec(ATARI_ID, num_envs=2, vectorization_mode="sync", game="Pong")
    assert isinstance(vec, gym.vector.SyncVectorEnv)
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (2, 4, 84, 84)
    obs, reward, *_ = vec.step(np.array([0, 1]))
    assert obs.shape == (2, 4, 84, 84) and reward.shape == (2,)
    vec.close()


def test_dict_observations_become_numpy_dicts() -> None:
    env = gym.make("LodestarTest/DictCountdown-v0", length=2)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    obs, _ = env.reset()
    assert set(obs) == {"state", "step"} and isinstance(obs["state"], np.ndarray)
    obs, reward, terminated, _, info = env.step(2)
    assert reward == 3.0 and not terminated and obs["step"] == 1
    obs, _, terminated, _, info = env.step(0)
    # The final observation of the 2-step episode, not the reset one (step counter 0).
    assert terminated and obs["step"] == 2 and info["episode_return"] == 4.0
    obs, _ = env.reset()
    assert obs["step"] == 0

    vec = gym.make_vec("LodestarTest/DictCountdown-v0", num_envs=2, length=1)
    obs, _ = vec.reset()
    assert obs["state"].shape == (2, 3) and obs["step"].shape == (2,)
    obs, _, terminated, _, infos = vec.step(np.array([0, 0]))
    np.testing.assert_array_equal(terminated, [True, False])
    np.testing.assert_array_equal(infos["_final_obs"], [True, False])
    np.testing.assert_array_equal(infos["final_obs"]["step"], [1, 1])
    np.testing.assert_array_equal(obs["step"], [0, 1])


def test_vector_face_rejects_per_env_seed_lists() -> None:
    vec = GymVectorEnv(CountdownEnv([2, 3]))
    with pytest.raises(TypeError, match="one int"):
        vec.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="no reset options"):
        vec.reset(options={"x": 1})
