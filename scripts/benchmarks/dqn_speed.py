"""``dqn-speed``: DQN training steps/s, ours vs Stable-Baselines3's ``DQN("CnnPolicy")`` on equal terms.

Both sides train on Breakout with the same number of envs (1, then 8), the same emulator settings
(frameskip 4 with a max-pool of the last two frames, sticky actions 0.25 per frame, 84x84 grayscale,
a stack of 4, no no-op starts, full games), the same replay ratio (one update per 4 agent steps: SB3's
``train_freq`` / ``gradient_steps`` are derived from it, e.g. ``train_freq=1, gradient_steps=2`` with
8 envs), batch 32, the Nature CNN, Huber loss, Adam lr 1e-4, gradient clipping at 10, a 100k replay,
the same learning starts, a target copy every 1,000 updates and epsilon 0.01 once learning starts.
SB3 runs on its own ``make_atari_env`` + ``VecFrameStack`` (``sb3_env=adapter``: on our
:class:`~lodestar.envs.atari.AtariVecEnv` through the SB3 adapter instead). Ours runs with its
configuration's defaults, so the figures measure the speed levers a user gets.

Timing is interleaved in one process: our trainer runs ``DQNTrainer.train()`` and, every ``chunk``
agent steps after learning starts, a callback lets SB3 ``learn`` the same number of agent steps; each
side's clock runs only during its own chunks. Load from other processes therefore hits both alike.

The bounds are what each side's loop could reach if it did nothing but its update and its env step,
each timed alone on the filled buffer the way that side does it (ours: ``DQNTrainer.update``, replay
sample included; SB3: ``model.train(gradient_steps=G, batch_size=32)`` with its schedule's ``G``,
divided by ``G``; env: one batched step of random actions). A side that makes its updates while the
emulators step (ours with ``overlap_env_step``) is bounded by the larger of the two, a sequential one
by their sum. Acting (one forward pass per step) is left out of both bounds.

Options (``key=value``): ``learning_starts``, ``steps`` (agent steps timed per side), ``chunk``,
``num_envs`` (``1,8``), ``threads`` (torch threads for both sides), ``repeats`` (update and env
timings for the bounds), ``sb3_env`` (``atari`` or ``adapter``) and any of our config's overrides as
``ours.<key>=<value>`` (e.g. ``ours.overlap_env_step=false``).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.envs.atari import AtariVecEnv, atari_env_id
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.config import load_config

NAME = "dqn-speed"
GAME = "Breakout"
REPLAY_RATIO = 0.25  # gradient updates per agent step
BATCH = 32
CAPACITY = 100_000
TARGET_PERIOD = 1000  # updates
EPSILON = 0.01  # after learning starts, both sides
TARGET_RATIO = 1.3


def sb3_schedule(num_envs: int, replay_ratio: float = REPLAY_RATIO) -> tuple[int, int]:
    """SB3's ``(train_freq, gradient_steps)`` making ``replay_ratio`` updates per agent step.

    SB3 counts ``train_freq`` in vector steps of ``num_envs`` agent steps each.
    """
    per_vector_step = num_envs * replay_ratio
    if per_vector_step >= 1:
        if per_vector_step != int(per_vector_step):
            raise ValueError(
                f"{num_envs} envs x replay ratio {replay_ratio} is not a whole number of updates"
            )
        return 1, int(per_vector_step)
    train_freq = 1 / per_vector_step
    if train_freq != int(train_freq):
        raise ValueError(f"replay ratio {replay_ratio} with {num_envs} envs is not one update per whole step")
    return int(train_freq), 1


def sb3_env(num_envs: int, kind: str) -> Any:
    """SB3's vector env of ``num_envs`` Breakouts with our emulator settings."""
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    if kind == "adapter":
        from lodestar.envs.sb3 import SB3VecEnvAdapter

        return SB3VecEnvAdapter(AtariVecEnv(GAME, num_envs, device="cpu", seed=0))
    if kind != "atari":
        raise SystemExit(f"sb3_env must be atari or adapter, got {kind!r}")
    # frameskip=1 in the ALE env because SB3's AtariWrapper skips 4 frames itself (v5 + wrapper = 16);
    # sticky actions stay per emulator frame as in v5. Only its FIRE-on-reset differs from ours.
    env = make_atari_env(
        f"ale_py:{atari_env_id(GAME)}",  # the module prefix registers the ALE ids
        n_envs=num_envs,
        seed=0,
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.25},
        wrapper_kwargs={"noop_max": 0, "terminal_on_life_loss": False, "clip_reward": True},
    )
    return VecFrameStack(env, n_stack=4)


