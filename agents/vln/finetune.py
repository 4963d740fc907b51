"""Fine-tuning the follower with imitation (teacher forcing + DAgger) and RL (A2C), top to bottom.

Every iteration collects ``rollout_steps`` batched steps from a :class:`~lodestar.envs.nav.sim.env.NavVecEnv`
through the shared :class:`~lodestar.agents.rollout.RolloutCollector`. The env's rows are split in two:

- *teacher rows* execute the shortest-path teacher's action (teacher forcing): cross-entropy on
  the teacher action along the reference route;
- *learner rows* execute actions sampled from the follower (optionally mixed with the teacher with
  probability ``teacher_prob``, DAgger's beta): cross-entropy on the teacher's action in the states the
  learner reached (student forcing), and advantage actor-critic on the simulator reward (GAE,
  bootstrapping truncated episodes from their final observation and the rollout end from its last
  observation).

The collector runs without gradients; the learner replays the stored observations through the
follower with its recurrent memory, restarting it at episode boundaries, starting from the memory
carried into the rollout (truncated backpropagation through time, as in recurrent PPO).

DAgger aggregation: a :class:`~lodestar.agents.vln.dagger.DaggerWriter` sink writes every finished learner
episode (visited viewpoints, headings, teacher labels) into a FIFO
:class:`~lodestar.replay.trajectory.TrajectoryStore`; each iteration also replays a batch of it with
teacher-label cross-entropy. With ``data.augment_split`` (e.g. ``synthetic``), every
``augment_every``-th iteration runs on speaker-synthesized episodes instead (EnvDrop-style
augmentation; feature dropout lives in the model). Validation runs greedy episodes on the
evaluation splits every ``eval_every`` iterations; ``best.pt`` keeps the follower with the best
``select_metric`` on ``select_split``.

Resuming is exact on CPU: the checkpoint holds the actions sent to each env, which a resumed run
replays after re-seeding, plus the follower memory of the running episodes, the DAgger store and
writer buffers, optimizer, counters and RNG states. The loop around the update (periodic log,
validation and checkpoint; Ctrl-C) is the one every trainer shares,
:class:`lodestar.runtime.training.IterationTrainer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lodestar.agents.rollout import Rollout, RolloutCollector, Transition
from lodestar.agents.vln.dagger import DaggerWriter, replay_inputs
from lodestar.agents.vln.distributed import average_gradients, init_distributed
from lodestar.agents.vln.evaluate import (
    EnvFactory,
    Evaluation,
    evaluate_follower,
    log_sample_episodes,
    make_eval_env,
)
from lodestar.agents.vln.finetune_config import ARCHITECTURE_KEYS, FinetuneConfig, LearnerConfig
from lodestar.agents.vln.follower import (
    ARCHITECTURE_FIELDS,
    Follower,
    FollowerBundle,
    FollowerPolicy,
    load_follower,
)
from lodestar.agents.vln.rollout_replay import ReplayedRollout, generalized_advantages, replay_rollout
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.base import dict_observation
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.eval.metrics import METRIC_KEYS
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.envs.nav.sim.packing import FeatureSource
from lodestar.replay.trajectory import TrajectoryStore
from lodestar.runtime.checkpoint import CheckpointError, restore_module
from lodestar.runtime.config import to_dict
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.seeding import rng_state, seed_everything, set_rng_state
from lodestar.runtime.training import IterationTrainer, RunResult, Span
from lodestar.runtime.training import TrainingDiverged as TrainingDiverged  # callers catch it from here

# -- the env a runner steps -------------------------------------------------------------------------


def train_env_options(
    config: FinetuneConfig,
    device: torch.device | str,
    seed: int,
    vocab: Vocab | None = None,
    features: FeatureSource | None = None,
) -> dict[str, Any]:
    """:class:`NavVecEnv` keyword arguments of a fine-tuning env (see :func:`make_train_env`)."""
    d, e = config.data, config.env
    return {
        "features": d.features if features is None else features,
        "device": device,
        "max_steps": e.max_steps,
        "seed": seed,
        "success_distance": e.success_distance,
        "success_bonus": e.success_bonus,
        "failure_penalty": e.failure_penalty,
        "move_reward": e.move_reward,
        "angle_feature_size": d.angle_feature_size,
        "max_instruction_len": d.max_instruction_len,
        "vocab": vocab,
        "feature_dtype": getattr(torch, d.feature_dtype),
        # The follower gathers the views it reads from env.feature_table on the env's device, so the
        # env copies nothing of feature size per step and rollouts hold indices, not features.
        "observation": "indices",
        "observe_pano": config.model.pano != "none",
        "oracle": True,  # teacher actions and distances to the goal: training signals only
    }


def make_train_env(
    dataset: NavDataset,
    split: str,
    num_envs: int,
    config: FinetuneConfig,
    device: torch.device | str,
    seed: int,
    vocab: Vocab | None = None,
    features: FeatureSource | None = None,
    env_factory: EnvFactory = NavVecEnv,
) -> NavVecEnv:
    """The env a fine-tuning runner steps, as the trainer configures it (the ``nav-sim`` benchmark
    times this very env). ``features`` replaces ``config.data.features`` (e.g. an in-memory map);
    ``env_factory`` builds it (``NavVecEnv`` unless another simulator is benchmarked)."""
    return env_factory(dataset, split, num_envs, **train_env_options(config, device, seed, vocab, features))


# -- one env with its policy, collector and DAgger writer ------------------------------------------


class Runner:
    """A training env driven half by the teacher, half by the learner, with its own memory.

    The collector logs every action sent, so a resumed run replays them to bring the env back
    (:meth:`load_state_dict`).
    """

    def __init__(
        self,
        env: NavVecEnv,
        model: Follower,
        config: LearnerConfig,
        generator: torch.Generator,
        writer: DaggerWriter | None,
        seed: int,
    ) -> None:
        self.env = env
        self.seed = seed
        self.teacher_rows = torch.arange(env.num_envs, device=env.device) < config.teacher_envs
        self.policy = FollowerPolicy(
            model,
            env.num_envs,
            "sample",
            self.teacher_rows,
            config.teacher_prob,
            generator,
            env.feature_table,
        )
        self.writer = writer
        self.collector = RolloutCollector(
            env, self.policy, self._sink, self.policy.on_episode_end, record_actions=True
        )
        self.learner_outcomes: list[float] = []  # success of finished learner episodes since the last log

    def _sink(self, t: Transition) -> None:
        if self.writer is not None:
            self.writer(t)
        finished = t.done & ~self.teacher_rows
        if bool(finished.any()):
            self.learner_outcomes.extend(t.info["success"][finished].float().tolist())

    def start(self) -> None:
        self.collector.reset(seed=self.seed)

    def state_dict(self) -> dict[str, Any]:
        return {
            "actions": self.collector.recorded_actions(),
            "policy": self.policy.state_dict(),
            "writer": None if self.writer is None else self.writer.state_dict(),
            "global_step": self.collector.global_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the recorded actions from a fresh reset, then restore memory and buffers."""
        self.collector.replay_actions(state["actions"], self.seed)
        if self.collector.global_step != state["global_step"]:
            raise CheckpointError(
                f"replayed {self.collector.global_step} env steps but the checkpoint is at {state['global_step']}"
            )
        self.policy.load_state_dict(state["policy"])
        if self.writer is not None and state["writer"] is not None:
            self.writer.load_state_dict(state["writer"])


