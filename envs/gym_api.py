"""Gymnasium faces of the Lodestar vector-env protocol, and the registered ids.

- :class:`GymEnv` turns a protocol env with ``num_envs == 1`` into a ``gymnasium.Env`` (numpy
  observations, python scalars), for ``gymnasium.make`` and tools that expect one env.
- :class:`GymVectorEnv` turns any protocol env into a ``gymnasium.vector.VectorEnv`` (numpy batches,
  ``SAME_STEP`` autoreset), used by ``gymnasium.make_vec``.

Both are generic: dict observations become dicts of numpy arrays under a ``spaces.Dict``.

Registration is explicit and idempotent: :func:`register` (also run when this module is first
imported) registers ``Lodestar/Atari-v0``; other protocol envs register with
:func:`register_protocol_env`. Registration imports no emulator: factories are ``"module:attr"``
strings loaded when an env is made. Example::

    import lodestar.envs.gym_api  # registers the ids
    env = gymnasium.make("Lodestar/Atari-v0", game="Pong")
    vec = gymnasium.make_vec("Lodestar/Atari-v0", num_envs=8, game="Pong")   # one batched AtariVecEnv
    vec = gymnasium.make_vec("Lodestar/Atari-v0", num_envs=2, vectorization_mode="sync", game="Pong")
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast, overload

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import load_env_creator
from numpy.typing import ArrayLike

from lodestar.envs.base import AUTORESET_MODE, Observation, VecEnv

ATARI_ID = "Lodestar/Atari-v0"
VecEnvFactory = Callable[..., VecEnv]
NumpyObservation = np.ndarray | dict[str, np.ndarray]


@overload
def to_numpy(value: torch.Tensor) -> np.ndarray: ...
@overload
def to_numpy(value: dict[str, torch.Tensor]) -> dict[str, np.ndarray]: ...
def to_numpy(value: Observation) -> NumpyObservation:
    """A tensor (or dict of tensors) as numpy; shares memory when the tensor is on CPU."""
    if isinstance(value, dict):
        return {key: to_numpy(item) for key, item in value.items()}
    return value.detach().cpu().numpy()


@overload
def to_tensor(value: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]: ...
@overload
def to_tensor(value: torch.Tensor | ArrayLike, device: torch.device) -> torch.Tensor: ...
def to_tensor(value: Any, device: torch.device) -> torch.Tensor | dict[str, Any]:
    """Numpy/python actions (or a dict of them) as tensors on ``device``."""
    if isinstance(value, dict):
        return {key: to_tensor(item, device) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return torch.as_tensor(np.asarray(value), device=device)


@overload
def _batch_of_one(value: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]: ...
@overload
def _batch_of_one(value: torch.Tensor | ArrayLike, device: torch.device) -> torch.Tensor: ...
def _batch_of_one(value: Any, device: torch.device) -> torch.Tensor | dict[str, Any]:
    if isinstance(value, dict):
        return {key: _batch_of_one(item, device) for key, item in value.items()}
    return to_tensor(value, device).unsqueeze(0)


@overload
def _obs_row(obs: torch.Tensor, index: int) -> np.ndarray: ...
@overload
def _obs_row(obs: dict[str, torch.Tensor], index: int) -> dict[str, np.ndarray]: ...
def _obs_row(obs: Observation, index: int) -> NumpyObservation:
    """Row ``index`` of a batched observation as fresh numpy arrays (0-d ones included).

    Copied, unlike the vector face's batches: single-env users keep observations across steps (and
    gymnasium's checker expects that), while a protocol env may hand out the same tensor again
    (e.g. the navigation env's instruction tokens within an episode).
    """
    if isinstance(obs, dict):
        return {key: _obs_row(value, index) for key, value in obs.items()}
    return obs[index].detach().cpu().numpy().copy()


def _row(value: Any, index: int) -> Any:
    """Row ``index`` of a batched info value, as numpy or a python scalar."""
    if isinstance(value, dict):
        return {key: _row(item, index) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        item = value[index]
        return item.item() if item.dim() == 0 else item.detach().cpu().numpy()
    return value


def as_space(space: gym.Space | dict[str, gym.Space]) -> gym.Space:
    """A gymnasium space; a plain dict of spaces becomes ``spaces.Dict``."""
    return gym.spaces.Dict(space) if isinstance(space, dict) else space


class GymEnv(gym.Env):
    """A ``gymnasium.Env`` over a protocol env holding exactly one episode at a time.

    The protocol env resets itself when an episode ends; this face returns the episode's final
    observation from ``step`` and hands out the already reset observation on the next
    :meth:`reset` without a seed (a seeded reset re-seeds the underlying env).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(self, vec_env: VecEnv, render_mode: str | None = None) -> None:
        if vec_env.num_envs != 1:
            raise ValueError(f"GymEnv needs a protocol env with num_envs=1, got num_envs={vec_env.num_envs}")
        if render_mode is not None:
            # Batched emulators cannot render; the matching ALE id (Atari) can.
            renderable = getattr(vec_env, "env_id", None)
            hint = f"; use gymnasium.make({renderable!r}, render_mode={render_mode!r})" if renderable else ""
            raise ValueError(
                f"render_mode={render_mode!r} is not supported by {type(vec_env).__name__}{hint}"
            )
        self.vec_env = vec_env
        self.observation_space = as_space(vec_env.single_observation_space)
        self.action_space = as_space(vec_env.single_action_space)
        self.render_mode = None
        self._next_obs: Observation | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"{type(self.vec_env).__name__} takes no reset options, got {sorted(options)}")
        pending, self._next_obs = self._next_obs, None
        obs = pending if seed is None and pending is not None else self.vec_env.reset(seed=seed)
        return _obs_row(obs, 0), {}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.vec_env.step(
            _batch_of_one(action, self.vec_env.device)
        )
        ended = bool(terminated[0] | truncated[0])
        self._next_obs = obs if ended else None
        shown = info.get("final_obs", obs) if ended else obs
        row_info = {key: _row(value, 0) for key, value in info.items() if key != "final_obs"}
        return _obs_row(shown, 0), float(reward[0]), bool(terminated[0]), bool(truncated[0]), row_info

    def close(self) -> None:
        self.vec_env.close()
        super().close()


