"""Benchmark ``rollout``: random-policy stepping speed of :class:`lodestar.envs.atari.AtariVecEnv`.

Our row is the path a training loop takes: plain ``env.step(actions)`` with a torch tensor of actions
(what :class:`lodestar.agents.rollout.RolloutCollector` calls), observations returned as tensors.

References, measured in the same run on the same machine with the same game and emulator work per
agent step (sticky actions 0.25, 4 emulator frames with a max-pool of the last two, 84x84 grayscale,
stack of 4, the minimal action set, unclipped rewards, full games, a 108,000-frame cap):

- raw ``ale_py.vector_env.AtariVectorEnv`` (same ``num_envs``, no no-op starts): our wrapper must keep
  at least 95% of its speed at every env count;
- EnvPool ``envpool.make("<Game>-v5", env_type="gymnasium")`` (same ``num_envs`` and batch size):
  at least 95% of its speed at 8 envs. Its settings match ours except that every reset runs exactly
  one no-op frame (``noop_max=1``, EnvPool's smallest: 0 crashes it), one emulator frame per episode;
- Stable-Baselines3 ``make_atari_env`` + ``VecFrameStack(4)`` with ``DummyVecEnv`` and
  ``SubprocVecEnv`` at 8 envs: we must be at least 2x the faster one. The base env is
  ``ALE/<Game>-v5`` with ``frameskip=1`` because SB3's ``AtariWrapper`` skips 4 frames itself (v5's
  own frameskip on top would make 16 frames per step). Its wrapper is set to match (no no-op
  starts, no life-loss episodes, no reward clipping); only its FIRE-on-reset in games such as
  Breakout remains, a few frames per episode.

Every configuration replays the same kind of pre-drawn uniform random actions (a numpy row, or a torch
tensor row for ours), so drawing random numbers is timed for none of them. A CPU-time figure (process
CPU per agent step, ours vs raw) isolates the wrapper's own cost from waiting caused by other
processes when the machine is shared.

Options (``key=value``): ``game`` (Breakout), ``device`` (auto), ``num_envs`` (``8,16``),
``steps`` (batched steps per configuration), ``chunks`` (interleaved timing rounds),
``envpool`` (1: include the EnvPool references), ``envpool_target_envs`` (8), ``sb3`` (1: include
the SB3 references), ``sb3_envs`` (8). Throughput is agent steps summed over envs per second;
configurations are timed in interleaved chunks so load spikes on a shared machine hit all of them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lodestar.envs.atari import AtariVecEnv, atari_env_id, resolve_game
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.device import resolve_device

NAME = "rollout"
UNIT = "steps/s"
TARGET = 0.95  # of raw ale-py (every env count) and of EnvPool (at envpool_target_envs)
MAX_FRAMES = 108_000


@dataclass
class _Config:
    """One measured configuration: ``step(k)`` runs ``k`` batched random steps."""

    label: str
    kind: str
    num_envs: int
    step: Callable[[int], None]
    close: Callable[[], None]
    device: torch.device | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    batched_steps: int = 0

    def time(self, count: int) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        self.step(count)
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - start_cpu
        self.batched_steps += count

    @property
    def rate(self) -> float:
        """Agent steps (summed over envs) per wall-clock second."""
        return self.batched_steps * self.num_envs / self.seconds

    @property
    def cpu_us_per_step(self) -> float:
        """CPU time of this process (all its threads) per agent step, in microseconds."""
        return 1e6 * self.cpu_seconds / (self.batched_steps * self.num_envs)


def _stepper(step: Callable[[Any], object], rows: Sequence[Any]) -> Callable[[int], None]:
    """``step(k)``: ``k`` calls of ``step`` with the next pre-drawn action rows (cycling)."""
    position = 0

    def run(count: int) -> None:
        nonlocal position
        for _ in range(count):
            step(rows[position])
            position = (position + 1) % len(rows)

    return run


def _action_rows(num_actions: int, num_envs: int, seed: int = 0, count: int = 4096) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_actions, (count, num_envs), dtype=np.int64)


def _ours(game: str, num_envs: int, device: torch.device) -> _Config:
    env = AtariVecEnv(game, num_envs, device=device, seed=0)
    env.reset()
    rows = list(torch.from_numpy(_action_rows(env.num_actions, num_envs)).to(device).unbind(0))
    return _Config(
        f"AtariVecEnv {num_envs} envs", "AtariVecEnv", num_envs, _stepper(env.step, rows), env.close, device
    )


def _raw(game: str, num_envs: int) -> _Config:
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(
        resolve_game(game),
        num_envs,
        repeat_action_probability=0.25,
        frameskip=4,
        maxpool=True,
        stack_num=4,
        img_height=84,
        img_width=84,
        grayscale=True,
        noop_max=0,
        reward_clipping=False,
        use_fire_reset=False,
        episodic_life=False,
        max_num_frames_per_episode=MAX_FRAMES,
        autoreset_mode="SameStep",
    )
    env.reset(seed=0)
    rows = list(_action_rows(int(env.single_action_space.n), num_envs))
    return _Config(
        f"ale-py AtariVectorEnv {num_envs} envs", "raw", num_envs, _stepper(env.step, rows), env.close
    )


def envpool_task_id(game: str) -> str:
    """EnvPool's id of a game (``"Breakout-v5"``); a clear error when EnvPool is missing or lacks it."""
    try:
        import envpool
    except ImportError as exc:
        raise SystemExit(
            "rollout: the EnvPool reference needs `pip install envpool` (in the dev extra); "
            "or run with envpool=0"
        ) from exc
    from ale_py.registration import rom_id_to_name

    task_id = f"{rom_id_to_name(resolve_game(game))}-v5"
    if task_id not in envpool.list_all_envs():
        raise SystemExit(f"rollout: EnvPool has no task {task_id!r}; run with envpool=0")
    return task_id


