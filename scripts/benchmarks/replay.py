"""Replay benchmark: memory per stored Atari transition, and add / sample / update latency at 1M.

1. Fill a frame-deduplicated buffer (8 streams of synthetic 84x84 uint8 frames with episode ends),
   count the bytes of every tensor it holds and extrapolate to 1M transitions. Reference: storing
   ``obs`` and ``next_obs`` stacks per transition (``2 * 4 * 84 * 84`` bytes + the small fields);
   target at most 7.2 GB.
2. Latency at 1M capacity on full buffers that hold the same transitions (64 lock-step streams,
   4-float observations so that memory stays moderate, written in the same order), median ms per
   call, every contender timed in alternating blocks in this process:

   - ``sample(32)`` (uniform) and ``add`` of one row of 64 transitions: ours against SB3's
     ``ReplayBuffer`` (NumPy ring buffer, ``n_envs=64``, batches returned as torch tensors, ``add``
     fed NumPy arrays as SB3's vector envs give them) and TorchRL's
     ``ReplayBuffer(storage=LazyTensorStorage(N))`` (``sample`` / ``extend``; the faster of its two
     data formats, a TensorDict or a plain dict of tensors, is the reference);
   - PER ``sample(32)`` + ``update_priorities(32)`` (alpha 0.5, beta 0.4, eps 1e-6, the same initial
     priorities and the same updates): ours against TorchRL's prioritized replay, the faster of
     ``PrioritizedReplayBuffer`` (TensorDict) and ``ReplayBuffer`` + ``PrioritizedSampler`` (dict of
     tensors), whose sum/min trees are C++ (TorchRL's own extension; see ``replay_references`` for
     how it is built when the wheel's binary does not match the installed torch).

   Target for every latency figure: ours no slower than the reference (ratio <= 1).
   A table of every contender's time (each TorchRL route included) precedes the figures.

Options: ``device=auto|cpu|cuda``, ``capacity=`` (latency buffers), ``memory_capacity=``,
``iterations=``, ``threads=`` (torch intra-op threads for the whole process, default 1),
``torchrl=1|0`` (0 skips the TorchRL rows; the PER figure then has no reference). TorchRL is in the
``dev`` extra; without it the benchmark stops and says ``pip install torchrl``.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import torch

from benchmarks import replay_references as refs
from benchmarks.replay_references import Transitions
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
ALPHA, BETA, EPS = 0.5, 0.4, 1e-6  # PER settings, the same for ours and TorchRL
TARGET = 1.0  # latency figures: ours / reference at most this
SB3 = "SB3 ReplayBuffer"


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


def race(
    contenders: dict[str, Callable[[], object]], iterations: int, device: torch.device, rounds: int = 10
) -> dict[str, float]:
    """Median milliseconds per call of each contender.

    Calls are timed in ``rounds`` alternating blocks, so that load changes on a shared machine hit every
    contender alike; each is warmed up first.
    """
    for fn in contenders.values():
        for _ in range(min(20, iterations)):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    block = max(1, iterations // rounds)
    for _ in range(rounds):
        for name, fn in contenders.items():
            times[name].extend(timed_seconds(fn, device) for _ in range(block))
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def ours_buffer(transitions: Transitions, device: torch.device, prioritized: bool) -> ReplayBuffer:
    """Our buffer holding ``transitions``, written one lock-step row per :meth:`ReplayBuffer.add`."""
    streams = transitions.streams
    buffer = ReplayBuffer(
        len(transitions),
        streams,
        tuple(transitions.obs.shape[1:]),
        torch.float32,
        prioritized=prioritized,
        alpha=ALPHA,
        beta=BETA,
        priority_eps=EPS,
        device=device,
    )
    for start in range(0, len(transitions), streams):
        buffer.add(*_ours_row(transitions.fields(slice(start, start + streams)), device))
    return buffer


def _ours_row(fields: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """``ReplayBuffer.add``'s positional arguments for one row of named fields, on ``device``."""
    f = {name: value.to(device) for name, value in fields.items()}
    truncated = torch.zeros_like(f["terminated"])
    return f["obs"], f["action"], f["reward"], f["terminated"], truncated, f["next_obs"]


def _best(times: dict[str, float], prefix: str) -> tuple[str, float]:
    """The fastest contender whose name starts with ``prefix``: ``(its route, its ms)``."""
    name = min((n for n in times if n.startswith(prefix)), key=times.__getitem__)
    return name.removeprefix(prefix).strip(" ,:"), times[name]


