"""The navigation simulator through the generic gymnasium and Stable-Baselines3 faces: spaces the
checkers and SB3 accept, the same on every split, no oracle in the observation, legal sampled actions."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.evaluation import evaluate_policy

import lodestar.envs.gym_api  # noqa: F401 - registers the Lodestar ids
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.envs.sb3 import SB3VecEnvAdapter, make_sb3_env
from tests.follower_fixtures import FEATURE_NAME

NAV_ID = "Lodestar/Nav-v0"
# Everything a policy may observe by default; the teacher action and the distance to the goal are not.
POLICY_INPUTS = {"cand_feats", "cand_mask", "instr_ids", "instr_mask", "step", "pano_feats"}
ORACLE_KEYS = {"teacher_action", "distance"}


def make_nav(data: Path, split: str = "train", **kwargs) -> gym.Env:
    """The single navigation env the documented way: ``gymnasium.make`` of the registered id."""
    kwargs.setdefault("features", "random")
    return gym.make(NAV_ID, dataset=str(data), split=split, seed=0, **kwargs)


def test_gymnasium_make_and_sb3_adapter_step_the_navigation_env(grid_dataset):
    data = grid_dataset
    env = make_nav(data, oracle=True)
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

    vec = NavVecEnv(data, "train", 3, features="random", device="cpu", seed=0, oracle=True)
    adapter = SB3VecEnvAdapter(vec)
    first = adapter.reset()
    assert set(first) == set(vec.single_observation_space.spaces) and first["cand_mask"].shape[0] == 3
    assert first["distance"].shape == (3, 1) and first["teacher_action"].shape == (3,)
    teacher = first["teacher_action"].astype(np.int64)
    for _ in range(10):
        obs, _, dones, infos = adapter.step(teacher)
        teacher = obs["teacher_action"].astype(np.int64)
        for done, info in zip(dones, infos, strict=True):
            if done:
                assert "terminal_observation" in info and info["episode"]["r"] > 0
    adapter.close()


@pytest.mark.parametrize(
    "options", [{}, {"observation": "indices"}, {"oracle": True}, {"observe_pano": False, "max_steps": 4}]
)
def test_gymnasium_and_sb3_checkers_accept_the_navigation_env(grid_dataset, options):
    env = make_nav(grid_dataset, **options)
    # Every Box has a dimension: SB3 flattens each key, and neither checker takes 0-d Boxes.
    for key, space in env.observation_space.spaces.items():
        assert isinstance(space, gym.spaces.Discrete) or len(space.shape) >= 1, key
    gymnasium_check_env(env.unwrapped)  # the raw env, as gymnasium's checker asks
    sb3_check_env(env, warn=False)
    env.close()


def test_default_observation_holds_no_oracle(grid_dataset):
    vec = NavVecEnv(grid_dataset, "train", 2, features="random", device="cpu", seed=0)
    assert set(vec.reset()) == POLICY_INPUTS == set(vec.single_observation_space.spaces)
    env = make_nav(grid_dataset)
    obs, _ = env.reset(seed=0)
    assert set(obs) == POLICY_INPUTS == set(env.observation_space.spaces)
    obs, *_, info = env.step(env.action_space.n - 1)
    assert set(obs) == POLICY_INPUTS and not ORACLE_KEYS & set(info)
    indices = NavVecEnv(grid_dataset, "train", 2, features="random", device="cpu", observation="indices")
    assert not ORACLE_KEYS & set(indices.reset())
    assert set(make_nav(grid_dataset, oracle=True).observation_space.spaces) >= ORACLE_KEYS


def copy_the_teacher(env: gym.Env, episodes: int) -> list[bool]:
    """Success of each of ``episodes`` episodes of a policy that sends ``obs["teacher_action"]``."""
    obs, _ = env.reset(seed=0)
    successes = []
    while len(successes) < episodes:
        obs, _, terminated, truncated, info = env.step(obs["teacher_action"])
        if terminated or truncated:
            successes.append(bool(info["success"]))
            obs, _ = env.reset()
    return successes


def test_copying_the_teacher_needs_the_oracle_option(grid_dataset):
    # With the option, copying the teacher solves every episode: that is why it is off by default.
    assert copy_the_teacher(make_nav(grid_dataset, split="val_seen", oracle=True), 12) == [True] * 12
    with pytest.raises(KeyError, match="teacher_action"):
        copy_the_teacher(make_nav(grid_dataset, split="val_seen"), 1)


@pytest.mark.parametrize("options", [{}, {"observation": "indices"}, {"oracle": True}])
def test_spaces_are_the_same_on_every_split(random_feature_world, options):
    """The tiny world's val_unseen house has fewer neighbours per viewpoint and fewer viewpoints than
    the train houses: the spaces still agree (max degree and index bounds are dataset-wide)."""
    dataset = NavDataset(random_feature_world)
    envs = {
        split: NavVecEnv(dataset, split, 1, features=FEATURE_NAME, device="cpu", **options)
        for split in ("train", "val_seen", "val_unseen")
    }
    split_degree = {s: e.world.neighbour_mask.sum(1).max().item() for s, e in envs.items()}
    assert split_degree["val_unseen"] < split_degree["train"]  # what would have made them differ
    train = envs["train"]
    assert train.world.max_degree == dataset.max_degree()
    for split, env in envs.items():
        assert env.single_observation_space == train.single_observation_space, split
        assert env.single_action_space == train.single_action_space, split
    # max_degree= still overrides, and must cover every graph of the split.
    wide = NavVecEnv(dataset, "val_unseen", 1, features=FEATURE_NAME, device="cpu", max_degree=12)
    assert wide.single_action_space == gym.spaces.Discrete(13)
    with pytest.raises(ValueError, match="max_degree=4 is below the largest viewpoint degree"):
        NavVecEnv(dataset, "train", 1, features=FEATURE_NAME, device="cpu", max_degree=4)


def test_sampled_actions_are_legal_and_out_of_mask_actions_stop(grid_dataset):
    env = make_nav(grid_dataset, max_steps=6)
    env.action_space.seed(1)
    obs, _ = env.reset(seed=1)
    stops = 0
    for _ in range(200):
        action = env.action_space.sample()
        outside = not obs["cand_mask"][action]
        obs, reward, terminated, truncated, _ = env.step(action)
        if outside:  # treated as STOP: the episode ends here with the STOP reward
            assert terminated and not truncated and abs(reward) == 2.0
            stops += 1
        if terminated or truncated:
            obs, _ = env.reset()
    assert stops > 10
    # The batched env itself stays strict by default: for its trainers a bad action is a bug.
    strict = NavVecEnv(grid_dataset, "train", 1, features="random", device="cpu", seed=1)
    obs = strict.reset()
    outside = torch.nonzero(~obs["cand_mask"][0]).flatten()
    with pytest.raises(ValueError, match="invalid navigation actions"):
        strict.step(outside[:1] if len(outside) else torch.tensor([99]))


def test_sb3_ppo_trains_on_one_split_and_evaluates_on_another(random_feature_world):
    kwargs = {"dataset": str(random_feature_world), "features": FEATURE_NAME, "max_steps": 8}
    train = make_sb3_env(NAV_ID, 4, split="train", seed=0, **kwargs)
    model = PPO("MultiInputPolicy", train, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    unseen = make_sb3_env(NAV_ID, 2, split="val_unseen", seed=1, **kwargs)
    assert unseen.observation_space == train.observation_space
    assert unseen.action_space == train.action_space
    episode_returns, lengths = evaluate_policy(model, unseen, n_eval_episodes=6, return_episode_rewards=True)
    assert len(episode_returns) == 6 and all(1 <= n <= 8 for n in lengths)
    train.close()
    unseen.close()


def test_make_sb3_env_rejects_ids_that_are_not_protocol_envs():
    with pytest.raises(ValueError, match="not a Lodestar protocol-env id"):
        make_sb3_env("CartPole-v1", 2)