class GymVectorEnv(gym.vector.VectorEnv):
    """A ``gymnasium.vector.VectorEnv`` over any protocol env (numpy in and out, ``SAME_STEP``).

    ``infos`` holds every protocol info key as a numpy batch; ``final_obs`` and its ``_final_obs``
    mask are present only on steps where some episode ended, as in gymnasium's own vector envs.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AUTORESET_MODE}  # noqa: RUF012

    def __init__(self, vec_env: VecEnv) -> None:
        self.vec_env = vec_env
        self.num_envs = vec_env.num_envs
        self.single_observation_space = as_space(vec_env.single_observation_space)
        self.single_action_space = as_space(vec_env.single_action_space)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None and not isinstance(seed, int):
            raise TypeError(f"seed must be one int (env i gets seed + i) or None, got {type(seed).__name__}")
        if options:
            raise ValueError(f"{type(self.vec_env).__name__} takes no reset options, got {sorted(options)}")
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        return to_numpy(self.vec_env.reset(seed=seed)), {}

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.vec_env.step(to_tensor(actions, self.vec_env.device))
        done = to_numpy(terminated | truncated)
        infos = {key: to_numpy(value) for key, value in info.items() if key != "final_obs"}
        if done.any():
            infos["final_obs"] = to_numpy(info["final_obs"])
            infos["_final_obs"] = done
        return to_numpy(obs), to_numpy(reward), to_numpy(terminated), to_numpy(truncated), infos

    def close_extras(self, **kwargs: Any) -> None:
        self.vec_env.close()


def _load_factory(factory: VecEnvFactory | str) -> VecEnvFactory:
    if isinstance(factory, str):
        # gymnasium types what it imports as its own env creators; the "module:attr" strings given to
        # register_protocol_env name protocol-env factories.
        return cast(VecEnvFactory, load_env_creator(factory))
    return factory


def _make_single(factory: VecEnvFactory | str, render_mode: str | None = None, **kwargs: Any) -> GymEnv:
    if "num_envs" in kwargs:
        raise ValueError("gymnasium.make builds one env; use gymnasium.make_vec(..., num_envs=N) for a batch")
    return GymEnv(_load_factory(factory)(num_envs=1, **kwargs), render_mode=render_mode)


def _make_vector(factory: VecEnvFactory | str, num_envs: int = 1, **kwargs: Any) -> GymVectorEnv:
    return GymVectorEnv(_load_factory(factory)(num_envs=num_envs, **kwargs))


def register_protocol_env(
    env_id: str, factory: VecEnvFactory | str, default_kwargs: dict[str, Any] | None = None
) -> None:
    """Register ``env_id`` for ``gymnasium.make`` and ``gymnasium.make_vec``.

    ``factory(num_envs=..., **kwargs)`` builds the protocol env; a ``"module:attr"`` string is
    imported only when an env is made. ``default_kwargs`` are passed unless the caller overrides
    them. ``make`` wraps a one-env batch in :class:`GymEnv`; ``make_vec`` builds one batched env
    (``vector_entry_point``, the default mode) wrapped in :class:`GymVectorEnv`, or gymnasium's
    sync/async vectorizers over single envs. Registering an id again is a no-op.
    """
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=functools.partial(_make_single, factory),
        vector_entry_point=functools.partial(_make_vector, factory),
        kwargs=dict(default_kwargs or {}),
        disable_env_checker=False,
    )


NAV_ID = "Lodestar/Nav-v0"


def register() -> None:
    """Register every Lodestar gymnasium id (idempotent)."""
    # The gymnasium faces hand out numpy arrays, so the emulator output stays on the host.
    register_protocol_env(ATARI_ID, "lodestar.envs.atari:AtariVecEnv", {"device": "cpu"})
    # gymnasium.make("Lodestar/Nav-v0", dataset="data/nav/small", split="train", features="cnn")
    register_protocol_env(NAV_ID, "lodestar.envs.nav.sim.env:NavVecEnv", {"device": "cpu"})


register()
