"""Stable-Baselines3 adapter: SB3 conventions round-trip, and SB3 algorithms train on real ALE games."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecFrameStack

from lodestar.envs.atari import AtariVecEnv
from lodestar.envs.sb3 import SB3VecEnvAdapter
from tests.countdown_env import CountdownEnv
from tests.cue_env import CueEnv


def test_round_trip_matches_the_protocol_env() -> None:
    # Env 0 terminates every 2 steps; envs 1 and 2 are truncated by the 3-step limit.
    reference = CountdownEnv([2, 50, 50], limit=3)
    adapter = SB3VecEnvAdapter(CountdownEnv([2, 50, 50], limit=3))
    np.testing.assert_array_equal(adapter.reset(), reference.reset().numpy())
    for step in range(1, 7):
        actions = np.array([step % 3, 1, 2])
        obs, reward, terminated, truncated, info = reference.step(torch.from_numpy(actions))
        adapter.step_async(actions)
        sb3_obs, sb3_reward, dones, infos = adapter.step_wait()
        np.testing.assert_array_equal(sb3_obs, obs.numpy())
        assert sb3_reward.dtype == np.float32
        np.testing.assert_array_equal(sb3_reward, reward.numpy())
        np.testing.assert_array_equal(dones, (terminated | truncated).numpy())
        for i, done in enumerate(dones):
            if not done:
                assert infos[i] == {}
                continue
            np.testing.assert_array_equal(infos[i]["terminal_observation"], info["final_obs"][i].numpy())
            assert infos[i]["TimeLimit.truncated"] == bool(truncated[i] and not terminated[i])
            assert infos[i]["episode"]["r"] == float(info["episode_return"][i])
            assert infos[i]["episode"]["l"] == int(info["episode_length"][i])
    # Env 0 terminated at steps 2, 4, 6 (never a time-limit cut); env 1 was truncated at 3 and 6.
    assert [infos[0]["TimeLimit.truncated"], infos[1]["TimeLimit.truncated"]] == [False, True]


def test_atari_round_trip_and_terminal_observation() -> None:
    adapter = SB3VecEnvAdapter(AtariVecEnv("Pong", 2, device="cpu", seed=0, max_episode_frames=40))
    assert adapter.observation_space.shape == (4, 84, 84) and adapter.action_space.n == 6
    first = adapter.reset()
    assert first.shape == (2, 4, 84, 84) and first.dtype == np.uint8
    for _ in range(10):
        previous = adapter.step(np.zeros(2, dtype=np.int64))
    obs, _, dones, infos = previous
    assert dones.all()
    np.testing.assert_array_equal(obs, first)
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == (4, 84, 84)
        assert not np.array_equal(info["terminal_observation"], obs[0])
        assert info["episode"]["l"] == 10


def test_seed_applies_to_the_next_reset_only() -> None:
    adapter = SB3VecEnvAdapter(AtariVecEnv("Breakout", 2, device="cpu"))
    direct = AtariVecEnv("Breakout", 2, device="cpu")
    assert adapter.seed(11) == [11, 12]
    np.testing.assert_array_equal(adapter.reset(), direct.reset(seed=11).numpy())
    actions = np.array([1, 3])
    for _ in range(40):
        adapter.step_async(actions)
        obs = adapter.step_wait()[0]
        expected = direct.step(torch.from_numpy(actions))[0]
    np.testing.assert_array_equal(obs, expected.numpy())
    assert adapter._seeds == [None, None]


def test_attribute_and_method_access() -> None:
    env = CountdownEnv([2, 3])
    adapter = SB3VecEnvAdapter(env)
    assert adapter.render_mode is None
    assert adapter.get_attr("limit") == [1000, 1000]
    assert adapter.get_attr("limit", indices=1) == [1000]
    adapter.set_attr("limit", 7)
    assert env.limit == 7
    assert adapter.env_method("_obs", indices=[0])[0].shape == (2, 3)
    assert adapter.env_is_wrapped(Monitor) == [True, True]
    assert adapter.env_is_wrapped(VecFrameStack) == [False, False]
    with pytest.raises(IndexError, match="env index 5"):
        adapter.get_attr("limit", indices=[5])
    with pytest.raises(AttributeError):
        adapter.get_attr("no_such_attribute")
    with pytest.raises(RuntimeError, match="step_async"):
        adapter.step_wait()
    with pytest.raises(NotImplementedError, match="cannot render"):
        adapter.get_images()


def test_evaluate_policy_uses_raw_episode_statistics() -> None:
    # Rewards are action + 1 (up to 3 per step): a clipped or per-life count would differ.
    adapter = SB3VecEnvAdapter(CountdownEnv([4, 4]))
    model = PPO("MlpPolicy", adapter, n_steps=8, batch_size=8, seed=0, device="cpu")
    returns, lengths = evaluate_policy(model, adapter, n_eval_episodes=4, return_episode_rewards=True)
    assert lengths == [4, 4, 4, 4]
    assert all(4.0 <= r <= 12.0 for r in returns)


def test_sb3_dqn_trains_on_an_ale_game() -> None:
    # A smoke test of SB3's CNN DQN on ALE through the adapter (too few steps to learn a game;
    # learning is checked on the cue env below).
    adapter = SB3VecEnvAdapter(AtariVecEnv("Pong", 2, device="cpu", seed=0, max_episode_frames=400))
    model = DQN(
        "CnnPolicy",
        adapter,
        buffer_size=400,
        learning_starts=100,
        train_freq=4,
        batch_size=16,
        seed=0,
        device="cpu",
    )
    model.learn(total_timesteps=300)
    assert model.num_timesteps >= 300
    # Episodes of 100 agent steps ended and were logged the Monitor way.
    assert len(model.ep_info_buffer) >= 2
    assert all(info["l"] == 100 for info in model.ep_info_buffer)


def test_sb3_ppo_trains_on_an_ale_game() -> None:
    # A smoke test of SB3's CNN PPO on ALE through the adapter (learning: the cue env below).
    adapter = SB3VecEnvAdapter(AtariVecEnv("Breakout", 2, device="cpu", seed=0))
    model = PPO("CnnPolicy", adapter, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    actions, _ = model.predict(adapter.reset(), deterministic=True)
    assert actions.shape == (2,)


def _random_policy_returns(adapter: SB3VecEnvAdapter, episodes: int) -> list[float]:
    rng = np.random.default_rng(0)
    returns: list[float] = []
    adapter.reset()
    while len(returns) < episodes:
        _, _, dones, infos = adapter.step(rng.integers(0, adapter.action_space.n, size=adapter.num_envs))
        returns += [info["episode"]["r"] for info, done in zip(infos, dones, strict=True) if done]
    return returns[:episodes]


@pytest.mark.parametrize("algorithm", ["dqn", "ppo"])
def test_sb3_learns_a_cued_choice_through_the_adapter(algorithm: str) -> None:
    # Reward 1 for naming the cue shown, 8 steps an episode: chance returns 4, reading the cue returns 8.
    # SB3 gets observations, rewards and episode ends only through the adapter, so a policy that
    # reaches 8 shows they arrive intact and in step.
    adapter = SB3VecEnvAdapter(CueEnv(4, num_cues=2, length=8))
    if algorithm == "dqn":
        model = DQN(
            "MlpPolicy",
            adapter,
            learning_starts=200,
            train_freq=1,
            target_update_interval=100,
            exploration_fraction=0.3,
            learning_rate=1e-3,
            batch_size=32,
            seed=0,
            device="cpu",
        )
        model.learn(total_timesteps=1_000)
    else:
        model = PPO("MlpPolicy", adapter, n_steps=32, batch_size=64, learning_rate=3e-3, seed=0, device="cpu")
        model.learn(total_timesteps=1_024)
    learned, _ = evaluate_policy(model, adapter, n_eval_episodes=40, return_episode_rewards=True)
    chance = _random_policy_returns(adapter, 40)
    assert 3.0 <= np.mean(chance) <= 5.0  # the baseline is what chance gives (8 steps x 1/2)
    assert np.mean(learned) >= 7.5 and np.mean(learned) >= np.mean(chance) + 3.0