class Sb3Side:
    """SB3's ``DQN("CnnPolicy")`` with our settings, stepped in chunks of agent steps."""

    def __init__(self, num_envs: int, learning_starts: int, env_kind: str) -> None:
        from stable_baselines3 import DQN

        train_freq, gradient_steps = sb3_schedule(num_envs)
        self.num_envs = num_envs
        self.gradient_steps = gradient_steps
        self.model = DQN(
            "CnnPolicy",
            sb3_env(num_envs, env_kind),
            learning_rate=1e-4,
            buffer_size=CAPACITY,
            learning_starts=learning_starts,
            batch_size=BATCH,
            gamma=0.99,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            # SB3 counts agent steps (summed over envs) between target copies; ours counts updates.
            target_update_interval=int(TARGET_PERIOD / REPLAY_RATIO),
            # Random actions until learning starts (SB3 does that by itself), then EPSILON, as ours.
            exploration_initial_eps=EPSILON,
            exploration_final_eps=EPSILON,
            max_grad_norm=10.0,
            optimize_memory_usage=False,
            device="cpu",
            seed=0,
            verbose=0,
        )

    def learn(self, steps: int) -> float:
        """Train ``steps`` more agent steps; the seconds it took."""
        start = time.perf_counter()
        self.model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return time.perf_counter() - start

    def update(self) -> None:
        """One call of SB3's ``train`` as ``learn`` makes it: ``gradient_steps`` updates at a time
        (its per-call work, such as the learning-rate update and logging, is shared by them)."""
        self.model.train(gradient_steps=self.gradient_steps, batch_size=BATCH)

    def env_step(self, rng: np.random.Generator) -> None:
        env = self.model.get_env()
        assert env is not None
        env.step(rng.integers(0, int(env.action_space.n), self.num_envs))  # type: ignore[attr-defined]

    def close(self) -> None:
        env = self.model.get_env()
        if env is not None:
            env.close()


class Interleave:
    """Our trainer's callback: from learning starts on, hand SB3 the same agent steps, chunk by chunk.

    It times ours between its calls (SB3's chunks excluded) and SB3 inside them.
    """

    def __init__(self, sb3: Sb3Side, learning_starts: int, chunk: int) -> None:
        self.sb3, self.learning_starts, self.chunk = sb3, learning_starts, chunk
        self.mark: tuple[float, int] | None = None  # (time, step) where our clock last started
        self.ours_seconds = self.sb3_seconds = 0.0
        self.ours_steps = self.sb3_steps = 0

    def __call__(self, trainer: DQNTrainer) -> None:
        step = trainer.collector.global_step
        if self.mark is None:
            if step >= self.learning_starts:
                self.sb3.learn(self.learning_starts)  # SB3 through the same learning starts, untimed
                self.mark = (time.perf_counter(), step)
            return
        started, start_step = self.mark
        if step - start_step < self.chunk:
            return
        self.ours_seconds += time.perf_counter() - started
        self.ours_steps += step - start_step
        before = self.sb3.model.num_timesteps
        self.sb3_seconds += self.sb3.learn(step - start_step)
        self.sb3_steps += self.sb3.model.num_timesteps - before
        self.mark = (time.perf_counter(), step)

    def rates(self) -> tuple[float, float]:
        """Agent steps per second of ours and of SB3."""
        if not self.ours_steps or not self.sb3_steps:
            raise RuntimeError("no chunk was timed: steps must be at least one chunk")
        return self.ours_steps / self.ours_seconds, self.sb3_steps / self.sb3_seconds


def our_config(num_envs: int, learning_starts: int, total: int, runs_dir: str, extra: list[str]) -> DQNConfig:
    overrides = [
        "device=cpu",
        f"env.game={GAME}",
        f"env.num_envs={num_envs}",
        "env.noop_max=0",
        "env.repeat_action_probability=0.25",
        f"total_steps={total}",
        f"replay.learning_starts={learning_starts}",
        f"replay.capacity={CAPACITY}",
        f"replay.replay_ratio={REPLAY_RATIO}",
        f"agent.batch_size={BATCH}",
        "agent.lr=0.0001",
        "agent.adam_eps=1e-8",  # SB3's Adam default
        f"agent.target_update_period={TARGET_PERIOD}",
        f"agent.epsilon_end={EPSILON}",
        "agent.epsilon_decay_steps=0",  # epsilon is 1 until learning starts, then EPSILON
        "eval.episodes=0",
        "checkpoint_every_steps=0",
        "save_replay=false",
        f"log_every_steps={total}",
        f"runs_dir={runs_dir}",
        *extra,
    ]
    return load_config(DQNConfig, None, overrides)


