"""Gymnasium faces of the Lodestar vector-env protocol, and the registered ids.

- :class:`GymEnv` turns a protocol env with ``num_envs == 1`` into a ``gymnasium.Env`` (numpy
  observations, python scalars), for ``gymnasium.make`` and tools that expect one env.
- :class:`GymVectorEnv` turns any protocol env into a ``gymnasium.vector.VectorEnv`` (numpy batches,
  ``SAME_STEP`` autoreset), used by ``gymnasium.make_vec``.

Both are generic: dict observations become dicts of numpy arrays under a ``spaces.Dict``. Both
render ``render_mode="rgb_array"`` when the id was registered with a :class:`Rendering` (frames drawn
from the observations); other render modes are errors.

Registration is explicit and idempotent: :func:`register` (also run when this module is first
imported) registers ``Lodestar/Atari-v0`` and ``Lodestar/Nav-v0``; other protocol envs register with
:func:`register_protocol_env`. Registration imports no emulator: factories are ``"module:attr"``
strings or functions that import their env when one is made. Example::

    import lodestar.envs.gym_api  # registers the ids
    env = gymnasium.make("Lodestar/Atari-v0", game="Pong")
    vec = gymnasium.make_vec("Lodestar/Atari-v0", num_envs=8, game="Pong")   # one batched AtariVecEnv
    vec = gymnasium.make_vec("Lodestar/Atari-v0", num_envs=2, vectorization_mode="sync", game="Pong")

``Lodestar/Atari-v0`` renders ``rgb_array`` as the newest 84x84 grayscale frame of the observation
(what the agent sees), because ale-py's batched emulators return only preprocessed frames; Stable-
Baselines3's ``make_vec_env`` (which asks for ``rgb_array``) and its video recorder therefore work.
Full-colour frames come from ale-py's own ``gymnasium.make("ALE/Pong-v5", render_mode="rgb_array")``.

``Lodestar/Nav-v0`` is the navigation simulator (:class:`~lodestar.envs.nav.sim.env.NavVecEnv`)::

    env = gymnasium.make("Lodestar/Nav-v0", dataset="data/nav/small", split="train", features="cnn")

Its observation carries no oracle (``oracle=True`` adds the teacher action and the distance to the
goal: training signals, never policy inputs), its spaces are the same on every split of a dataset,
and an action outside the candidate mask ``obs["cand_mask"]`` is treated as STOP
(``validate_actions=False`` by default here), so any sample of ``action_space`` is legal to send.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast, overload

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import load_env_creator
from numpy.typing import ArrayLike

from lodestar.envs.base import AUTORESET_MODE, Observation, VecEnv

if TYPE_CHECKING:
    from lodestar.envs.atari import AtariVecEnv

ATARI_ID = "Lodestar/Atari-v0"
VecEnvFactory = Callable[..., VecEnv]
NumpyObservation = np.ndarray | dict[str, np.ndarray]
# Emulator frames per second of Atari 2600 (NTSC) game time.
ALE_FRAME_RATE = 60.0


@dataclass(frozen=True)
class Rendering:
    """How the gymnasium faces of a registered id render ``render_mode="rgb_array"``.

    ``frame`` turns one env's numpy observation into an ``[H, W, 3]`` uint8 image; ``fps`` gives the
    rate of game time (``metadata["render_fps"]``) of the env that was made.
    """

    frame: Callable[[NumpyObservation], np.ndarray]
    fps: Callable[[VecEnv], float]


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
    """Row ``index`` of a batched observation as fresh numpy arrays; a 0-d row (a ``Discrete``
    value) becomes a numpy scalar, the type gymnasium's and SB3's checkers expect of one.

    Copied, unlike the vector face's batches: single-env users keep observations across steps (and
    gymnasium's checker expects that), while a protocol env may hand out the same tensor again
    (e.g. the navigation env's instruction tokens within an episode).
    """
    if isinstance(obs, dict):
        return {key: _obs_row(value, index) for key, value in obs.items()}
    row = obs[index].detach().cpu().numpy()
    return row[()] if row.ndim == 0 else row.copy()


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


def _check_render_mode(vec_env: VecEnv, render_mode: str | None, rendering: Rendering | None) -> None:
    """Refuse a render mode the face cannot serve, naming what can."""
    if render_mode is None or (render_mode == "rgb_array" and rendering is not None):
        return
    # Batched emulators cannot render in colour; the matching ALE id (Atari) can.
    renderable = getattr(vec_env, "env_id", None)
    hint = f"; use gymnasium.make({renderable!r}, render_mode={render_mode!r})" if renderable else ""
    served = " (this face renders only 'rgb_array': frames of its observations)" if rendering else ""
    raise ValueError(
        f"render_mode={render_mode!r} is not supported by {type(vec_env).__name__}{hint}{served}"
    )


def _render_metadata(vec_env: VecEnv, rendering: Rendering | None) -> dict[str, Any]:
    if rendering is None:
        return {"render_modes": []}
    return {"render_modes": ["rgb_array"], "render_fps": rendering.fps(vec_env)}


class GymEnv(gym.Env):
    """A ``gymnasium.Env`` over a protocol env holding exactly one episode at a time.

    The protocol env resets itself when an episode ends; this face returns the episode's final
    observation from ``step`` and hands out the already reset observation on the next
    :meth:`reset` without a seed (a seeded reset re-seeds the underlying env).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(
        self, vec_env: VecEnv, render_mode: str | None = None, rendering: Rendering | None = None
    ) -> None:
        if vec_env.num_envs != 1:
            raise ValueError(f"GymEnv needs a protocol env with num_envs=1, got num_envs={vec_env.num_envs}")
        _check_render_mode(vec_env, render_mode, rendering)
        self.vec_env = vec_env
        self.observation_space = as_space(vec_env.single_observation_space)
        self.action_space = as_space(vec_env.single_action_space)
        self.metadata = _render_metadata(vec_env, rendering)
        self.render_mode = render_mode
        self._rendering = rendering
        self._next_obs: Observation | None = None
        self._shown: NumpyObservation | None = None  # the last observation handed out, for render()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"{type(self.vec_env).__name__} takes no reset options, got {sorted(options)}")
        pending, self._next_obs = self._next_obs, None
        obs = pending if seed is None and pending is not None else self.vec_env.reset(seed=seed)
        self._shown = _obs_row(obs, 0)
        return self._shown, {}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.vec_env.step(
            _batch_of_one(action, self.vec_env.device)
        )
        ended = bool(terminated[0] | truncated[0])
        self._next_obs = obs if ended else None
        shown = info.get("final_obs", obs) if ended else obs
        row_info = {key: _row(value, 0) for key, value in info.items() if key != "final_obs"}
        self._shown = _obs_row(shown, 0)
        return self._shown, float(reward[0]), bool(terminated[0]), bool(truncated[0]), row_info

    def render(self) -> np.ndarray | None:
        """The ``rgb_array`` frame of the last observation handed out (None without a render mode)."""
        if self.render_mode is None or self._rendering is None:
            return None
        if self._shown is None:
            raise RuntimeError("call reset() before render()")
        return self._rendering.frame(self._shown)

    def close(self) -> None:
        self.vec_env.close()
        super().close()


class GymVectorEnv(gym.vector.VectorEnv):
    """A ``gymnasium.vector.VectorEnv`` over any protocol env (numpy in and out, ``SAME_STEP``).

    ``infos`` holds every protocol info key as a numpy batch; ``final_obs`` and its ``_final_obs``
    mask are present only on steps where some episode ended, as in gymnasium's own vector envs.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AUTORESET_MODE}  # noqa: RUF012

    def __init__(
        self, vec_env: VecEnv, render_mode: str | None = None, rendering: Rendering | None = None
    ) -> None:
        _check_render_mode(vec_env, render_mode, rendering)
        self.vec_env = vec_env
        self.metadata = {"autoreset_mode": AUTORESET_MODE, **_render_metadata(vec_env, rendering)}
        self.render_mode = render_mode
        self._rendering = rendering
        self._shown: NumpyObservation | None = None
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
        self._shown = to_numpy(self.vec_env.reset(seed=seed))
        return self._shown, {}

    def step(self, actions: Any):
        obs, reward, terminated, truncated, info = self.vec_env.step(to_tensor(actions, self.vec_env.device))
        done = to_numpy(terminated | truncated)
        infos = {key: to_numpy(value) for key, value in info.items() if key != "final_obs"}
        if done.any():
            infos["final_obs"] = to_numpy(info["final_obs"])
            infos["_final_obs"] = done
        self._shown = to_numpy(obs)
        return self._shown, to_numpy(reward), to_numpy(terminated), to_numpy(truncated), infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One ``rgb_array`` frame per env, of the last observations (None without a render mode)."""
        if self.render_mode is None or self._rendering is None:
            return None
        if self._shown is None:
            raise RuntimeError("call reset() before render()")
        shown = self._shown
        return tuple(
            self._rendering.frame(
                {key: value[i] for key, value in shown.items()} if isinstance(shown, dict) else shown[i]
            )
            for i in range(self.num_envs)
        )

    def close_extras(self, **kwargs: Any) -> None:
        self.vec_env.close()


def _load_factory(factory: VecEnvFactory | str) -> VecEnvFactory:
    if isinstance(factory, str):
        # gymnasium types what it imports as its own env creators; the "module:attr" strings given to
        # register_protocol_env name protocol-env factories.
        return cast(VecEnvFactory, load_env_creator(factory))
    return factory


def _make_single(
    factory: VecEnvFactory | str,
    rendering: Rendering | None,
    render_mode: str | None = None,
    **kwargs: Any,
) -> GymEnv:
    if "num_envs" in kwargs:
        raise ValueError("gymnasium.make builds one env; use gymnasium.make_vec(..., num_envs=N) for a batch")
    return GymEnv(_load_factory(factory)(num_envs=1, **kwargs), render_mode, rendering)


def _make_vector(
    factory: VecEnvFactory | str,
    rendering: Rendering | None,
    num_envs: int = 1,
    render_mode: str | None = None,
    **kwargs: Any,
) -> GymVectorEnv:
    return GymVectorEnv(_load_factory(factory)(num_envs=num_envs, **kwargs), render_mode, rendering)


def register_protocol_env(
    env_id: str,
    factory: VecEnvFactory | str,
    default_kwargs: dict[str, Any] | None = None,
    rendering: Rendering | None = None,
) -> None:
    """Register ``env_id`` for ``gymnasium.make`` and ``gymnasium.make_vec``.

    ``factory(num_envs=..., **kwargs)`` builds the protocol env; a ``"module:attr"`` string is
    imported only when an env is made. ``default_kwargs`` are passed unless the caller overrides
    them. ``make`` wraps a one-env batch in :class:`GymEnv`; ``make_vec`` builds one batched env
    (``vector_entry_point``, the default mode) wrapped in :class:`GymVectorEnv`, or gymnasium's
    sync/async vectorizers over single envs. With ``rendering`` both faces accept
    ``render_mode="rgb_array"``. Registering an id again is a no-op.
    """
    if env_id in gym.registry:
        return
    gym.register(
        id=env_id,
        entry_point=functools.partial(_make_single, factory, rendering),
        vector_entry_point=functools.partial(_make_vector, factory, rendering),
        kwargs=dict(default_kwargs or {}),
        disable_env_checker=False,
    )


# -- Lodestar/Atari-v0 ---------------------------------------------------------------------------------

_ATARI_GAME_HINT = (
    f"{ATARI_ID} needs game=<name>, e.g. gymnasium.make({ATARI_ID!r}, game='Pong') or "
    f"gymnasium.make_vec({ATARI_ID!r}, num_envs=8, game='Breakout'); the games are the ROMs ale-py "
    "ships (ROM ids such as 'space_invaders' or names such as 'SpaceInvaders'), listed by "
    'python -c "from ale_py import roms; print(roms.get_all_rom_ids())"'
)


def make_atari(num_envs: int = 1, game: str | None = None, **kwargs: Any) -> AtariVecEnv:
    """The :class:`~lodestar.envs.atari.AtariVecEnv` behind ``Lodestar/Atari-v0``.

    ``game`` is required; without it the error says how to name one and where the game list is.
    Other keyword arguments are those of ``AtariVecEnv``.
    """
    if game is None:
        raise TypeError(_ATARI_GAME_HINT)
    from lodestar.envs.atari import AtariVecEnv  # imported when an env is made, not at registration

    return AtariVecEnv(game, num_envs, **kwargs)


def atari_frame(obs: NumpyObservation) -> np.ndarray:
    """The newest frame of one Atari observation (``[stack, H, W]`` uint8) as an ``[H, W, 3]`` image."""
    if not isinstance(obs, np.ndarray) or obs.ndim != 3:
        raise ValueError(f"an Atari observation is a [stack, H, W] array, got {type(obs).__name__}")
    return np.repeat(obs[-1][:, :, None], 3, axis=2)


def _atari_fps(env: VecEnv) -> float:
    return ALE_FRAME_RATE / cast("AtariVecEnv", env).settings["frameskip"]


ATARI_RENDERING = Rendering(frame=atari_frame, fps=_atari_fps)
NAV_ID = "Lodestar/Nav-v0"


def register() -> None:
    """Register every Lodestar gymnasium id (idempotent)."""
    # The gymnasium faces hand out numpy arrays, so the emulator output stays on the host.
    register_protocol_env(ATARI_ID, make_atari, {"device": "cpu"}, ATARI_RENDERING)
    # gymnasium.make("Lodestar/Nav-v0", dataset="data/nav/small", split="train", features="cnn"):
    # tools sample actions from the whole action space, so an action outside the candidate mask is
    # STOP here (NavVecEnv itself raises on one by default); oracle=True adds training signals.
    register_protocol_env(
        NAV_ID, "lodestar.envs.nav.sim.env:NavVecEnv", {"device": "cpu", "validate_actions": False}
    )


register()
