"""Lodestar: DQN on Atari and PREVALENT-style vision-language navigation on one batched torch engine.

This folder holds only the root of the ``lodestar`` namespace; the packages themselves live in the
repository's top-level folders, mapped by ``pyproject.toml``:

- :mod:`lodestar.runtime`: configs and CLI, device, seeding, logger, checkpoints, the training loop;
- :mod:`lodestar.envs`: the vector-env protocol, Atari, the gymnasium/SB3 faces, navigation;
- :mod:`lodestar.replay`: replay storage, samplers, writers, n-step, frame stacks, trajectories;
- :mod:`lodestar.agents`: the rollout collector, DQN and the navigation agents;
- :mod:`lodestar.pretrain`: speaker synthesis and pretraining.

Importing ``lodestar`` registers the gymnasium ids ``Lodestar/Atari-v0`` and ``Lodestar/Nav-v0``.
"""

from lodestar.envs.gym_api import register as _register_gym_ids

__version__ = "0.1.0"

_register_gym_ids()