def best_seconds(jobs: dict[str, Callable[[], None]], repeats: int, rounds: int = 10) -> dict[str, float]:
    """Seconds per call of each job: the best round's mean, over ``rounds`` interleaved rounds of
    ``repeats // rounds`` calls. The best round is the least disturbed by other processes, so a bound
    built on it stays a bound on a shared machine."""
    best = dict.fromkeys(jobs, float("inf"))
    per_round = max(repeats // rounds, 1)
    for job in jobs.values():
        job()  # warm-up
    for _ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            for _ in range(per_round):
                job()
            best[name] = min(best[name], (time.perf_counter() - start) / per_round)
    return best


@dataclass
class Measured:
    """One env count's figures: both sides' rates and the per-call costs behind the bounds."""

    num_envs: int
    ours: float
    sb3: float
    ours_update: float
    sb3_update: float
    ours_env: float
    sb3_env: float
    overlapped: bool

    def bound(self, update: float, env_step: float, overlapped: bool) -> float:
        """Agent steps/s of a loop that only updates (at the replay ratio) and steps the envs."""
        update_per_step, env_per_step = update * REPLAY_RATIO, env_step / self.num_envs
        seconds = max(update_per_step, env_per_step) if overlapped else update_per_step + env_per_step
        return 1.0 / seconds


def measure(
    num_envs: int,
    learning_starts: int,
    steps: int,
    chunk: int,
    repeats: int,
    env_kind: str,
    extra: list[str],
) -> Measured:
    sb3 = Sb3Side(num_envs, learning_starts, env_kind)
    interleave = Interleave(sb3, learning_starts, chunk)
    with tempfile.TemporaryDirectory() as tmp:
        config = our_config(num_envs, learning_starts, learning_starts + steps, tmp, extra)
        trainer = DQNTrainer(config, f"{tmp}/run", callbacks=[interleave])
        trainer.train()
        ours, theirs = interleave.rates()
        # The bounds' costs, on the buffers the runs filled.
        rng = np.random.default_rng(0)
        step = trainer.collector.global_step
        updates = best_seconds({"ours": lambda: trainer.update(step), "sb3": sb3.update}, repeats)
        updates["sb3"] /= sb3.gradient_steps  # seconds per update
        our_env = trainer.env

        def our_env_step() -> None:
            our_env.step(torch.from_numpy(rng.integers(0, our_env.num_actions, num_envs)))

        envs = best_seconds({"ours": our_env_step, "sb3": lambda: sb3.env_step(rng)}, 4 * repeats)
        trainer.close()
    sb3.close()
    return Measured(
        num_envs,
        ours,
        theirs,
        updates["ours"],
        updates["sb3"],
        envs["ours"],
        envs["sb3"],
        config.overlap_env_step,
    )


def figures_of(m: Measured) -> list[Figure]:
    n = m.num_envs
    ours_bound = m.bound(m.ours_update, m.ours_env, m.overlapped)
    sb3_bound = m.bound(m.sb3_update, m.sb3_env, overlapped=False)
    ours_bound_name = "ours_max_update_env_bound" if m.overlapped else "ours_update_plus_env_bound"
    return [
        Figure(
            NAME,
            f"ours_{n}env_steps_per_s",
            round(m.ours, 1),
            "steps/s",
            f"sb3_dqn_cnn_{n}env",
            round(m.sb3, 1),
            TARGET_RATIO,
        ),
        # ratio = fraction of the side's own bound reached
        Figure(
            NAME, f"ours_{n}env_vs_bound", round(m.ours, 1), "steps/s", ours_bound_name, round(ours_bound, 1)
        ),
        Figure(
            NAME,
            f"sb3_{n}env_vs_bound",
            round(m.sb3, 1),
            "steps/s",
            "sb3_update_plus_env_bound",
            round(sb3_bound, 1),
        ),
        Figure(
            NAME,
            f"ours_update_ms_{n}env",
            round(m.ours_update * 1e3, 2),
            "ms",
            "sb3_train_ms",
            round(m.sb3_update * 1e3, 2),
            higher_is_better=False,
        ),
        Figure(
            NAME,
            f"ours_env_step_ms_{n}env",
            round(m.ours_env * 1e3, 3),
            "ms",
            "sb3_env_step_ms",
            round(m.sb3_env * 1e3, 3),
            higher_is_better=False,
        ),
    ]


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    options = dict(options)
    extra = [f"{key[5:]}={options.pop(key)}" for key in list(options) if key.startswith("ours.")]
    learning_starts = int(options.pop("learning_starts", 320 if quick else 5_000))
    steps = int(options.pop("steps", 192 if quick else 10_000))
    chunk = int(options.pop("chunk", 64 if quick else 1_000))
    repeats = int(options.pop("repeats", 5 if quick else 50))
    env_kind = options.pop("sb3_env", "atari")
    counts = [int(n) for n in options.pop("num_envs", "1,8").split(",")]
    if "threads" in options:
        torch.set_num_threads(int(options.pop("threads")))
    if options:
        raise SystemExit(f"unknown dqn-speed options: {', '.join(sorted(options))}")
    for value, what in ((learning_starts, "learning_starts"), (steps, "steps"), (chunk, "chunk")):
        if value % 8 or value <= 0:
            raise SystemExit(
                f"{what} must be a positive multiple of 8 (whole vector steps on both sides), got {value}"
            )
    figures = []
    for n in counts:
        figures += figures_of(measure(n, learning_starts, steps, chunk, repeats, env_kind, extra))
        gc.collect()  # SB3's replay arrays are large: free them before the next env count
    report(
        figures,
        f"{NAME}: {GAME}, batch 32, 1 update / 4 agent steps, {steps} agent steps per side after "
        f"{learning_starts} learning starts, interleaved in chunks of {chunk}; SB3 env: {env_kind}; "
        f"torch threads {torch.get_num_threads()}",
    )
    return figures
