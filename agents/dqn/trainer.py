"""DQN training on Atari: :meth:`DQNTrainer.train_step` reads top to bottom as act, store, learn, log.

The loop around that step (periodic log, evaluation and checkpoint, Ctrl-C, NaN stop, progress bar,
final evaluation and checkpoint) is the one every trainer shares,
:class:`lodestar.runtime.training.Trainer`. It counts env steps: one loop iteration is one batched
step of ``env.num_envs`` envs, and ``total_steps``, ``log_every_steps``, ``eval.every_steps`` and
``checkpoint_every_steps`` are all in env steps.

Resuming is exact on CPU with fixed seeds. The emulators of ale-py's vector env cannot be
snapshotted, but the training env restarts episodes from seeds of their own (at most
``env.reseed_after_steps`` agent steps apart, see :mod:`lodestar.envs.atari`), so a checkpoint holds
each env's last seed and the actions since (the collector records actions, one byte per env step); a
resumed run restarts each emulator from that seed and replays those actions, which costs at most that
many steps plus one episode per env however long the run is, then restores networks, optimizer,
counters, RNG states and the replay buffer of the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lodestar.agents.dqn.agent import DQNAgent
from lodestar.agents.dqn.config import ARCHITECTURE_KEYS, DQNConfig
from lodestar.agents.dqn.evaluation import evaluate, record_video, video_fps
from lodestar.agents.rollout import RolloutCollector, Transition
from lodestar.envs.atari import AtariVecEnv
from lodestar.envs.base import Observation, tensor_observation
from lodestar.replay.buffer import ReplayBuffer
from lodestar.runtime.checkpoint import CheckpointError
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.seeding import rng_state, set_rng_state
from lodestar.runtime.training import Schedule, Span, Trainer
from lodestar.runtime.training import TrainingDiverged as TrainingDiverged  # callers catch it from here


@dataclass
class TrainResult:
    """What a DQN run reports: env steps, gradient updates, training returns, the last evaluation."""

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
        reseed_after=e.reseed_after_steps,  # bounds what exact resume replays (see the config)
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


class DQNTrainer(Trainer[DQNConfig, TrainResult]):
    """Owns one run: env, replay, agent, logger and checkpoints under ``run_dir``."""

    total_key = "total_steps"

    def __init__(
        self, config: DQNConfig, run_dir: str | Path, callbacks: Sequence[Callable[[DQNTrainer], None]] = ()
    ) -> None:
        """``callbacks`` run after every loop iteration; they may set ``stop_requested`` to end the
        run with a checkpoint."""
        super().__init__(config, run_dir)
        self.callbacks = list(callbacks)
        self.progress_label = f"DQN {config.env.game}"
        self.env = make_train_env(config, self.device)
        self.num_actions = self.env.num_actions
        self.replay = make_replay(config, self.device)
        self.agent = DQNAgent(self.num_actions, config.agent, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.collector = RolloutCollector(self.env, self.policy, record_actions=True)
        self.updates_owed = 0.0
        self.last_eval_mean: float | None = None
        self.episode_returns: list[float] = []
        self.clipped_running = torch.zeros(self.env.num_envs, device=self.device)
        self.clipped_finished: list[tuple[int, float]] = []  # (env step, clipped return) to log
        self.logger: RunLogger | None = None
        self.train_seconds_before: float | None = 0.0  # earlier segments of a resumed run
        self.segment_start: float | None = None
        self._updates_at_log = 0

    # -- one loop iteration -------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """Act in every env, store the transitions, learn at the replay ratio, log finished episodes.

        With ``overlap_env_step`` the updates are made while the emulators step (in ale-py's threads;
        on CUDA the device computes meanwhile as well), so they sample the replay buffer as it was
        before this step; the transitions, the updates' count and their schedule stay the same.
        Returns the mean metrics of the gradient updates made (none before learning starts).
        """
        self.collector.send()  # act: one epsilon-greedy step of every env, handed to the emulators
        reached = self.collector.global_step + self.env.num_envs  # env steps once this step is in
        if self.config.overlap_env_step:
            updates = self._learn(reached)  # learn: the updates owed, while the emulators run
            self._store(self.collector.receive())  # store: into the replay buffer, rewards clipped
        else:
            self._store(self.collector.receive())
            updates = self._learn(reached)
        self._log_episodes()  # log: the training episodes that ended, and the updates' metrics
        return self._read_metrics(updates)

    def policy(self, obs: Observation) -> torch.Tensor:
        """Epsilon-greedy actions of the online network; it only draws from ``self.generator``."""
        frames = tensor_observation(obs)  # Atari observations are one uint8 frame-stack tensor
        return self.agent.act(frames, self.epsilon(self.collector.global_step), self.generator)

    def epsilon(self, step: int) -> float:
        """Exploration at env step ``step``: uniformly random until learning starts, then the schedule."""
        return 1.0 if step < self.config.replay.learning_starts else self.agent.epsilon(step)

    def _store(self, t: Transition) -> None:
        obs, next_obs = tensor_observation(t.obs), tensor_observation(t.next_obs)
        reward = torch.sign(t.reward) if self.config.agent.clip_rewards else t.reward
        terminated = t.terminated
        if self.config.env.terminal_on_life_loss:
            # no bootstrap through a lost life, but the game (and the frame stack) goes on
            terminated = terminated | t.info["life_lost"]
        self.replay.add(obs, t.action, reward, terminated, t.truncated, next_obs, episode_end=t.done)
        self.clipped_running += reward
        done = t.done
        if bool(done.any()):
            step = self.collector.global_step
            self.clipped_finished.extend((step, clipped) for clipped in self.clipped_running[done].tolist())
            self.clipped_running.masked_fill_(done, 0.0)

    def _learn(self, step: int) -> list[dict[str, torch.Tensor]]:
        """The gradient updates owed once the run reaches env step ``step`` (the replay ratio of the
        ``num_envs`` steps of this iteration); their metrics, still on the device."""
        c = self.config
        if step < c.replay.learning_starts:
            return []
        self.updates_owed += self.env.num_envs * c.replay.replay_ratio
        updates = []
        while self.updates_owed >= 1.0:
            self.updates_owed -= 1.0
            updates.append(self.update(step))
        return updates

    def update(self, step: int) -> dict[str, torch.Tensor]:
        """One gradient step on a replay sample at env step ``step`` (prioritized replay's beta
        anneals over the run); its loss and mean Q, on the device."""
        c = self.config
        fraction = min(step / c.total_steps, 1.0)
        self.replay.beta = c.replay.beta_start + fraction * (c.replay.beta_end - c.replay.beta_start)
        batch = self.replay.sample(c.agent.batch_size, self.generator)
        out = self.agent.update(batch, self.generator)
        if c.replay.prioritized:
            self.replay.update_priorities(batch.indices, out["td_abs"])
        return {"loss": out["loss"], "q_mean": out["q_mean"]}

    def _read_metrics(self, updates: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """The updates' mean metrics as numbers; a non-finite loss stops the run.

        This is the loop iteration's one read from the device, after the emulators' step: on CUDA
        the updates were queued before it and ran meanwhile, and the next action needs them anyway.
        """
        if not updates:
            return {}
        keys = list(updates[0])
        means = torch.stack([torch.stack([u[key] for u in updates]).mean() for key in keys]).tolist()
        metrics = dict(zip(keys, means, strict=True))
        self.check_finite("loss", metrics["loss"])
        return metrics

    def _log_episodes(self) -> None:
        episodes, clipped = self.collector.pop_episodes(), self.clipped_finished
        self.clipped_finished = []
        self.episode_returns.extend(episode.episode_return for episode in episodes)
        if self.logger is None:
            return
        for episode in episodes:
            self.logger.scalar("rollout/episodic_return", episode.episode_return, episode.global_step)
            self.logger.scalar("rollout/episodic_length", episode.length, episode.global_step)
        for step, value in clipped:
            self.logger.scalar("rollout/clipped_episodic_return", value, step)

    # -- what the shared loop calls (runtime.training) ----------------------------------------
    @property
    def progress(self) -> int:
        return self.collector.global_step

    def schedule(self) -> Schedule:
        c = self.config
        evaluating = c.eval.episodes > 0
        return Schedule(
            total=c.total_steps,
            log_every=c.log_every_steps,
            eval_every=c.eval.every_steps if evaluating else 0,
            checkpoint_every=c.checkpoint_every_steps,
            evaluate_at_end=evaluating,
            unit="step",
        )

    def progress_text(self) -> str:
        return f"step {self.collector.global_step} (update {self.agent.updates})"

    def before_loop(self, logger: RunLogger | None) -> None:
        self.logger = logger
        if self.collector.obs is None:
            self.collector.reset(seed=self.config.seed)
        self.segment_start = time.perf_counter()
        self._updates_at_log = self.agent.updates

    def after_loop(self) -> None:
        # The run's training time stops here: the last evaluation is not training.
        self.train_seconds_before, self.segment_start = self.train_seconds(), None

    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        step, updates = self.collector.global_step, self.agent.updates
        values = {f"train/{key}": value for key, value in span.means.items()}
        values["rollout/epsilon"] = self.epsilon(step)
        values["rollout/replay_size"] = len(self.replay)
        values["perf/steps_per_second"] = span.per_second(span.iterations)  # the loop counts env steps
        values["perf/updates_per_second"] = span.per_second(updates - self._updates_at_log)
        self._updates_at_log = updates
        if logger is not None:
            logger.scalars(values, step)

    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        e, step = self.config.eval, self.collector.global_step
        returns = evaluate(
            self.agent, self.config, episodes=e.episodes, seed=self.config.seed + 10_000 + step
        )
        self.last_eval_mean = float(np.mean(returns))
        if logger is None:
            return
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
            logger.video("eval/video", frames, step, fps=video_fps(self.config))
        logger.flush()

    def make_result(self, loop: Span) -> TrainResult:
        return TrainResult(
            self.run_dir,
            self.collector.global_step,
            self.agent.updates,
            self.episode_returns,
            self.last_eval_mean,
            interrupted=self.stop_requested,
            train_seconds=self.train_seconds(),
        )

    def close(self) -> None:
        self.env.close()

    def train_seconds(self) -> float | None:
        """Wall time spent in the training loop so far, over all segments of the run (None: unknown)."""
        if self.train_seconds_before is None:
            return None
        running = time.perf_counter() - self.segment_start if self.segment_start is not None else 0.0
        return self.train_seconds_before + running

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """The checkpoint at this step, with the replay buffer of the same step as its companion."""
        episodes = self.env.episode_state()
        horizon = int(episodes["replay_length"].max(initial=0))
        # Only the actions since each env's last seeded start are needed to resume: the log keeps no more.
        self.collector.keep_recent_actions(horizon)
        state = {
            "agent": self.agent.state_dict(),
            "global_step": self.collector.global_step,
            "updates_owed": self.updates_owed,
            "episodes": episodes,
            "episode_actions": self.collector.recorded_actions(),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "episode_returns": list(self.episode_returns),
            "clipped_running": self.clipped_running.cpu(),
            "last_eval_step": -1 if self.evaluated_at is None else self.evaluated_at,
            "train_seconds": self.train_seconds(),
        }
        companions = {"replay": self.replay.state_dict()} if self.config.save_replay else None
        return self.write_checkpoint(state, companions)

    def restore(self, checkpoint: str | Path | None = None) -> None:
        """Load the newest (or given) checkpoint and bring the envs back to the same moment."""
        state, source = self.load_checkpoint(checkpoint, [*ARCHITECTURE_KEYS, "env.num_envs"])
        if "episodes" not in state:
            raise CheckpointError(
                f"{source} was written before Atari episodes were seeded one by one: it can be evaluated, "
                "but this version cannot resume it exactly"
            )
        # Everything is read before anything changes: a checkpoint that fails to load leaves the
        # trainer as it was, so an older one can be tried.
        replay = (
            self.checkpoints.load_companion(state, "replay", source, self.device)
            if self.config.save_replay
            else None
        )
        self.agent.load_state_dict(state["agent"], source)
        if replay is not None:
            self.replay.load_state_dict(replay)
        actions = state["episode_actions"]
        obs = self.env.restore_episodes(state["episodes"], actions.numpy().astype(np.int64))
        self.collector.resume_at(obs, int(state["global_step"]), actions)
        self.updates_owed = float(state["updates_owed"])
        self.episode_returns = list(state["episode_returns"])
        self.clipped_running = state["clipped_running"].to(self.device)
        last_eval_step = int(state["last_eval_step"])
        self.evaluated_at = None if last_eval_step < 0 else last_eval_step
        # Checkpoints written before the loop's time was recorded leave the run's total unknown.
        self.train_seconds_before = state.get("train_seconds")
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
