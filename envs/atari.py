"""Atari through ale-py's C++ vector env, behind the Lodestar :class:`~lodestar.envs.base.VecEnv` protocol.

:class:`AtariVecEnv` runs ``ale_py.vector_env.AtariVectorEnv`` (emulators in C++ threads, preprocessing
in C++) and hands back torch tensors on ``env.device``. The defaults are the ``ALE/<Game>-v5``
protocol: sticky actions 0.25, frameskip 4 with a max-pool over the last two frames, 84x84 grayscale,
a stack of 4 frames, the minimal action set and a 108,000-frame episode cap.

``step(actions)`` is ``step_async(actions)`` followed by ``step_wait()`` (ale-py's ``send``/``recv``):
between the two the emulators run in their threads while the caller does other work, and the
wrapper's bookkeeping that the result does not need runs there too.

Rewards are never clipped here: the agent clips them for training so raw scores stay observable.
Life loss never ends an episode unless ``episodic_life=True`` (see :class:`AtariVecEnv`); instead ``info["life_lost"]`` flags it,
which is how an agent treats life loss as terminal for training (the Atari-100k protocol) while the
game keeps running.

``info`` keys, all tensors with leading dimension ``num_envs`` on ``env.device``:

- ``final_obs``: last observation of the episode for rows that ended, the returned one elsewhere;
- ``episode_return`` (float32, raw) / ``episode_length`` (int64, agent steps): non-zero where an
  episode ended this step (the :class:`lodestar.envs.base.EpisodeStatistics` convention, counted on the host);
- ``lives`` (int32): lives left after this step (of the new episode where one started);
- ``life_lost`` (bool): a life was lost this step and the game did not end;
- ``episode_frame_number`` (int32): emulator frames elapsed in the current episode.

Exact resume without emulator snapshots (ale-py cannot take them): with ``reseed_after=K`` a seeded
env restarts an episode from a seed of its own (derived from the reset seed, the env and a counter,
:meth:`AtariVecEnv.episode_seed`) whenever an episode of that env ends and its last seeded start is
``K`` or more agent steps back; ``K=0`` seeds every episode. An emulator's state is then a function
of its last seeded start and the actions since, so :meth:`AtariVecEnv.restore_episodes` brings every
env back by replaying at most ``K`` steps plus one episode, however long the run has been
(:meth:`AtariVecEnv.episode_state` says what to keep). A seeded reset makes ale-py reload the ROM
(about 0.1 s on one CPU core), hence the period; ``reseed_after=None`` (the default) never pays it.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch

from lodestar.envs.base import StepResult, VecEnv
from lodestar.runtime.device import resolve_device

if TYPE_CHECKING:
    from ale_py.vector_env import AtariVectorEnv

_ALE_AUTORESET = "SameStep"
_INTEGER_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
# Prefixes/suffixes of gymnasium ids ("ALE/Pong-v5", "PongNoFrameskip-v4") around the game name.
_ID_DECORATION = re.compile(r"^(?:ALE/)?(?P<name>.+?)(?:NoFrameskip|Deterministic)?(?:-v\d+)?$")


@functools.lru_cache(maxsize=1)
def _rom_ids() -> tuple[str, ...]:
    from ale_py import roms

    return tuple(sorted(roms.get_all_rom_ids()))


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def resolve_game(name: str) -> str:
    """Map a game name to the ROM id ale-py ships (snake_case, e.g. ``"space_invaders"``).

    Accepts ROM ids (``"space_invaders"``), gymnasium-style names (``"SpaceInvaders"``) and ids
    (``"ALE/SpaceInvaders-v5"``, ``"SpaceInvadersNoFrameskip-v4"``), in any letter case.
    An unknown name is a ``ValueError`` that lists the closest known games.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"game name must be a non-empty string, got {name!r}")
    match = _ID_DECORATION.match(name.strip())
    stem = match.group("name") if match else name
    by_key = {_squash(rom): rom for rom in _rom_ids()}
    for candidate in (stem, name):
        rom = by_key.get(_squash(candidate))
        if rom is not None:
            return rom
    close = difflib.get_close_matches(_squash(stem), list(by_key), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(by_key[c] for c in close)}?" if close else ""
    raise ValueError(
        f"unknown Atari game {name!r}{hint} (ale-py ships {len(by_key)} ROMs, e.g. pong, breakout, "
        "space_invaders)"
    )


