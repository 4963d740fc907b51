"""``dqn-resume``: how long exact resume of a DQN run takes, at two run lengths.

A run of each length (Pong, 8 envs, the ``ALE/Pong-v5`` protocol, no gradient updates so that the
runs are quick, replay buffer not saved) writes its final checkpoint; a fresh trainer then restores
it, and the restore is timed. Ours restarts each emulator from its last episode seed and replays
the actions since, so the time should stay flat as the run grows. The same-run
reference is what resume did before episodes were seeded one by one: replaying every action since
step 0 through the collector (as many batched steps as the run has taken), which grows with the run.

Options: ``lengths=16000,128000`` (env steps; both longer than an episode per env), ``envs=8``,
``game=Pong``, ``episode_frames=108000`` (the episode cap; ``--quick`` cuts episodes at 360 frames so
that its short runs span several episodes), ``reseed_after=0`` (``env.reseed_after_steps``: 0 seeds
every episode, so a restore replays one episode per env; the training default, 2000, replays up to
2000 steps more, a bound that is flat only once runs are longer than it).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer, make_train_env
from lodestar.agents.rollout import RolloutCollector
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.config import load_config


def _config(
    game: str, envs: int, steps: int, episode_frames: int, reseed_after: int, runs_dir: Path
) -> DQNConfig:
    return load_config(
        DQNConfig,
        None,
        [
            "device=cpu",
            f"env.game={game}",
            f"env.num_envs={envs}",
            f"env.max_episode_frames={episode_frames}",
            f"env.reseed_after_steps={reseed_after}",
            f"total_steps={steps}",
            f"replay.learning_starts={steps + 1}",
            "replay.capacity=1000",
            "eval.episodes=0",
            "checkpoint_every_steps=0",
            "save_replay=false",
            f"log_every_steps={steps}",
            f"runs_dir={runs_dir}",
            "name=run",
        ],
    )


def ours(config: DQNConfig, run_dir: Path) -> tuple[float, int]:
    """Seconds to restore the run's final checkpoint, and the longest episode it replayed."""
    DQNTrainer(config, run_dir).train()
    resumed = DQNTrainer(config, run_dir)
    start = time.perf_counter()
    resumed.restore()
    seconds = time.perf_counter() - start
    replayed = int(resumed.env.episode_state()["replay_length"].max())
    resumed.env.close()
    return seconds, replayed


def full_replay(config: DQNConfig) -> float:
    """Seconds to replay every batched action of a run of the same length from step 0."""
    env = make_train_env(config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    iterations = config.total_steps // config.env.num_envs
    actions = torch.randint(0, env.num_actions, (iterations, env.num_envs), generator=generator)
    collector = RolloutCollector(env, lambda obs: actions[0])
    start = time.perf_counter()
    collector.replay_actions(actions, seed=config.seed)
    seconds = time.perf_counter() - start
    env.close()
    return seconds


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    lengths = [int(x) for x in options.get("lengths", "800,3200" if quick else "16000,128000").split(",")]
    envs, game = int(options.get("envs", 8)), options.get("game", "Pong")
    episode_frames = int(options.get("episode_frames", 360 if quick else 108_000))
    reseed_after = int(options.get("reseed_after", 0))
    if len(lengths) != 2 or lengths[0] >= lengths[1]:
        raise ValueError("lengths= takes two increasing run lengths in env steps, e.g. lengths=4000,32000")
    name, figures, times, references = "dqn-resume", [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in lengths:
            config = _config(game, envs, steps, episode_frames, reseed_after, Path(tmp) / str(steps))
            seconds, replayed = ours(config, Path(tmp) / str(steps) / "run")
            reference = full_replay(config)
            times.append(seconds)
            references.append(reference)
            figures.append(
                Figure(
                    name,
                    f"restore_seconds_at_{steps}_steps",
                    round(seconds, 3),
                    "s",
                    "full_action_replay_from_step_0",
                    round(reference, 3),
                    higher_is_better=False,
                )
            )
            print(f"run of {steps} env steps: replayed {replayed} steps per env to restore", flush=True)
    growth = times[1] / times[0]
    figures.append(
        # Flat means the longer run restores in about the time of the shorter one; the reference grows
        # with the run length (x lengths[1] / lengths[0]).
        Figure(
            name,
            "restore_time_growth",
            round(growth, 2),
            "x",
            "full_action_replay_growth",
            round(references[1] / references[0], 2),
            target=1.5,
            target_on="value",
            higher_is_better=False,
        )
    )
    report(
        figures,
        f"dqn-resume: {game}, {envs} envs, run lengths {lengths[0]} and {lengths[1]} env steps, "
        f"env.reseed_after_steps={reseed_after}",
    )
    return figures
