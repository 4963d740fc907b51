"""DQN training on Atari, readable top to bottom: act, store, learn, log, evaluate, checkpoint.

Resuming is exact on CPU with fixed seeds. The emulators of ale-py's vector env cannot be
snapshotted, so a checkpoint records the actions sent to the env (one byte per env step); a resumed
run re-seeds the envs and replays those actions to bring every emulator back to where it was, then
restores networks, optimizer, counters, RNG states and the replay buffer.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import ARCHITECTURE_KEYS, DQNConfig
from lodestar.agents.dqn.evaluation import evaluate, record_video
from lodestar.agents.rollout import RolloutCollector, Transition
from lodestar.envs.atari import AtariVecEnv
from lodestar.replay.buffer import ReplayBuffer
from lodestar.runtime.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    check_config_matches,
    load_file,
)
from lodestar.runtime.config import save_config, to_dict, to_yaml
from lodestar.runtime.device import resolve_device
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.progress import progress
from lodestar.runtime.seeding import rng_state, seed_everything, set_rng_state


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    updates: int
    episode_returns: list[float] = field(default_factory=list)
    last_eval_mean: float | None = None
    interrupted: bool = False
    # Seconds in the training loop summed over every resumed segment up to the last checkpoint;
    # None when the run started from a checkpoint written before this was recorded.
    train_seconds: float | None = None


def make_train_env(config: DQNConfig, device: torch.device) -> AtariVecEnv:
    e = config.env
    return AtariVecEnv(
        e.game,
        e.num_envs,
        device=device,
        num_threads=e.num_threads,
        seed=config.seed,
        frameskip=e.frameskip,
        repeat_action_probability=e.repeat_action_probability,
        max_episode_frames=e.max_episode_frames,
        noop_max=e.noop_max,
        full_action_space=e.full_action_space,
    )


def make_replay(config: DQNConfig, device: torch.device) -> ReplayBuffer:
    r, a = config.replay, config.agent
    return ReplayBuffer(
        r.capacity,
        config.env.num_envs,
        (4, 84, 84),
        torch.uint8,
        frame_stack=4,
        n_step=a.n_step,
        gamma=a.gamma,
        prioritized=r.prioritized,
        alpha=r.alpha,
        beta=r.beta_start,
        priority_eps=r.priority_eps,
        device=device,
    )


class DQNTrainer:
    """Owns one run: env, replay, agent, logger and checkpoints under ``run_dir``."""

    def __init__(
        self, config: DQNConfig, run_dir: str | Path, callbacks: Sequence[Callable[[DQNTrainer], None]] = ()
    ) -> None:
        """``callbacks`` run after every loop iteration (act, store, learn, log); they may set
        ``stop_requested`` to end the run with a checkpoint."""
        self.config = config
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir)
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.env = make_train_env(config, self.device)
        self.num_actions = int(self.env.single_action_space.n)
        self.replay = make_replay(config, self.device)
        self.agent = DQNAgent(self.num_actions, config.agent, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.collector = RolloutCollector(self.env, self._policy, sink=self._store)
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", config.keep_checkpoints)
        self.updates_owed = 0.0
        # One byte per env per step (Atari has at most 18 actions): 10M steps cost 10 MB, not 10M tensors.
        self.actions_taken = bytearray()
        self.last_eval_mean: float | None = None
        self.last_eval_step = -1
        self.episode_returns: list[float] = []
        self.clipped_running = torch.zeros(self.env.num_envs, device=self.device)
        self.clipped_finished: list[tuple[int, float]] = []
        self.stop_requested = False
        self.last_update_metrics: dict[str, float] = {}
        self.train_seconds_before: float | None = 0.0  # earlier segments of a resumed run
        self.segment_start: float | None = None

    # -- acting and storing -------------------------------------------------------------------
    def _policy(self, obs: torch.Tensor) -> torch.Tensor:
        step = self.collector.global_step
        epsilon = 1.0 if step < self.config.replay.learning_starts else self.agent.epsilon(step)
        action = self.agent.act(obs, epsilon, self.generator)
        self.actions_taken += action.to(device="cpu", dtype=torch.uint8).numpy().tobytes()
        return action

    def _store(self, t: Transition) -> None:
        reward = torch.sign(t.reward) if self.config.agent.clip_rewards else t.reward
        terminated = t.terminated
        if self.config.env.terminal_on_life_loss:
            # no bootstrap through a lost life, but the game (and the frame stack) goes on
            terminated = terminated | t.info["life_lost"]
        self.replay.add(t.obs, t.action, reward, terminated, t.truncated, t.next_obs, episode_end=t.done)
        self.clipped_running += reward
        done = t.done
        if bool(done.any()):
            step = self.collector.global_step + self.env.num_envs
            self.clipped_finished.extend((step, float(v)) for v in self.clipped_running[done].tolist())
            self.clipped_running.masked_fill_(done, 0.0)

    # -- learning -----------------------------------------------------------------------------
    def _learn(self, num_new_steps: int) -> None:
        """Do the gradient updates owed for ``num_new_steps`` new agent steps (replay ratio)."""
        c = self.config
        if self.collector.global_step < c.replay.learning_starts:
            return
        self.updates_owed += num_new_steps * c.replay.replay_ratio
        while self.updates_owed >= 1.0:
            self.updates_owed -= 1.0
            progress_fraction = min(self.collector.global_step / c.total_steps, 1.0)
            self.replay.beta = c.replay.beta_start + progress_fraction * (
                c.replay.beta_end - c.replay.beta_start
            )
            batch = self.replay.sample(c.agent.batch_size, self.generator)
            out = self.agent.update(batch, self.generator)
            loss = float(out["loss"])
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss} at step {self.collector.global_step} (update {self.agent.updates}); "
                    f"stopped without saving: the last good checkpoint in {self.checkpoints.directory} is kept"
                )
            if c.replay.prioritized:
                self.replay.update_priorities(batch.indices, out["td_abs"])
            self.last_update_metrics = {"loss": loss, "q_mean": float(out["q_mean"])}

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> TrainResult:
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(c, self.run_dir / "config.yaml")
        if self.collector.obs is None:
            self.collector.reset(seed=c.seed)
        logger = RunLogger(self.run_dir, purge_step=self.collector.global_step or None)
        if self.collector.global_step == 0:
            logger.text("config", "```\n" + to_yaml(c) + "```", 0)
        bar = progress(
            total=c.total_steps, initial=self.collector.global_step, desc=f"DQN {c.env.game}", unit="step"
        )
        window_start = (time.perf_counter(), self.collector.global_step, self.agent.updates)
        self.segment_start = window_start[0]
        next_log = self._next_multiple(c.log_every_steps)
        next_eval = self._next_multiple(c.eval.every_steps)
        next_checkpoint = self._next_multiple(c.checkpoint_every_steps)
        handlers = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.collector.global_step < c.total_steps and not self.stop_requested:
                self.collector.step()
                self._learn(self.env.num_envs)
                step = self.collector.global_step
                bar.update(self.env.num_envs)
                self._log_episodes(logger)
                if step >= next_log:
                    window_start = self._log_progress(logger, window_start)
                    next_log = self._next_multiple(c.log_every_steps)
                if step >= next_eval:
                    self._evaluate(logger)
                    next_eval = self._next_multiple(c.eval.every_steps)
                if step >= next_checkpoint:
                    self.save_checkpoint()
                    next_checkpoint = self._next_multiple(c.checkpoint_every_steps)
                for callback in self.callbacks:
                    callback(self)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            bar.close()
        path = self.save_checkpoint()
        train_seconds = self.train_seconds()
        self.train_seconds_before, self.segment_start = train_seconds, None
        if self.stop_requested:
            print(
                f"interrupted at step {self.collector.global_step}; checkpoint written to {path}", flush=True
            )
        elif self.last_eval_step != self.collector.global_step:
            self._evaluate(logger)
        logger.close()
        self.env.close()
        return TrainResult(
            self.run_dir,
            self.collector.global_step,
            self.agent.updates,
            self.episode_returns,
            self.last_eval_mean,
            interrupted=self.stop_requested,
            train_seconds=train_seconds,
        )

    def train_seconds(self) -> float | None:
        """Wall time spent in :meth:`train` so far, over all segments of the run (None: unknown)."""
        if self.train_seconds_before is None:
            return None
        running = time.perf_counter() - self.segment_start if self.segment_start is not None else 0.0
        return self.train_seconds_before + running

    def _request_stop(self, signum: int, frame: Any) -> None:
        # Finish the current step so the checkpoint is consistent, then stop.
        self.stop_requested = True

    def _next_multiple(self, every: int) -> int:
        if every <= 0:
            return 2**62
        return (self.collector.global_step // every + 1) * every

    def _log_episodes(self, logger: RunLogger) -> None:
        for episode in self.collector.pop_episodes():
            self.episode_returns.append(episode.episode_return)
            logger.scalar("charts/episodic_return", episode.episode_return, episode.global_step)
            logger.scalar("charts/episodic_length", episode.length, episode.global_step)
        for step, clipped in self.clipped_finished:
            logger.scalar("charts/clipped_episodic_return", clipped, step)
        self.clipped_finished.clear()

    def _log_progress(self, logger: RunLogger, window: tuple[float, int, int]) -> tuple[float, int, int]:
        now, step, updates = time.perf_counter(), self.collector.global_step, self.agent.updates
        elapsed = max(now - window[0], 1e-9)
        values = {
            "charts/epsilon": self.agent.epsilon(step) if step >= self.config.replay.learning_starts else 1.0,
            "charts/steps_per_second": (step - window[1]) / elapsed,
            "charts/updates_per_second": (updates - window[2]) / elapsed,
            "charts/replay_size": len(self.replay),
        }
        values.update({f"losses/{k}": v for k, v in self.last_update_metrics.items()})
        logger.scalars(values, step)
        return now, step, updates

    def _evaluate(self, logger: RunLogger) -> None:
        e, step = self.config.eval, self.collector.global_step
        if e.episodes <= 0:
            return
        returns = evaluate(
            self.agent, self.config, episodes=e.episodes, seed=self.config.seed + 10_000 + step
        )
        self.last_eval_mean, self.last_eval_step = float(np.mean(returns)), step
        logger.scalars(
            {
                "eval/episodic_return_mean": self.last_eval_mean,
                "eval/episodic_return_median": float(np.median(returns)),
            },
            step,
        )
        if e.video:
            frames = record_video(
                self.agent, self.config, seed=self.config.seed + step, max_steps=e.video_max_steps
            )
            logger.video("eval/video", frames, step, fps=30)
        logger.flush()

    # -- checkpoints --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "agent": self.agent.state_dict(),
            "global_step": self.collector.global_step,
            "updates_owed": self.updates_owed,
            "actions": torch.frombuffer(self.actions_taken, dtype=torch.uint8)
            .clone()
            .view(-1, self.env.num_envs)
            if self.actions_taken
            else torch.zeros((0, self.env.num_envs), dtype=torch.uint8),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "episode_returns": list(self.episode_returns),
            "clipped_running": self.clipped_running.cpu(),
            "last_eval_step": self.last_eval_step,
            "train_seconds": self.train_seconds(),
        }

    def save_checkpoint(self) -> Path:
        step = self.collector.global_step
        if self.config.save_replay:
            atomic_save(self.replay.state_dict(), self.run_dir / "checkpoints" / "replay.pt")
        return self.checkpoints.save(self._state(), step, to_dict(self.config))

    def restore(self, checkpoint: str | Path | None = None) -> None:
        """Load the newest (or given) checkpoint and bring the envs back to the same moment."""
        state = self.checkpoints.load(checkpoint)
        source = str(checkpoint or self.checkpoints.latest())
        check_config_matches(
            state["config"], to_dict(self.config), [*ARCHITECTURE_KEYS, "env.num_envs"], source
        )
        self.agent.load_state_dict(state["agent"], source)
        replay_path = self.run_dir / "checkpoints" / "replay.pt"
        if self.config.save_replay:
            if not replay_path.is_file():
                raise CheckpointError(
                    f"{replay_path} is missing: the run saved its replay buffer and needs it to resume"
                )
            self.replay.load_state_dict(load_file(replay_path, self.device))
        self._replay_actions(state["actions"])
        self.updates_owed = float(state["updates_owed"])
        self.episode_returns = list(state["episode_returns"])
        self.clipped_running = state["clipped_running"].to(self.device)
        self.last_eval_step = int(state["last_eval_step"])
        self.train_seconds_before = state.get("train_seconds")
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        if self.collector.global_step != state["global_step"]:
            raise CheckpointError(
                f"{source}: replayed {self.collector.global_step} steps but the checkpoint is at {state['global_step']}"
            )

    def _replay_actions(self, actions: torch.Tensor) -> None:
        self.collector.reset(seed=self.config.seed)
        sink, policy = self.collector.sink, self.collector.policy
        recorded = iter(actions.to(self.device, dtype=torch.int64))
        self.collector.sink = None
        self.collector.policy = lambda obs: next(recorded)
        try:
            for _ in range(len(actions)):
                self.collector.step()
        finally:
            self.collector.sink, self.collector.policy = sink, policy
        self.collector.pop_episodes()
        self.actions_taken = bytearray(actions.to(dtype=torch.uint8).contiguous().numpy().tobytes())
