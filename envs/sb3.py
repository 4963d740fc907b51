"""Stable-Baselines3 ``VecEnv`` adapter over the Lodestar vector-env protocol.

SB3 algorithms then train on our envs directly (Atari observations stay channel-first uint8
``[N, 4, 84, 84]``, which SB3's ``CnnPolicy`` accepts), so they can serve as baselines.

Conventions SB3 expects and this adapter provides:

- ``dones = terminated | truncated``; observations after a done are already the next episode's;
- ``infos[i]["terminal_observation"]`` (from the protocol's ``final_obs``) and
  ``infos[i]["TimeLimit.truncated"]`` on rows whose episode ended;
- ``infos[i]["episode"] = {"r", "l", "t"}`` at episode end, with the env layer's *raw* return and
  length, exactly what SB3's ``Monitor`` reports; ``env_is_wrapped(Monitor)`` therefore answers
  True so ``evaluate_policy`` uses these full-episode statistics.

The protocol env is one batched object, so ``get_attr``/``set_attr``/``env_method`` act on it once
and repeat the answer for each requested index.

:func:`make_sb3_env` builds the adapter from a registered gymnasium id with that id's defaults, e.g.
the navigation env, whose observation carries no oracle and whose out-of-mask actions are STOP there
(SB3's policies sample from the whole action space)::

    train = make_sb3_env("Lodestar/Nav-v0", 8, dataset="data/nav/small", split="train", features="cnn")
    model = PPO("MultiInputPolicy", train).learn(100_000)
    test = make_sb3_env("Lodestar/Nav-v0", 8, dataset="data/nav/small", split="val_unseen", features="cnn")
    evaluate_policy(model, test)   # same spaces on every split of a dataset
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnv as SB3VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from lodestar.envs.base import VecEnv
from lodestar.envs.gym_api import GymVectorEnv, as_space, to_numpy, to_tensor


class SB3VecEnvAdapter(SB3VecEnv):
    """Present a protocol :class:`lodestar.envs.base.VecEnv` as an SB3 ``VecEnv``."""

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        self._actions: torch.Tensor | None = None
        self._start_time = time.time()
        super().__init__(
            env.num_envs, as_space(env.single_observation_space), as_space(env.single_action_space)
        )

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            indices = [indices]
        chosen = list(indices)
        for index in chosen:
            if not 0 <= index < self.num_envs:
                raise IndexError(f"env index {index} out of range for {self.num_envs} envs")
        return chosen

    def reset(self) -> VecEnvObs:
        """Reset every env; a seed set with :meth:`seed` applies to this reset only."""
        if any(self._options):
            raise ValueError(f"{type(self.env).__name__} takes no reset options, got {self._options}")
        seed = self._seeds[0]
        obs = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return to_numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = to_tensor(actions, self.env.device)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        self._actions = None
        done = terminated | truncated
        dones = to_numpy(done)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            ended = np.flatnonzero(dones).tolist()
            final_obs = to_numpy(info["final_obs"])
            cut = to_numpy(truncated & ~terminated)
            returns = to_numpy(info["episode_return"])
            lengths = to_numpy(info["episode_length"])
            elapsed = round(time.time() - self._start_time, 6)
            for i in ended:
                infos[i]["terminal_observation"] = (
                    {key: value[i] for key, value in final_obs.items()}
                    if isinstance(final_obs, dict)
                    else final_obs[i]
                )
                infos[i]["TimeLimit.truncated"] = bool(cut[i])
                infos[i]["episode"] = {"r": float(returns[i]), "l": int(lengths[i]), "t": elapsed}
        return to_numpy(obs), to_numpy(reward).astype(np.float32, copy=False), dones, infos

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            # Protocol envs do not render; SB3 asks for this at construction.
            value = getattr(self.env, "render_mode", None)
        else:
            value = getattr(self.env, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._indices(indices)
        setattr(self.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        chosen = self._indices(indices)
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in chosen]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        provides = wrapper_class is Monitor
        return [provides for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        raise NotImplementedError(
            f"{type(self.env).__name__} cannot render; for Atari videos use "
            "gymnasium.make(lodestar.envs.atari.atari_env_id(game), render_mode='rgb_array')"
        )


def make_sb3_env(env_id: str, num_envs: int = 1, **kwargs: Any) -> SB3VecEnvAdapter:
    """An SB3 ``VecEnv`` over the protocol env that ``gymnasium.make_vec(env_id, num_envs, **kwargs)``
    would build: the id's registered defaults apply unless ``kwargs`` override them."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    if not isinstance(vec, GymVectorEnv):
        vec.close()
        raise ValueError(
            f"{env_id!r} is not a Lodestar protocol-env id (registered with register_protocol_env)"
        )
    return SB3VecEnvAdapter(vec.vec_env)
