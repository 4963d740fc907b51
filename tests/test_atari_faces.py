"""``Lodestar/Atari-v0`` as other libraries meet it: a missing ``game=``, ``rgb_array`` rendering,
Stable-Baselines3's ``make_vec_env``, and the README's SB3 example (run as written)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env

from lodestar.envs.gym_api import ATARI_ID, atari_frame

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("make", [gym.make, lambda env_id: gym.make_vec(env_id, num_envs=2)])
def test_a_missing_game_is_an_error_naming_it_and_how_to_list_games(make) -> None:
    with pytest.raises(TypeError, match=r"Lodestar/Atari-v0 needs game=<name>.*game='Pong'") as raised:
        make(ATARI_ID)
    assert "roms.get_all_rom_ids()" in str(raised.value)


def test_rgb_array_renders_the_newest_observation_frame() -> None:
    env = gym.make(ATARI_ID, game="Pong", render_mode="rgb_array")
    assert env.metadata["render_modes"] == ["rgb_array"] and env.metadata["render_fps"] == 15.0
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.render()  # (gymnasium's order-enforcing wrapper refuses before it too)
    obs, _ = env.reset(seed=0)
    for _ in range(30):  # the ball is served and the paddles move
        obs, *_ = env.step(env.action_space.sample())
    frame = env.render()
    assert frame.shape == (84, 84, 3) and frame.dtype == np.uint8
    assert all(np.array_equal(frame[..., c], obs[-1]) for c in range(3))
    env.close()
    # gymnasium's own checker, its render checks included
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(ATARI_ID, game="Pong", render_mode="rgb_array").unwrapped)
    # the game-time rate follows the frameskip: 60 emulator frames per second
    assert (
        gym.make(ATARI_ID, game="Pong", frameskip=2, render_mode="rgb_array").metadata["render_fps"] == 30.0
    )
    # without a render mode nothing is drawn
    plain = gym.make(ATARI_ID, game="Pong")
    plain.reset(seed=0)
    assert plain.render() is None


def test_make_vec_renders_one_frame_per_env() -> None:
    vec = gym.make_vec(ATARI_ID, num_envs=3, game="Pong", render_mode="rgb_array")
    obs, _ = vec.reset(seed=0)
    obs, *_ = vec.step(vec.action_space.sample())
    frames = vec.render()
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, atari_frame(obs[i]))
    vec.close()
    with pytest.raises(ValueError, match="render_mode='human' is not supported.*renders only 'rgb_array'"):
        gym.make_vec(ATARI_ID, num_envs=2, game="Pong", render_mode="human")


def test_sb3_make_vec_env_builds_rendering_atari_envs() -> None:
    # make_vec_env asks gymnasium.make for render_mode="rgb_array" and wraps each env in a Monitor.
    env = make_vec_env(ATARI_ID, n_envs=2, env_kwargs={"game": "Pong"}, seed=0)
    assert env.render_mode == "rgb_array"
    obs = env.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    obs, reward, done, infos = env.step(np.array([0, 1]))
    assert reward.shape == (2,) and not done.any() and "lives" in infos[0]
    frames = env.get_images()
    assert [f.shape for f in frames] == [(84, 84, 3), (84, 84, 3)]
    np.testing.assert_array_equal(frames[1][..., 0], obs[1, -1])
    env.close()


def _readme_sb3_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    (example,) = [block for block in blocks if 'make_sb3_env("Lodestar/Atari-v0"' in block]
    return example


def test_the_readme_sb3_example_runs_as_written() -> None:
    namespace: dict = {}
    exec(compile(_readme_sb3_example(), str(README), "exec"), namespace)
    model, frames = namespace["model"], namespace["frames"]
    assert model.num_timesteps >= 64
    assert len(frames) == 2 and all(f.shape == (84, 84, 3) for f in frames)
