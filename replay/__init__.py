"""Replay storage, samplers and writers (tensors on one device).

- :class:`TensorStorage`: circular storage of named tensor fields.
- :class:`FrameStackStorage`: stacked image observations with every frame stored once per stream.
- :class:`SumTree`, :class:`UniformSampler`, :class:`PrioritizedSampler`: what a batch draws.
- :class:`StreamWriter`: writes lock-step env streams and keeps the sampleable set right.
- :func:`fold_nstep`: n-step returns across terminations and truncations.
- :class:`ReplayBuffer`: the composed buffer the DQN agent uses.
- :class:`TrajectoryStore`: variable-length navigation episodes, padded into batches with masks.
"""

from lodestar.replay.buffer import ReplayBatch, ReplayBuffer
from lodestar.replay.frames import FrameStackStorage
from lodestar.replay.nstep import fold_nstep, ready_in_window
from lodestar.replay.samplers import PrioritizedSampler, Sampler, UniformSampler
from lodestar.replay.storage import TensorStorage
from lodestar.replay.sum_tree import SumTree
from lodestar.replay.trajectory import TrajectoryBatch, TrajectoryStore
from lodestar.replay.writer import StreamWriter

__all__ = [
    "FrameStackStorage",
    "PrioritizedSampler",
    "ReplayBatch",
    "ReplayBuffer",
    "Sampler",
    "StreamWriter",
    "SumTree",
    "TensorStorage",
    "TrajectoryBatch",
    "TrajectoryStore",
    "UniformSampler",
    "fold_nstep",
    "ready_in_window",
]