def time_uniform(
    transitions: Transitions, iterations: int, device: torch.device, trl: str
) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms of uniform ``sample(BATCH)`` and of ``add`` of one row, for ours and each reference.

    ``trl`` is TorchRL's label ("" leaves TorchRL out). Every buffer is full when timed.
    """
    g = torch.Generator(device=device).manual_seed(1)
    ours = ours_buffer(transitions, device, prioritized=False)
    ours_rows = [_ours_row(row, device) for row in refs.add_rows(transitions)]
    samples: dict[str, Callable[[], object]] = {"ours": lambda: ours.sample(BATCH, g)}
    adds: dict[str, Callable[[], object]] = {"ours": refs.cycle(ours_rows, lambda row: ours.add(*row))}
    samples[SB3], adds[SB3] = refs.sb3_uniform(transitions, BATCH)
    if trl:
        for data_format in refs.TORCHRL_FORMATS:
            name = f"{trl} ReplayBuffer(LazyTensorStorage), {data_format}"
            samples[name], adds[name] = refs.torchrl_uniform(transitions, data_format, BATCH, device)
    return race(samples, iterations, device), race(adds, iterations, device)


def time_prioritized(
    transitions: Transitions, iterations: int, device: torch.device, trl: str
) -> dict[str, float]:
    """Median ms of PER ``sample(BATCH)`` + ``update_priorities(BATCH)``, ours and each TorchRL route.

    Every buffer starts from the same priorities and receives the same updates.
    """
    pg = torch.Generator().manual_seed(2)
    initial = torch.rand(len(transitions), generator=pg) * 2  # spread like a trained agent's |TD| errors
    updates = torch.rand(64, BATCH, generator=pg)
    ours = ours_buffer(transitions, device, prioritized=True)
    for start in range(0, len(transitions), 1 << 16):  # chunks keep the set-up's temporaries small
        index = torch.arange(start, min(start + (1 << 16), len(transitions)))
        ours.update_priorities(index.to(device), initial[index].to(device))
    g = torch.Generator(device=device).manual_seed(1)
    ours_updates = updates.to(device)
    calls = iter(range(10**12))

    def ours_step() -> None:
        batch = ours.sample(BATCH, g)
        ours.update_priorities(batch.indices, ours_updates[next(calls) % ours_updates.shape[0]])

    steps: dict[str, Callable[[], object]] = {"ours": ours_step}
    if trl:
        for route in refs.TORCHRL_PER_ROUTES:
            steps[f"{trl} {route}"] = refs.torchrl_prioritized(
                transitions, route, BATCH, ALPHA, BETA, EPS, initial, updates, device
            )
    return race(steps, iterations, device)


def latency_figures(
    capacity: int, iterations: int, device: torch.device, with_torchrl: bool
) -> tuple[list[Figure], dict[str, float]]:
    """Uniform sample, add and PER sample + update at ``capacity``: ours against every reference.

    Returns the figures and every contender's median ms (printed as the route table).
    """
    capacity -= capacity % STREAMS
    label = f"{capacity:,}" if capacity % 1_000_000 else f"{capacity // 1_000_000}M"
    trl = f"TorchRL {refs.torchrl_version()}" if with_torchrl else ""
    transitions = refs.make_transitions(capacity, STREAMS, OBS_DIM)
    sample_ms, add_ms = time_uniform(transitions, iterations, device, trl)
    per_ms = time_prioritized(transitions, iterations, device, trl)

    def figure(metric: str, ours: float, reference: str | None = None, ref_ms: float | None = None) -> Figure:
        return Figure(
            "replay",
            f"{metric} at {label}",
            round(ours, 4),
            "ms",
            reference=reference,
            reference_value=None if ref_ms is None else round(ref_ms, 4),
            target=None if reference is None else TARGET,
            higher_is_better=False,
            device=str(device.type),
        )

    sampled, added, per = (
        f"uniform sample({BATCH})",
        f"add one row of {STREAMS} streams",
        f"PER sample({BATCH})+update({BATCH})",
    )
    figures = [
        figure(sampled, sample_ms["ours"], "SB3 ReplayBuffer.sample", sample_ms[SB3]),
        figure(added, add_ms["ours"], "SB3 ReplayBuffer.add (NumPy)", add_ms[SB3]),
    ]
    if trl:
        route, ms = _best(sample_ms, trl)
        figures.append(figure(sampled, sample_ms["ours"], f"{trl} {route} (faster of 2 formats)", ms))
        route, ms = _best(add_ms, trl)
        figures.append(figure(added, add_ms["ours"], f"{trl} {route}, extend (faster of 2 formats)", ms))
        route, ms = _best(per_ms, trl)
        figures.append(figure(per, per_ms["ours"], f"{trl} {route}, C++ sum trees (faster of 2 routes)", ms))
    else:
        figures.append(figure(per, per_ms["ours"]))
    timings = {f"{sampled}: {n}": ms for n, ms in sample_ms.items()}
    timings.update({f"{added}: {n}": ms for n, ms in add_ms.items()})
    timings.update({f"{per}: {n}": ms for n, ms in per_ms.items()})
    return figures, timings


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    known = {"device", "capacity", "memory_capacity", "iterations", "threads", "torchrl"}
    unknown = set(options) - known
    if unknown:
        raise SystemExit(f"unknown replay benchmark option(s) {sorted(unknown)}; known: {sorted(known)}")
    device = resolve_device(options.get("device", "auto"))
    with_torchrl = options.get("torchrl", "1") not in ("0", "false", "no")
    if with_torchrl:
        refs.import_torchrl()  # fail (or build TorchRL's extension) before measuring anything
    # Replay ops are many small tensors: intra-op threads only add barriers (badly so on a busy machine).
    # The setting is process-wide, so the references run under it too.
    torch.set_num_threads(int(options.get("threads", 1)))
    capacity = int(options.get("capacity", 128_000 if quick else 1_000_000))  # 64 streams x 2,000
    memory_capacity = int(options.get("memory_capacity", 48_000 if quick else 200_000))
    iterations = int(options.get("iterations", 300 if quick else 3_000))
    if memory_capacity % 8:
        raise SystemExit(f"memory_capacity={memory_capacity} must be a multiple of the 8 env streams")
    if capacity < STREAMS:
        raise SystemExit(f"capacity={capacity} must be at least the {STREAMS} streams that fill it")
    latency, timings = latency_figures(capacity, iterations, device, with_torchrl)
    figures = memory_figures(memory_capacity, device) + latency
    # sys.stdout looked up now, not at import (report's default), so redirected output is honoured.
    print(f"\n== replay: every contender, median ms per call ({device.type}) ==", file=sys.stdout)
    width = max(len(name) for name in timings)
    for name, ms in timings.items():
        print(f"{name.ljust(width)}  {ms:.4f}", file=sys.stdout)
    report(figures, f"replay ({'quick' if quick else 'full'}, {device.type})", out=sys.stdout)
    return figures