@dataclass(kw_only=True)
class FinetuneResult(RunResult):
    best_score: float
    best_iteration: int
    last_scores: dict[str, float]
    episodes_per_second: float


class FinetuneTrainer(IterationTrainer[FinetuneConfig, FinetuneResult]):
    """Owns one fine-tuning run: envs, follower, DAgger store, logger and checkpoints under ``run_dir``."""

    progress_label = "finetune"

    def __init__(
        self, config: FinetuneConfig, run_dir: str | Path, env_factory: EnvFactory = NavVecEnv
    ) -> None:
        """``env_factory`` builds the training and evaluation envs (see :data:`EnvFactory`)."""
        super().__init__(config, run_dir)
        c = config
        self.env_factory = env_factory
        self.dist, device = init_distributed(self.device)
        self.device = device
        self.dataset = NavDataset(c.data_dir)
        # "auto" becomes the file it stands for, so the saved config and the follower file name it.
        c.data.features = self.dataset.resolve_features(c.data.features)
        self.vocab = self.dataset.vocab()
        dtype = getattr(torch, c.data.feature_dtype)
        d = c.data
        train_splits = [d.train_split] + ([d.augment_split] if d.augment_split else [])
        episodes = {split: self.dataset.episodes(split) for split in train_splits}
        scans = sorted({ep.scan for eps in episodes.values() for ep in eps})
        self.featurizer = PathFeaturizer.from_dataset(
            self.dataset, scans, d.features, device, d.angle_feature_size, dtype
        )
        self.model = Follower(
            len(self.vocab), self.featurizer.visual_dim, d.angle_feature_size, c.model, self.vocab.pad_id
        ).to(device)
        self.init_info = self._load_init(c.init) if c.init else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        # Same parameters on every process; episodes, action samples and dropout differ per process.
        rank = self.dist.rank
        seed_everything(c.seed + rank)
        self.generator = torch.Generator(device=device).manual_seed(c.seed + rank)
        self.store = TrajectoryStore(c.dagger.capacity, device=device) if c.dagger.enabled else None
        num_envs = c.learn.teacher_envs + c.learn.learner_envs
        self.runners = {
            split: self._make_runner(split, num_envs, seed_offset=i) for i, split in enumerate(train_splits)
        }
        self.eval_envs: dict[str, NavVecEnv] = {}
        for split in d.eval_splits if self.dist.is_main else []:  # process 0 validates
            eps = self.dataset.episodes(split)
            subset = eps[: d.eval_max_episodes] if d.eval_max_episodes > 0 else None
            self.eval_envs[split] = make_eval_env(
                self.dataset, split, subset, c.eval_num_envs, d.features, d.angle_feature_size,
                d.max_instruction_len, device, c.env.max_steps, dtype, self.env_factory,
            )  # fmt: skip
        self.best_score, self.best_iteration = -1.0, -1
        self.last_scores: dict[str, float] = {}
        self.episodes_done = 0
        # Episodes finished by every process when the loop started and at the last log (throughput).
        self._loop_start_episodes = self._window_episodes = 0
        self._maps_note_shown = False

    # -- construction helpers ---------------------------------------------------------------------
    def _make_runner(self, split: str, num_envs: int, seed_offset: int) -> Runner:
        c = self.config
        seed = c.seed + 1000 * seed_offset + 100_003 * self.dist.rank
        env = make_train_env(
            self.dataset, split, num_envs, c, self.device, seed, self.vocab, env_factory=self.env_factory
        )
        writer = None
        if self.store is not None and c.learn.learner_envs > 0:
            learner_rows = torch.arange(num_envs, device=self.device) >= c.learn.teacher_envs
            writer = DaggerWriter(self.store, env, self.featurizer, learner_rows)
        runner = Runner(env, self.model, c.learn, self.generator, writer, seed)
        runner.start()
        return runner

    def _load_init(self, source: str) -> dict[str, Any]:
        """Copy a pretrained follower's parameters into the model after checking they fit."""
        bundle = load_follower(source, self.device)
        d, problems = self.config.data, []
        if bundle.vocab != self.vocab:
            problems.append("vocabulary differs from the dataset's vocab.txt")
        for what, theirs, ours in (
            ("data.features", bundle.features, d.features),
            ("data.angle_feature_size", bundle.angle_feature_size, d.angle_feature_size),
            ("visual feature size", bundle.model.visual_dim, self.featurizer.visual_dim),
        ):
            if theirs != ours:
                problems.append(f"{what} is {theirs!r} there, {ours!r} here")
        for name in ARCHITECTURE_FIELDS:
            theirs, ours = getattr(bundle.model.config, name), getattr(self.config.model, name)
            if theirs != ours:
                problems.append(f"model.{name} is {theirs!r} there, {ours!r} here")
        if problems:
            raise CheckpointError(f"init={source!r} does not fit this run: " + "; ".join(problems))
        restore_module(self.model, bundle.model.state_dict(), "follower", source)
        return {"source": str(source), **bundle.info}

    # -- one update -------------------------------------------------------------------------------
    def _runner_for(self, iteration: int) -> Runner:
        d = self.config.data
        if d.augment_split and iteration % d.augment_every == d.augment_every - 1:
            return self.runners[d.augment_split]
        return self.runners[d.train_split]

    def train_step(self) -> dict[str, float]:
        c, learn = self.config, self.config.learn
        runner = self._runner_for(self.iteration)
        memory = runner.policy.memory
        start_memory = None if memory is None else memory.detach()
        start_fresh = runner.policy.fresh.clone()
        self.model.eval()  # behaviour without dropout; the learner's pass below uses it
        rollout = runner.collector.collect(learn.rollout_steps, keep=True)
        self.episodes_done += len(runner.collector.pop_episodes())
        self.model.train()
        out = replay_rollout(self.model, rollout, start_memory, start_fresh, runner.env.feature_table)
        steps, n, choices = out.logits.shape
        teacher = rollout.extras["teacher_action"]
        ce = F.cross_entropy(out.logits.reshape(-1, choices), teacher.reshape(-1), reduction="none").view(
            steps, n
        )
        teacher_rows = runner.teacher_rows
        learner_rows = ~teacher_rows
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        if bool(teacher_rows.any()) and learn.teacher_weight > 0:
            parts["teacher_forcing"] = ce[:, teacher_rows].mean()
            total = total + learn.teacher_weight * parts["teacher_forcing"]
        if bool(learner_rows.any()):
            if learn.student_weight > 0:
                parts["student_forcing"] = ce[:, learner_rows].mean()
                total = total + learn.student_weight * parts["student_forcing"]
            if learn.rl_weight > 0:
                rl = self._a2c(rollout, out, learner_rows)
                parts.update(rl)
                total = total + learn.rl_weight * (
                    rl["policy"] + learn.value_weight * rl["value"] - learn.entropy_weight * rl["entropy"]
                )
        if (
            self.store is not None
            and len(self.store) >= max(c.dagger.min_episodes, 1)
            and c.dagger.weight > 0
        ):
            parts["dagger"] = self._dagger_loss()
            total = total + c.dagger.weight * parts["dagger"]
        parts["loss"] = total
        # Every process sees the same mean loss and stop flag, so they all stop at the same iteration.
        shared = torch.stack([total.detach(), torch.tensor(float(self.stop_requested), device=self.device)])
        value, stop = self.dist.all_reduce_mean(shared).tolist()
        self.stop_requested = stop > 0
        self.check_finite("fine-tuning loss", value)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(self.model, self.dist)
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), c.grad_clip if c.grad_clip > 0 else math.inf
        )
        self.check_finite("fine-tuning gradients", float(norm))
        self.optimizer.step()
        self.iteration += 1
        metrics = {k: float(v.detach()) for k, v in parts.items()}
        metrics["teacher_accuracy"] = float((out.logits.argmax(-1) == teacher).float().mean())
        return metrics

    def _a2c(self, rollout: Rollout, out: ReplayedRollout, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Advantage actor-critic on the learner rows; the policy term only where the learner acted."""
        learn, e = self.config.learn, self.config.env
        done = rollout.terminated | rollout.truncated
        values = out.values.detach()
        rewards, next_values = rollout.reward, out.next_values
        if learn.truncation == "stop":
            reached = dict_observation(rollout.next_obs)["distance"][..., 0] < e.success_distance
            stop_reward = torch.where(reached, e.success_bonus, -e.failure_penalty).to(rewards.dtype)
            rewards = torch.where(rollout.truncated, rewards + stop_reward, rewards)
            next_values = torch.where(rollout.truncated, torch.zeros_like(next_values), next_values)
        advantages, returns = generalized_advantages(
            rewards, values, next_values, done, learn.gamma, learn.gae_lambda
        )
        acted = (rollout.action == rollout.extras["learner_action"]) & rows
        log_probs = out.logits.log_softmax(-1)
        taken = log_probs.gather(-1, rollout.action.unsqueeze(-1)).squeeze(-1)
        adv = advantages[acted]
        if learn.normalize_advantages and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy = -(taken[acted] * adv).mean() if adv.numel() else taken.sum() * 0.0
        value = 0.5 * (out.values - returns)[:, rows].pow(2).mean()
        entropy = -(log_probs.exp() * log_probs).sum(-1)[:, rows].mean()
        return {
            "policy": policy,
            "value": value,
            "entropy": entropy,
            "return": returns[:, rows].mean().detach(),
        }

    def _dagger_loss(self) -> torch.Tensor:
        assert self.store is not None
        batch = self.store.sample(min(self.config.dagger.batch_size, len(self.store)), self.generator)
        tokens, token_mask, steps, labels = replay_inputs(self.featurizer, batch)
        logits, _ = self.model.unroll(tokens, token_mask, steps.cand_feats, steps.cand_mask, steps.pano_feats)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    # -- what the shared loop calls (runtime.training) ---------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def run_notes(self) -> dict[str, str]:
        return {} if self.init_info is None else {"init": f"initialized from {self.init_info['source']}"}

    def before_loop(self, logger: RunLogger | None) -> None:
        if self.iteration == 0 and self.init_info is not None and self.config.eval_every > 0:
            # The pretrained follower itself competes for best.pt: fine-tuning must beat it to replace it.
            self.validate(logger)
        self._loop_start_episodes = self._window_episodes = self._global_episodes()

    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        episodes = self._global_episodes()
        means = {f"train/{k}": v for k, v in span.means.items()}
        outcomes = [o for r in self.runners.values() for o in r.learner_outcomes]
        for runner in self.runners.values():
            runner.learner_outcomes.clear()
        if outcomes:
            means["rollout/learner_success_rate"] = sum(outcomes) / len(outcomes)
        means["perf/episodes_per_second"] = span.per_second(episodes - self._window_episodes)
        means["perf/iterations_per_second"] = span.per_second(span.iterations)
        if self.store is not None:
            means["rollout/dagger_store_episodes"] = len(self.store)
        if logger is not None:
            logger.scalars(means, self.iteration)
        self.last_scores.update(means)
        self._window_episodes = episodes

    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        self.validate(logger)

    def make_result(self, loop: Span) -> FinetuneResult:
        return FinetuneResult(
            run_dir=self.run_dir,
            iterations=self.iteration,
            best_score=self.best_score,
            best_iteration=self.best_iteration,
            last_scores=dict(self.last_scores),
            episodes_per_second=loop.per_second(self._global_episodes() - self._loop_start_episodes),
            interrupted=self.stop_requested,
        )

    def close(self) -> None:
        self.dist.close()

    def _global_episodes(self) -> int:
        """Episodes finished by every process (a collective: call it on all of them)."""
        count = torch.tensor([float(self.episodes_done)], dtype=torch.float64, device=self.device)
        return int(self.dist.all_reduce_sum(count).item())

    def validate(self, logger: RunLogger | None = None) -> dict[str, float]:
        """Greedy episodes on every evaluation split; writes ``best.pt`` when the selection metric improves.

        Under ``torchrun`` process 0 validates while the others wait (call it on every process).
        """
        scores = self._validate_here(logger) if self.dist.is_main else {}
        self.dist.barrier()
        return scores

    def _validate_here(self, logger: RunLogger | None) -> dict[str, float]:
        c, scores = self.config, {}
        evaluations: dict[str, Evaluation] = {}
        for split, env in self.eval_envs.items():
            evaluation = evaluate_follower(self.model, env)
            evaluations[split] = evaluation
            if evaluation.summary is not None:
                scores.update({f"eval/{split}/{k}": evaluation.summary[k] for k in METRIC_KEYS})
        self.last_scores.update(scores)
        key = f"eval/{c.select_split}/{c.select_metric}"
        if key in scores and scores[key] > self.best_score:
            self.best_score, self.best_iteration = scores[key], self.iteration
            self.bundle({"selected_by": key, "score": scores[key]}).save(self.run_dir / "best.pt")
        if logger is not None:
            logger.scalars(scores, self.iteration)
            logger.scalar(f"eval/{c.select_split}/best_{c.select_metric}", self.best_score, self.iteration)
            self._log_maps(logger, evaluations)
            logger.flush()
        return scores

    def _log_maps(self, logger: RunLogger, evaluations: dict[str, Evaluation]) -> None:
        if self.config.log_episodes <= 0:
            return
        try:
            for evaluation in evaluations.values():
                log_sample_episodes(
                    logger,
                    self.dataset,
                    evaluation,
                    self.iteration,
                    self.config.log_episodes,
                    self.config.seed,
                    self.device,
                )
        except FileNotFoundError as exc:  # real R2R data has no house plans to draw
            if not self._maps_note_shown:
                print(f"note: no episode maps logged ({exc})", flush=True)
                self._maps_note_shown = True

    # -- checkpoints ------------------------------------------------------------------------------
    def bundle(self, extra: dict[str, Any] | None = None) -> FollowerBundle:
        d = self.config.data
        info = {
            "stage": "finetune",
            "iteration": self.iteration,
            "scores": {k: v for k, v in self.last_scores.items() if k.startswith("eval/")},
            "config": to_dict(self.config),
            **(extra or {}),
        }
        return FollowerBundle(
            self.model, self.vocab, d.features, d.angle_feature_size, d.max_instruction_len, info
        )

    def _process_state(self) -> dict[str, Any]:
        """What differs between processes: envs, memory, DAgger store, generators."""
        return {
            "episodes_done": self.episodes_done,
            "runners": {split: runner.state_dict() for split, runner in self.runners.items()},
            "store": None if self.store is None else self.store.state_dict(),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Process 0 writes one checkpoint holding every process's state; returns its path there."""
        self.check_state_finite({"model": self.model.state_dict()})  # on every process: all stop together
        processes = self.dist.gather(self._process_state())
        path = None
        if self.dist.is_main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration,
                "processes": processes,
                "best_score": self.best_score,
                "best_iteration": self.best_iteration,
                "last_scores": dict(self.last_scores),
                "follower": self.bundle().state(),
            }
            path = self.write_checkpoint(state)
        self.dist.barrier()
        return path

    def restore(self, checkpoint: str | Path | None = None) -> None:
        """Continue exactly from the newest (or given) checkpoint of this run."""
        state, source = self.load_checkpoint(checkpoint, ARCHITECTURE_KEYS, self.device)
        processes = state["processes"]
        if len(processes) != self.dist.world_size:
            raise CheckpointError(
                f"{source} was written by {len(processes)} process(es); resume it with as many "
                f"(this run has {self.dist.world_size})"
            )
        restore_module(self.model, state["model"], "follower", source)
        self.optimizer.load_state_dict(state["optimizer"])
        mine = processes[self.dist.rank]
        for split, runner in self.runners.items():
            runner.load_state_dict(mine["runners"][split])
        if self.store is not None and mine["store"] is not None:
            self.store.load_state_dict(mine["store"])
        self.iteration, self.episodes_done = int(state["iteration"]), int(mine["episodes_done"])
        self.generator.set_state(mine["generator"])
        set_rng_state(mine["rng"])
        self.best_score, self.best_iteration = float(state["best_score"]), int(state["best_iteration"])
        self.last_scores = dict(state["last_scores"])
