"""Benchmark ``rollout``: random-policy stepping speed of :class:`lodestar.envs.atari.AtariVecEnv`.

References, measured in the same run on the same machine with the same game and emulator work per
agent step (sticky actions 0.25, 4 emulator frames with max-pool, 84x84 grayscale, stack of 4, no
no-op starts, unclipped rewards, full games):

- raw ``ale_py.vector_env.AtariVectorEnv`` with numpy random actions (same ``num_envs``): our wrapper
  must keep at least 95% of its speed;
- Stable-Baselines3 ``make_atari_env`` + ``VecFrameStack(4)`` with ``DummyVecEnv`` and
  ``SubprocVecEnv`` at 8 envs: we must be at least 2x the faster one. The base env is
  ``ALE/<Game>-v5`` with ``frameskip=1`` because SB3's ``AtariWrapper`` skips 4 frames itself (v5's
  own frameskip on top would make 16 frames per step). Its wrapper is set to match (no no-op
  starts, no life-loss episodes, no reward clipping); only its FIRE-on-reset in games such as
  Breakout remains, a few frames per episode.

A CPU-time figure (process CPU per agent step, ours vs raw) isolates the wrapper's own cost from
waiting caused by other processes when the machine is shared.

Options (``key=value``): ``game`` (Breakout), ``device`` (auto), ``num_envs`` (``8,16``),
``steps`` (batched steps per configuration), ``chunks`` (interleaved timing rounds),
``sb3`` (1: include the SB3 references), ``sb3_envs`` (8). Throughput is agent steps summed over
envs per second; configurations are timed in interleaved chunks so load spikes on a shared machine
hit all of them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lodestar.envs.atari import AtariVecEnv, atari_env_id, resolve_game
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.device import resolve_device

NAME = "rollout"
UNIT = "steps/s"


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


def _ours(game: str, num_envs: int, device: torch.device) -> _Config:
    env = AtariVecEnv(game, num_envs, device=device, seed=0)
    env.reset()
    generator = torch.Generator(device=device).manual_seed(0)

    def step(count: int) -> None:
        for _ in range(count):
            actions = torch.randint(0, env.num_actions, (num_envs,), device=device, generator=generator)
            env.step(actions)

    return _Config(f"AtariVecEnv {num_envs} envs", "AtariVecEnv", num_envs, step, env.close, device)


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
        max_num_frames_per_episode=108_000,
        autoreset_mode="SameStep",
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    num_actions = int(env.single_action_space.n)

    def step(count: int) -> None:
        for _ in range(count):
            env.step(rng.integers(0, num_actions, num_envs))

    return _Config(f"ale-py AtariVectorEnv {num_envs} envs", "raw", num_envs, step, env.close)


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
    rng = np.random.default_rng(0)
    num_actions = int(venv.action_space.n)

    def step(count: int) -> None:
        for _ in range(count):
            venv.step(rng.integers(0, num_actions, num_envs))

    kind = "SubprocVecEnv" if subprocess else "DummyVecEnv"
    return _Config(
        f"SB3 make_atari_env+VecFrameStack {kind} {num_envs} envs", f"SB3 {kind}", num_envs, step, venv.close
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


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    """Measure every configuration, print the table and BENCH lines, return the figures."""
    known = {"game", "device", "num_envs", "steps", "chunks", "sb3", "sb3_envs"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SystemExit(f"rollout: unknown option(s) {unknown}; known: {sorted(known)}")
    try:
        game = resolve_game(options.get("game", "Breakout"))
        device = resolve_device(options.get("device", "auto"))
        env_counts = [int(n) for n in options.get("num_envs", "8,16").split(",")]
        steps = int(options.get("steps", 200 if quick else 4000))
        chunks = int(options.get("chunks", 10 if quick else 40))
        with_sb3 = options.get("sb3", "1") not in ("0", "false", "no")
        sb3_envs = int(options.get("sb3_envs", "8"))
    except ValueError as exc:
        raise SystemExit(f"rollout: bad option: {exc}") from exc
    warmup = 20 if quick else 100

    sb3 = [_sb3(game, sb3_envs, subprocess=True), _sb3(game, sb3_envs, subprocess=False)] if with_sb3 else []
    ours_counts = sorted({*env_counts, sb3_envs}) if with_sb3 else env_counts
    ours = {n: _ours(game, n, device) for n in ours_counts}
    raw = {n: _raw(game, n) for n in env_counts}
    configs = [*ours.values(), *raw.values(), *sb3]
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

    figures = [figure(ours[n], "raw", raw[n], 0.95) for n in env_counts]
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
            target=round(1 / 0.95, 3),
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
