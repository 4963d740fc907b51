"""Replay benchmark: memory per stored Atari transition and sample/update latency at 1M capacity.

1. Fill a frame-deduplicated buffer (8 streams of synthetic 84x84 uint8 frames with episode ends),
   count the bytes of every tensor it holds and extrapolate to 1M transitions. Reference: storing
   ``obs`` and ``next_obs`` stacks per transition (``2 * 4 * 84 * 84`` bytes + the small fields).
2. Latency of ``sample(32)`` (uniform) and ``sample(32) + update_priorities(32)`` (prioritized) at 1M
   capacity, with small observations so that memory stays moderate. References, run in the same
   process: a NumPy ring buffer sampled with ``randint`` (SB3-style) and the textbook PER, array-based
   binary sum/min trees in NumPy with a Python loop per item for descents and updates.

Options: ``device=auto|cpu|cuda``, ``capacity=`` (latency buffers), ``memory_capacity=``,
``iterations=``, ``threads=`` (torch intra-op threads, default 1).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import numpy as np
import torch

from lodestar.replay import ReplayBuffer
from lodestar.runtime.bench import Figure, report, timed_seconds
from lodestar.runtime.device import resolve_device

FRAME = (84, 84)
STACK = 4
BATCH = 32
# action (int64) + reward (float32) + terminated + truncated, as a plain buffer stores them
NAIVE_FIELD_BYTES = 8 + 4 + 1 + 1
OBS_DIM = 4  # latency buffers hold small observations so that 1M transitions stay light
STREAMS = 64  # latency buffers are filled by this many lock-step streams (fewer adds to fill)


def fill_frame_buffer(capacity: int, num_envs: int, device: torch.device, **kwargs: object) -> ReplayBuffer:
    """A frame-dedup buffer filled with ale-py-like stacks (zero-padded resets, 400-2000 step episodes)."""
    buffer = ReplayBuffer(
        capacity, num_envs, (STACK, *FRAME), torch.uint8, frame_stack=STACK, device=device, **kwargs
    )
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(400, 2001, (num_envs,), generator=g)
    t = torch.zeros(num_envs, dtype=torch.long)
    env_shade = (torch.arange(num_envs, dtype=torch.uint8) * 16 + 1).view(-1, 1, 1)
    obs = torch.zeros((num_envs, STACK, *FRAME), dtype=torch.uint8)
    obs[:, -1] = env_shade
    no = torch.zeros(num_envs, dtype=torch.bool)
    for step in range(capacity // num_envs + 1):
        t += 1
        frame = (env_shade + (step % 200)).expand(-1, *FRAME)
        next_obs = torch.cat([obs[:, 1:], frame.unsqueeze(1)], 1)
        done = t >= lengths
        buffer.add(
            obs.to(device),
            torch.zeros(num_envs, dtype=torch.long, device=device),
            torch.ones(num_envs, device=device),
            done.to(device),
            no.to(device),
            next_obs.to(device),
        )
        obs = next_obs
        if bool(done.any()):
            obs = obs.clone()
            obs[done] = 0
            obs[done, -1] = env_shade[done]
            t[done] = 0
            lengths[done] = torch.randint(400, 2001, (int(done.sum()),), generator=g)
    return buffer


def memory_figures(capacity: int, device: torch.device) -> list[Figure]:
    naive_gb = (2 * STACK * FRAME[0] * FRAME[1] + NAIVE_FIELD_BYTES) * 1e6 / 1e9
    figures = []
    for label, kwargs in (("uniform", {}), ("PER + 3-step", {"prioritized": True, "n_step": 3})):
        buffer = fill_frame_buffer(capacity, 8, device, **kwargs)
        if len(buffer) != capacity:
            raise RuntimeError(f"memory benchmark buffer holds {len(buffer)} of {capacity} transitions")
        gb_per_million = buffer.nbytes() / capacity * 1e6 / 1e9
        figures.append(
            Figure(
                "replay",
                f"frame-dedup bytes per 1M Atari transitions ({label}, measured at {capacity:,})",
                round(gb_per_million, 3),
                "GB",
                reference="naive obs+next_obs stacks",
                reference_value=round(naive_gb, 3),
                target=7.2,
                higher_is_better=False,
                target_on="value",
                device=str(device.type),
            )
        )
        del buffer
    return figures


class TextbookPER:
    """Proportional PER as usually written: binary sum/min trees in NumPy arrays, one loop per item."""

    def __init__(self, capacity: int, obs_dim: int, alpha: float, beta: float, eps: float, seed: int) -> None:
        self.size = 1
        while self.size < capacity:
            self.size *= 2
        self.capacity, self.alpha, self.beta, self.eps = capacity, alpha, beta, eps
        self.sums = np.zeros(2 * self.size)
        self.mins = np.full(2 * self.size, np.inf)
        self.rng = np.random.default_rng(seed)
        self.obs = self.rng.standard_normal((capacity, obs_dim)).astype(np.float32)
        self.next_obs = self.rng.standard_normal((capacity, obs_dim)).astype(np.float32)
        self.action = self.rng.integers(0, 6, capacity)
        self.reward = self.rng.standard_normal(capacity).astype(np.float32)
        self.done = np.zeros(capacity, dtype=bool)

    def fill(self, priorities: np.ndarray) -> None:
        """Set-up only (not timed): leaves then every level at once."""
        leaves = (priorities + self.eps) ** self.alpha
        self.sums[self.size : self.size + self.capacity] = leaves
        self.mins[self.size : self.size + self.capacity] = leaves
        for start in (self.size >> k for k in range(1, self.size.bit_length())):
            self.sums[start : 2 * start] = (
                self.sums[2 * start : 4 * start : 2] + self.sums[2 * start + 1 : 4 * start : 2]
            )
            self.mins[start : 2 * start] = np.minimum(
                self.mins[2 * start : 4 * start : 2], self.mins[2 * start + 1 : 4 * start : 2]
            )

    def _set(self, index: int, value: float) -> None:
        node = index + self.size
        self.sums[node] = self.mins[node] = value
        node //= 2
        while node >= 1:
            self.sums[node] = self.sums[2 * node] + self.sums[2 * node + 1]
            self.mins[node] = min(self.mins[2 * node], self.mins[2 * node + 1])
            node //= 2

    def _find(self, mass: float) -> int:
        node = 1
        while node < self.size:
            left = 2 * node
            if self.sums[left] > mass:
                node = left
            else:
                mass -= self.sums[left]
                node = left + 1
        return node - self.size

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        total = self.sums[1]
        segment = total / batch_size
        indices = np.array(
            [self._find(self.rng.uniform(i * segment, (i + 1) * segment)) for i in range(batch_size)]
        )
        probs = self.sums[indices + self.size] / total
        max_weight = (self.capacity * self.mins[1] / total) ** -self.beta
        weights = (self.capacity * probs) ** -self.beta / max_weight
        return {
            "obs": self.obs[indices],
            "action": self.action[indices],
            "reward": self.reward[indices],
            "done": self.done[indices],
            "next_obs": self.next_obs[indices],
            "weights": weights,
            "indices": indices,
        }

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        for index, priority in zip(indices, priorities, strict=True):
            self._set(int(index), (float(priority) + self.eps) ** self.alpha)


def median_ms(fn: Callable[[], None], iterations: int, device: torch.device) -> float:
    """Median wall time of one call, in milliseconds (robust to a noisy shared machine)."""
    for _ in range(min(20, iterations)):
        fn()
    times = []
    for _ in range(iterations):
        times.append(timed_seconds(fn, device))
    return statistics.median(times) * 1e3


def fill_small_buffer(capacity: int, device: torch.device, prioritized: bool, obs_dim: int) -> ReplayBuffer:
    """A plain buffer of ``capacity`` transitions with ``obs_dim``-float observations from 64 streams."""
    num_envs = STREAMS
    buffer = ReplayBuffer(
        capacity, num_envs, (obs_dim,), torch.float32, prioritized=prioritized, device=device
    )
    g = torch.Generator(device=device).manual_seed(0)
    obs = torch.randn(num_envs, obs_dim, device=device, generator=g)
    done = torch.zeros(num_envs, dtype=torch.bool, device=device)
    for step in range(capacity // num_envs):
        next_obs = torch.randn(num_envs, obs_dim, device=device, generator=g)
        action = torch.full((num_envs,), step % 6, device=device)
        buffer.add(obs, action, torch.randn(num_envs, device=device, generator=g), done, done, next_obs)
        obs = next_obs
    if prioritized:  # spread priorities like a trained agent's |TD| errors, not all at the initial max
        for start in range(0, capacity, 1 << 16):
            index = torch.arange(start, min(start + (1 << 16), capacity), device=device)
            buffer.update_priorities(index, torch.rand(index.shape, device=device, generator=g) * 2)
    return buffer


def time_ours(capacity: int, prioritized: bool, iterations: int, device: torch.device) -> float:
    """Median ms of ``sample(32)`` (+ ``update_priorities(32)`` when prioritized) on a full buffer."""
    buffer = fill_small_buffer(capacity, device, prioritized=prioritized, obs_dim=OBS_DIM)
    g = torch.Generator(device=device).manual_seed(1)
    priorities = torch.rand(64, BATCH, device=device, generator=g)
    calls = iter(range(10**9))

    def step() -> None:
        batch = buffer.sample(BATCH, g)
        if prioritized:
            buffer.update_priorities(batch.indices, priorities[next(calls) % 64])

    return median_ms(step, iterations, device)


def time_references(capacity: int, iterations: int) -> tuple[float, float]:
    """Median ms of the NumPy uniform gather and of the textbook PER sample + update."""
    reference = TextbookPER(capacity, OBS_DIM, 0.5, 0.4, 1e-6, seed=0)
    rng = np.random.default_rng(1)
    cpu = torch.device("cpu")

    def uniform() -> None:
        i = rng.integers(0, reference.capacity, BATCH)
        _ = (
            reference.obs[i],
            reference.action[i],
            reference.reward[i],
            reference.done[i],
            reference.next_obs[i],
        )

    reference.fill(rng.random(reference.capacity) * 2)
    priorities = rng.random((64, BATCH))
    calls = iter(range(10**9))

    def prioritized() -> None:
        batch = reference.sample(BATCH)
        reference.update(batch["indices"], priorities[next(calls) % 64])

    return median_ms(uniform, iterations, cpu), median_ms(prioritized, iterations, cpu)


def latency_figures(capacity: int, iterations: int, device: torch.device) -> list[Figure]:
    capacity -= capacity % STREAMS
    label = f"{capacity:,}" if capacity % 1_000_000 else f"{capacity // 1_000_000}M"
    ours_uniform = time_ours(capacity, False, iterations, device)
    ours_per = time_ours(capacity, True, iterations, device)
    ref_uniform, ref_per = time_references(capacity, iterations)
    dev = str(device.type)
    return [
        Figure(
            "replay",
            f"uniform sample({BATCH}) at {label}",
            round(ours_uniform, 4),
            "ms",
            reference="NumPy ring buffer randint gather",
            reference_value=round(ref_uniform, 4),
            higher_is_better=False,
            device=dev,
        ),
        Figure(
            "replay",
            f"PER sample({BATCH})+update({BATCH}) at {label}",
            round(ours_per, 4),
            "ms",
            reference="textbook NumPy sum/min tree, per-item loops",
            reference_value=round(ref_per, 4),
            target=1.0,
            higher_is_better=False,
            target_on="value",
            device=dev,
        ),
    ]


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    known = {"device", "capacity", "memory_capacity", "iterations", "threads"}
    unknown = set(options) - known
    if unknown:
        raise SystemExit(f"unknown replay benchmark option(s) {sorted(unknown)}; known: {sorted(known)}")
    device = resolve_device(options.get("device", "auto"))
    # Replay ops are many small tensors: intra-op threads only add barriers (badly so on a busy machine).
    torch.set_num_threads(int(options.get("threads", 1)))
    capacity = int(options.get("capacity", 100_000 if quick else 1_000_000))
    memory_capacity = int(options.get("memory_capacity", 48_000 if quick else 200_000))
    iterations = int(options.get("iterations", 300 if quick else 3_000))
    if memory_capacity % 8:
        raise SystemExit(f"memory_capacity={memory_capacity} must be a multiple of the 8 env streams")
    figures = memory_figures(memory_capacity, device) + latency_figures(capacity, iterations, device)
    # sys.stdout looked up now, not at import (report's default), so redirected output is honoured.
    report(figures, f"replay ({'quick' if quick else 'full'}, {device.type})", out=sys.stdout)
    return figures