def atari_env_id(game: str) -> str:
    """The gymnasium v5 id (``"ALE/SpaceInvaders-v5"``) of a game, for ``gymnasium.make``.

    Used where a single, renderable env with the same game is needed (evaluation videos).
    """
    import ale_py  # noqa: F401 - importing ale_py registers the ALE/* ids with gymnasium
    from ale_py.registration import rom_id_to_name

    rom = resolve_game(game)
    env_id = f"ALE/{rom_id_to_name(rom)}-v5"
    if env_id not in gym.registry:
        raise ValueError(f"Atari game {rom!r} has no gymnasium id {env_id!r} (multi-player ROMs have none)")
    return env_id


# (key, shape, numpy dtype, first byte, end byte) of each array packed into one byte buffer.
_ByteLayout = tuple[tuple[str, tuple[int, ...], np.dtype, int, int], ...]


@functools.cache
def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _byte_layout(arrays: dict[str, np.ndarray]) -> _ByteLayout:
    """Where each array goes in a packed byte buffer; widest items first keeps every typed view aligned."""
    layout, offset = [], 0
    for key in sorted(arrays, key=lambda name: -arrays[name].itemsize):
        array = arrays[key]
        layout.append((key, array.shape, array.dtype, offset, offset + array.nbytes))
        offset += array.nbytes
    return tuple(layout)


def _pack(arrays: dict[str, np.ndarray], layout: _ByteLayout, out: np.ndarray) -> None:
    for key, _, _, start, stop in layout:
        out[start:stop] = np.ascontiguousarray(arrays[key]).reshape(-1).view(np.uint8)


def _unpack(packed: torch.Tensor, layout: _ByteLayout) -> dict[str, torch.Tensor]:
    """Typed views (no copies) into a packed uint8 tensor."""
    return {
        key: packed[start:stop].view(_torch_dtype(dtype)).view(shape)
        for key, shape, dtype, start, stop in layout
    }