def _envpool(game: str, num_envs: int) -> _Config:
    import envpool

    env = envpool.make(
        envpool_task_id(game),
        env_type="gymnasium",
        num_envs=num_envs,
        batch_size=num_envs,
        seed=0,
        frame_skip=4,
        repeat_action_probability=0.25,
        stack_num=4,
        img_height=84,
        img_width=84,
        gray_scale=True,
        noop_max=1,
        use_fire_reset=False,
        episodic_life=False,
        reward_clip=False,
        full_action_space=False,
        max_episode_steps=MAX_FRAMES // 4,
    )
    env.reset()
    rows = list(_action_rows(int(env.action_space.n), num_envs))
    return _Config(f"EnvPool {num_envs} envs", "EnvPool", num_envs, _stepper(env.step, rows), env.close)


def _sb3(game: str, num_envs: int, subprocess: bool) -> _Config:
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack

    gym.register_envs(ale_py)
    venv = VecFrameStack(
        make_atari_env(
            # "module:id" makes gymnasium import ale_py (registering ALE/*) inside subprocess workers.
            f"ale_py:{atari_env_id(game)}",
            n_envs=num_envs,
            seed=0,
            vec_env_cls=SubprocVecEnv if subprocess else DummyVecEnv,
            # fork starts workers in a blink (forkserver re-imports torch in each of them, which takes
            # most of a --quick budget on 2 cores); it is safe because SB3 envs are built before any
            # emulator thread or torch thread pool exists in this process.
            vec_env_kwargs={"start_method": "fork"} if subprocess else None,
            env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25},
            wrapper_kwargs={"noop_max": 0, "terminal_on_life_loss": False, "clip_reward": False},
        ),
        n_stack=4,
    )
    venv.reset()
    rows = list(_action_rows(int(venv.action_space.n), num_envs))
    kind = "SubprocVecEnv" if subprocess else "DummyVecEnv"
    return _Config(
        f"SB3 make_atari_env+VecFrameStack {kind} {num_envs} envs",
        f"SB3 {kind}",
        num_envs,
        _stepper(venv.step, rows),
        venv.close,
    )