class _HostToDevice:
    """Moves a batch of host arrays, fresh every step, onto the device.

    On CPU every tensor shares its array's memory (no copy: ale-py allocates new output arrays each
    step and the small arrays are built per step, so nothing is overwritten later). On CUDA the
    arrays' bytes are packed into one pinned staging buffer, copied with a single asynchronous
    transfer and split into typed views on the device; an event keeps a staging buffer from being
    refilled while its previous copy is still in flight. Other devices get plain copies.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: dict[_ByteLayout, tuple[torch.Tensor, torch.cuda.Event | None]] = {}

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return {key: torch.from_numpy(array) for key, array in arrays.items()}
        if self.device.type != "cuda":
            return {key: torch.from_numpy(array).to(self.device) for key, array in arrays.items()}
        layout = _byte_layout(arrays)
        buffer, in_flight = self._staging.get(layout, (None, None))
        if buffer is None:
            buffer = torch.empty(layout[-1][4], dtype=torch.uint8).pin_memory()
        if in_flight is not None:
            in_flight.synchronize()
        _pack(arrays, layout, buffer.numpy())
        moved = buffer.to(self.device, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(self.device))
        self._staging[layout] = (buffer, copied)
        return _unpack(moved, layout)


class _StepOutputs:
    """Arrays for the small fields of one step's result, made while the emulators run that step.

    :meth:`AtariVecEnv.step_wait` fills them from ale-py's output with one numpy copy each
    (``episode_return``/``episode_length`` stay zero but where an episode ended). With ``wrap`` (CPU)
    ``tensors`` already share their memory, so the result needs no conversion; a new set every step
    keeps every returned tensor unaliased, as a fresh result should be.
    """

    def __init__(self, num_envs: int, wrap: bool) -> None:
        self.arrays = {
            "reward": np.empty(num_envs, dtype=np.float32),
            "terminated": np.empty(num_envs, dtype=bool),
            "truncated": np.empty(num_envs, dtype=bool),
            "episode_return": np.zeros(num_envs, dtype=np.float32),
            "episode_length": np.zeros(num_envs, dtype=np.int64),
            "lives": np.empty(num_envs, dtype=np.int32),
            "life_lost": np.empty(num_envs, dtype=bool),
            "episode_frame_number": np.empty(num_envs, dtype=np.int32),
        }
        self.tensors = {key: torch.from_numpy(array) for key, array in self.arrays.items()} if wrap else None


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class AtariVecEnv(VecEnv):
    """Batched Atari games on one device (see the module docstring for the conventions).

    Args:
        game: any name :func:`resolve_game` accepts.
        num_envs: number of emulators.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or a ``torch.device``.
        num_threads: emulator threads (0: ale-py's default).
        seed: seed used by the first :meth:`reset` that is called without one; env ``i`` gets
            ``seed + i``.
        frameskip: emulator frames per agent step (the last two are max-pooled).
        repeat_action_probability: sticky-action probability, applied per emulator frame.
        frame_stack: frames per observation.
        image_size: side of the square grayscale frame.
        max_episode_frames: emulator-frame cap; reaching it truncates the episode.
        noop_max: up to this many random no-ops after each reset (0: none).
        full_action_space: all 18 actions instead of the game's minimal set.
        episodic_life: ale-py's option: every life loss terminates the episode *and restarts the
            game*, so later lives are never played and statistics are per life. To treat life loss
            as terminal for learning only, keep this off and use ``info["life_lost"]``.
        use_fire_reset: press FIRE after reset in games that need it.
        reseed_after: restart an env's ending episode from a seed of its own when its last seeded
            start is this many agent steps back (0: every episode; None: never), which bounds what
            :meth:`restore_episodes` replays (see the module docstring for the cost).
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        device: str | torch.device = "auto",
        num_threads: int = 0,
        seed: int | None = None,
        frameskip: int = 4,
        repeat_action_probability: float = 0.25,
        frame_stack: int = 4,
        image_size: int = 84,
        max_episode_frames: int = 108_000,
        noop_max: int = 0,
        full_action_space: bool = False,
        episodic_life: bool = False,
        use_fire_reset: bool = False,
        reseed_after: int | None = None,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        self.game = resolve_game(game)
        for name, value in (
            ("num_envs", num_envs),
            ("frameskip", frameskip),
            ("frame_stack", frame_stack),
            ("image_size", image_size),
            ("max_episode_frames", max_episode_frames),
        ):
            _check_positive(name, value)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
            raise ValueError(f"num_threads must be an int >= 0, got {num_threads!r}")
        if isinstance(noop_max, bool) or not isinstance(noop_max, int) or noop_max < 0:
            raise ValueError(f"noop_max must be an int >= 0, got {noop_max!r}")
        if not 0.0 <= float(repeat_action_probability) <= 1.0:
            raise ValueError(
                f"repeat_action_probability must be in [0, 1], got {repeat_action_probability!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")

        self.num_envs = num_envs
        self.device = resolve_device(device)
        self.settings: dict[str, Any] = {
            "frameskip": frameskip,
            "repeat_action_probability": float(repeat_action_probability),
            "frame_stack": frame_stack,
            "image_size": image_size,
            "max_episode_frames": max_episode_frames,
            "noop_max": noop_max,
            "full_action_space": full_action_space,
            "episodic_life": episodic_life,
            "use_fire_reset": use_fire_reset,
        }
        self._ale: AtariVectorEnv | None = AtariVectorEnv(
            self.game,
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=max_episode_frames,
            repeat_action_probability=float(repeat_action_probability),
            full_action_space=full_action_space,
            autoreset_mode=_ALE_AUTORESET,
            img_height=image_size,
            img_width=image_size,
            grayscale=True,
            stack_num=frame_stack,
            frameskip=frameskip,
            maxpool=True,
            noop_max=noop_max,
            episodic_life=episodic_life,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=use_fire_reset,
        )
        self.action_meanings: list[str] = [action.name for action in self._ale.ale.get_action_set()]
        self.num_actions = len(self.action_meanings)
        self.single_observation_space = gym.spaces.Box(
            0, 255, (frame_stack, image_size, image_size), dtype=np.uint8
        )
        self.single_action_space = gym.spaces.Discrete(self.num_actions)
        self._to_device = _HostToDevice(self.device)
        self._paddle_strength = np.ones(num_envs, dtype=np.float32)  # full strength: discrete actions
        # Float64 sums of integer scores stay exact far beyond any Atari score.
        self._running_return = np.zeros(num_envs, dtype=np.float64)
        # Episode lengths come from a global step counter and each episode's first step.
        self._steps = 0
        self._episode_start = np.zeros(num_envs, dtype=np.int64)
        self._lives = np.zeros(num_envs, dtype=np.int32)
        self._pending_seed = seed
        self._needs_reset = True
        self._in_flight: _StepOutputs | None = None  # the outputs of the step sent and not yet collected
        self._unsettled_reward: np.ndarray | None = None  # rewards not yet in _running_return
        if reseed_after is not None and (isinstance(reseed_after, bool) or reseed_after < 0):
            raise ValueError(f"reseed_after must be an int >= 0 or None, got {reseed_after!r}")
        self.reseed_after = reseed_after
        self._seed: int | None = None  # the seed of the last reset; None: episodes are not seeded
        self._seed_index = np.zeros(num_envs, dtype=np.int64)  # seeded starts per env since reset
        self._seeded_at = np.zeros(num_envs, dtype=np.int64)  # the step of each env's last seeded start

    @property
    def env_id(self) -> str:
        """The gymnasium id of the same game (``"ALE/Pong-v5"``)."""
        return atari_env_id(self.game)

    def _backend(self) -> AtariVectorEnv:
        if self._ale is None:
            raise RuntimeError(f"AtariVecEnv({self.game!r}) is closed")
        return self._ale

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every game; env ``i`` is seeded with ``seed + i`` when a seed is given.

        A step still in flight (:meth:`step_async` without :meth:`step_wait`) is collected and dropped.
        """
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self._discard_step_in_flight()
        obs, info = self._backend().reset(seed=seed)
        self._running_return[:] = 0.0
        self._unsettled_reward = None
        self._steps = 0
        self._episode_start[:] = 0
        self._lives = np.array(info["lives"], dtype=np.int32)
        self._needs_reset = False
        self._seed = seed
        self._seed_index[:] = 0
        self._seeded_at[:] = 0
        return self._to_device({"obs": obs})["obs"]

    def episode_seed(self, env: int, index: int) -> int:
        """The seed of env ``env``'s ``index``-th seeded start since the last reset (0: ``seed + env``)."""
        if self._seed is None:
            raise RuntimeError("episodes are seeded only after reset(seed=...)")
        if index == 0:
            return self._seed + env
        return int(np.random.SeedSequence([self._seed, env, index]).generate_state(1)[0] >> 1)

    def episode_state(self) -> dict[str, Any]:
        """What :meth:`restore_episodes` needs besides the actions.

        ``replay_length[i]``: agent steps since env ``i``'s last seeded start (the actions to keep);
        ``episode_length[i]``: steps of its current episode.
        """
        if self._seed is None or self.reseed_after is None:
            raise RuntimeError("episode_state() needs reseed_after set and a reset with a seed")
        if self._in_flight is not None:
            raise RuntimeError("episode_state() called while a step is in flight: call step_wait() first")
        return {
            "seed": self._seed,
            "steps": self._steps,
            "seed_index": self._seed_index.copy(),
            "replay_length": self._steps - self._seeded_at,
            "episode_length": self._steps - self._episode_start,
        }

    def restore_episodes(self, state: dict[str, Any], actions: np.ndarray) -> torch.Tensor:
        """Bring every emulator back to the moment :meth:`episode_state` described; the observation.

        ``actions`` is ``[L, num_envs]``: the last ``replay_length[i]`` rows of column ``i`` are env
        ``i``'s actions since its last seeded start (``L`` is at least the longest). Each env is
        reset with that seed so that its replay ends on the last row, then all step together; an env
        whose replay has not begun steps with NOOP, and its reset wipes what that did.
        """
        lengths = np.asarray(state["replay_length"], dtype=np.int64)
        index = np.asarray(state["seed_index"], dtype=np.int64)
        if lengths.shape != (self.num_envs,) or actions.ndim != 2 or actions.shape[1] != self.num_envs:
            raise ValueError(f"episode state and actions do not describe {self.num_envs} envs")
        horizon = int(actions.shape[0])
        if int(lengths.max(initial=0)) > horizon:
            raise ValueError(f"a replay of {int(lengths.max())} steps needs that many actions, got {horizon}")
        backend = self._backend()
        self.reset(seed=int(state["seed"]))
        self._seed_index[:] = index
        begins = horizon - lengths  # the row at which each env's replay begins
        returns = np.zeros(self.num_envs, dtype=np.float64)
        obs = None
        for row in range(horizon + 1):
            starting = begins == row
            if starting.any():
                obs, info = self._reset_from_seeds(starting)
                self._lives[starting] = info["lives"][starting]
            if row == horizon:
                break
            running = begins <= row
            step_actions = np.where(running, actions[row], 0).astype(np.int64)
            obs, reward, terminated, truncated, info = backend.step(step_actions)
            returns[running] += reward[running]
            returns[terminated | truncated] = 0.0  # ale-py started the next episode itself
            self._lives[running] = info["lives"][running]
        self._steps = int(state["steps"])
        self._seeded_at = self._steps - lengths
        self._episode_start = self._steps - np.asarray(state["episode_length"], dtype=np.int64)
        self._running_return = returns
        assert obs is not None  # the loop ran at least the resets of row 0 or one step
        return self._to_device({"obs": obs})["obs"]

    def _actions_to_numpy(self, actions: torch.Tensor | np.ndarray) -> np.ndarray:
        """A checked int64 copy of ``actions`` (a copy: ale-py may read it after :meth:`step_async` returned)."""
        if isinstance(actions, torch.Tensor):
            if actions.dtype not in _INTEGER_DTYPES:
                raise TypeError(f"actions must be an integer tensor, got dtype {actions.dtype}")
        else:
            actions = np.asarray(actions)
            if actions.dtype.kind not in "iu":
                raise TypeError(f"actions must be integers, got dtype {actions.dtype}")
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {tuple(actions.shape)}")
        # ale-py does not check the range and its worker threads hang on a bad action. One Python list
        # serves the check and the copy: on the cache-cold path between two steps, tolist + min/max
        # beat .numpy() and numpy reductions.
        values = actions.tolist()
        low, high = min(values), max(values)
        if low < 0 or high >= self.num_actions:
            bad = low if low < 0 else high
            raise ValueError(
                f"action {bad} out of range for {self.game} (valid: 0..{self.num_actions - 1}: "
                f"{', '.join(self.action_meanings)})"
            )
        return np.array(values, dtype=np.int64)

    def step(self, actions: torch.Tensor | np.ndarray) -> StepResult:
        """One agent step of every game: :meth:`step_async` then :meth:`step_wait`.

        See the module docstring for ``info``.
        """
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: torch.Tensor | np.ndarray) -> None:
        """Start one agent step of every game and return at once (Stable-Baselines3's naming).

        The emulators run in ale-py's threads until :meth:`step_wait` collects the result, so the
        caller may do other work meanwhile (a gradient update, say); ``actions`` is copied, so the
        caller may also reuse its buffer. Actions are checked here: a bad one raises before anything
        is sent and leaves the env as it was. At most one step is in flight at a time.
        """
        if self._needs_reset:
            raise RuntimeError("call reset() before step() or step_async()")
        if self._in_flight is not None:
            raise RuntimeError("step_async() called while a step is in flight: call step_wait() first")
        # Straight to the C++ interface: ale-py's send() would re-check the actions and allocate the
        # paddle strengths again, on the path where the emulators wait for us.
        self._backend().ale.send(self._actions_to_numpy(actions), self._paddle_strength)
        # While the emulators run: the bookkeeping the previous step left over, and fresh arrays for
        # this step's small result fields (on CPU already wrapped as tensors).
        self._settle()
        self._in_flight = _StepOutputs(self.num_envs, wrap=self.device.type == "cpu")

    def step_wait(self) -> StepResult:
        """Collect the step started by :meth:`step_async`; returns what :meth:`step` returns."""
        outputs = self._in_flight
        if outputs is None:
            raise RuntimeError("step_wait() called without a step in flight: call step_async(actions) first")
        self._in_flight = None
        obs, reward, terminated, truncated, ale_info = self._backend().ale.recv()
        # Only what the result needs runs here, with as few array ops as possible: the emulators idle
        # until the next send, and right after a step the caches are cold (each small torch op costs
        # ~15-20 us, each numpy op several, against ~1-2 ms for the whole step).
        self._steps += 1
        out = outputs.arrays
        lives = ale_info["lives"]
        np.copyto(out["reward"], reward)
        np.copyto(out["terminated"], terminated)
        np.copyto(out["truncated"], truncated)
        np.less(lives, self._lives, out=out["life_lost"])
        self._lives = lives
        final_obs = None
        # ale-py adds final_obs to its info exactly on the steps where some episode ended.
        if "final_obs" in ale_info:
            obs, final_obs, ale_info = self._end_episodes(obs, reward, terminated | truncated, ale_info, out)
        else:
            self._unsettled_reward = reward  # summed into the running returns during the next step
        np.copyto(out["lives"], self._lives)
        np.copyto(out["episode_frame_number"], ale_info["episode_frame_number"])
        return self._result(obs, final_obs, outputs)

    def _end_episodes(
        self,
        obs: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        ale_info: dict[str, Any],
        out: dict[str, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Statistics, final observations and seeded restarts of the episodes that ended this step."""
        self._running_return += reward
        ended = np.flatnonzero(done)
        out["life_lost"] &= ~done
        out["episode_return"][ended] = self._running_return[ended]
        out["episode_length"][ended] = self._steps - self._episode_start[ended]
        self._running_return[ended] = 0.0
        self._episode_start[ended] = self._steps
        # Its rows for envs that did not end are garbage: fill them with the returned obs.
        final_obs = obs.copy()
        final_obs[ended] = ale_info["final_obs"][ended]
        if self.reseed_after is not None and self._seed is not None:
            due = ended[self._steps - self._seeded_at[ended] >= self.reseed_after]
            if len(due):
                obs, self._lives, frame_number = self._seed_new_episodes(due, self._lives, ale_info)
                ale_info = {**ale_info, "episode_frame_number": frame_number}
        return obs, final_obs, ale_info

    def _result(self, obs: np.ndarray, final_obs: np.ndarray | None, outputs: _StepOutputs) -> StepResult:
        """The step result on the device: observations converted now, small fields as prepared."""
        if outputs.tensors is not None:
            fields = outputs.tensors
            obs_t = torch.from_numpy(obs)
            final_t = obs_t if final_obs is None else torch.from_numpy(final_obs)
        else:  # one batched transfer of everything
            host = {"obs": obs, **outputs.arrays}
            if final_obs is not None:
                host["final_obs"] = final_obs
            fields = self._to_device(host)
            obs_t = fields.pop("obs")
            final_t = fields.pop("final_obs", obs_t)
        info = {
            "final_obs": final_t,
            "episode_return": fields["episode_return"],
            "episode_length": fields["episode_length"],
            "lives": fields["lives"],
            "life_lost": fields["life_lost"],
            "episode_frame_number": fields["episode_frame_number"],
        }
        return obs_t, fields["reward"], fields["terminated"], fields["truncated"], info

    def _settle(self) -> None:
        """Apply the bookkeeping :meth:`step_wait` deferred: the last step's rewards into the running returns."""
        if self._unsettled_reward is not None:
            self._running_return += self._unsettled_reward
            self._unsettled_reward = None

    def _discard_step_in_flight(self) -> None:
        """Collect and drop a step still in flight, so that ale-py's queue is empty for a reset or close."""
        if self._in_flight is not None and self._ale is not None:
            self._ale.ale.recv()
        self._in_flight = None

    def _seed_new_episodes(
        self, envs: np.ndarray, lives: np.ndarray, ale_info: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Restart ``envs`` (whose episode just ended) from their next seed (see the module docstring).

        ale-py has already started a new episode there from its own generator; this reset replaces it.
        """
        self._seed_index[envs] += 1
        self._seeded_at[envs] = self._steps
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[envs] = True
        obs, info = self._reset_from_seeds(mask)
        lives = lives.copy()
        lives[envs] = info["lives"][envs]
        frame_number = np.array(ale_info["episode_frame_number"], copy=True)
        frame_number[envs] = info["episode_frame_number"][envs]
        return obs, lives, frame_number

    def _reset_from_seeds(self, mask: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the envs of ``mask`` from the seeds of their current seed index (a partial reset)."""
        envs = np.flatnonzero(mask)
        seeds = np.array([self.episode_seed(int(i), int(self._seed_index[i])) for i in envs])
        return self._backend().reset(seed=seeds, options={"reset_mask": mask})

    def close(self) -> None:
        """Stop the emulator threads (after collecting a step still in flight); the env cannot be used afterwards."""
        self._discard_step_in_flight()
        self._ale = None

    def __repr__(self) -> str:
        return f"AtariVecEnv(game={self.game!r}, num_envs={self.num_envs}, device={self.device})"