def _measure(configs: list[_Config], steps: int, chunks: int, warmup: int, settle: float = 0.02) -> None:
    """Time every configuration in ``chunks`` interleaved rounds of ``steps // chunks`` steps.

    The order rotates every round so each configuration follows every other one equally often
    (whatever runs right after the SB3 envs was measurably slowed on a shared machine), and a short
    untimed pause lets the previous configuration's threads and processes go idle.
    """
    for config in configs:
        config.step(warmup)
    per_chunk = max(1, steps // chunks)
    for round_index in range(chunks):
        shift = round_index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            time.sleep(settle)
            config.time(per_chunk)


def _flag(options: dict[str, str], key: str) -> bool:
    return options.get(key, "1") not in ("0", "false", "no")


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    """Measure every configuration, print the table and BENCH lines, return the figures."""
    known = {
        "game",
        "device",
        "num_envs",
        "steps",
        "chunks",
        "envpool",
        "envpool_target_envs",
        "sb3",
        "sb3_envs",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise SystemExit(f"rollout: unknown option(s) {unknown}; known: {sorted(known)}")
    try:
        game = resolve_game(options.get("game", "Breakout"))
        device = resolve_device(options.get("device", "auto"))
        env_counts = [int(n) for n in options.get("num_envs", "8,16").split(",")]
        steps = int(options.get("steps", 200 if quick else 4000))
        chunks = int(options.get("chunks", 10 if quick else 40))
        envpool_target_envs = int(options.get("envpool_target_envs", "8"))
        sb3_envs = int(options.get("sb3_envs", "8"))
    except ValueError as exc:
        raise SystemExit(f"rollout: bad option: {exc}") from exc
    with_envpool, with_sb3 = _flag(options, "envpool"), _flag(options, "sb3")
    if with_envpool:
        envpool_task_id(game)  # fail before building anything
    warmup = 20 if quick else 100

    # SB3's subprocess workers fork first, before this process has emulator threads.
    sb3 = [_sb3(game, sb3_envs, subprocess=True), _sb3(game, sb3_envs, subprocess=False)] if with_sb3 else []
    ours_counts = sorted({*env_counts, sb3_envs}) if with_sb3 else env_counts
    ours = {n: _ours(game, n, device) for n in ours_counts}
    raw = {n: _raw(game, n) for n in env_counts}
    pool = {n: _envpool(game, n) for n in env_counts} if with_envpool else {}
    configs = [*ours.values(), *raw.values(), *pool.values(), *sb3]
    try:
        _measure(configs, steps, chunks, warmup)
    finally:
        for config in configs:
            config.close()

    def figure(mine: _Config, versus: str, reference: _Config, target: float | None) -> Figure:
        return Figure(
            NAME,
            f"{mine.label} vs {versus}",
            round(mine.rate, 1),
            UNIT,
            reference=reference.label,
            reference_value=round(reference.rate, 1),
            target=target,
            device=str(device),
        )

    figures = [figure(ours[n], "raw", raw[n], TARGET) for n in env_counts]
    figures += [
        figure(ours[n], "EnvPool", pool[n], TARGET if n == envpool_target_envs else None) for n in pool
    ]
    # CPU time per step counts the emulator threads and our wrapper but not the waiting caused by
    # other processes, so it shows the wrapper's cost even on a loaded machine. (SB3 subprocess
    # workers are other processes, hence no CPU figure against SB3.)
    figures += [
        Figure(
            NAME,
            f"{ours[n].label} CPU time per step vs raw",
            round(ours[n].cpu_us_per_step, 2),
            "us/step",
            reference=raw[n].label,
            reference_value=round(raw[n].cpu_us_per_step, 2),
            target=round(1 / TARGET, 3),
            higher_is_better=False,
            device=str(device),
        )
        for n in env_counts
    ]
    if sb3:
        mine = ours[sb3_envs]
        figures += [figure(mine, config.kind, config, None) for config in sb3]
        figures.append(figure(mine, "best SB3", max(sb3, key=lambda config: config.rate), 2.0))
    title = f"rollout: random-policy {game} stepping ({'quick' if quick else 'full'}, {steps} steps per env)"
    report(figures, title)
    return figures
