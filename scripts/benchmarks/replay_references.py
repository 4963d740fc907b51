"""Same-run references of the ``replay`` benchmark: TorchRL's replay buffers and SB3's ``ReplayBuffer``.

Every reference holds the same transitions (:class:`Transitions`, written in the same order, so an
index means the same transition everywhere) and is driven through its documented public calls.

TorchRL's prioritized sampler keeps its sum/min trees in TorchRL's C++ extension
(``torchrl._torchrl``). A TorchRL wheel is compiled against one torch release and its binary fails
to import under another (torchrl 0.14.1's wheel under torch 2.13: an undefined symbol), which leaves
TorchRL without prioritized replay. :func:`import_torchrl` then compiles the C++ sources that the
wheel ships (``torchrl/csrc``, unchanged, ``-O3`` as TorchRL's own build) against the installed
torch, once, into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), and hands that module to TorchRL before TorchRL is imported: the
reference runs TorchRL's own code.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

INSTALL_HINT = (
    "`pip install torchrl` (it is in the dev extra: `pip install -e '.[dev]'`), or run with torchrl=0"
)


@dataclass
class Transitions:
    """Transitions of ``streams`` lock-step env streams, row-major: ``index = row * streams + env``."""

    obs: torch.Tensor  # [N, obs_dim] float32
    next_obs: torch.Tensor  # [N, obs_dim] float32
    action: torch.Tensor  # [N] int64
    reward: torch.Tensor  # [N] float32
    terminated: torch.Tensor  # [N] bool
    streams: int

    def __len__(self) -> int:
        return self.obs.shape[0]

    def fields(self, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        """The named fields of the transitions in ``rows`` (a slice over the flat index)."""
        return {
            "obs": self.obs[rows],
            "next_obs": self.next_obs[rows],
            "action": self.action[rows],
            "reward": self.reward[rows],
            "terminated": self.terminated[rows],
        }


def make_transitions(capacity: int, streams: int, obs_dim: int, seed: int = 0) -> Transitions:
    """``capacity`` transitions whose streams chain (each ``obs`` is the stream's previous ``next_obs``)
    through episodes of 400-2,000 steps."""
    if capacity % streams:
        raise ValueError(f"capacity {capacity} must be a multiple of the {streams} streams")
    rows = capacity // streams
    g = torch.Generator().manual_seed(seed)
    chain = torch.randn(rows + 1, streams, obs_dim, generator=g)
    ends = torch.rand(rows, streams, generator=g) < 1 / 1200
    return Transitions(
        obs=chain[:-1].reshape(capacity, obs_dim).clone(),
        next_obs=chain[1:].reshape(capacity, obs_dim).clone(),
        action=torch.randint(0, 6, (capacity,), generator=g),
        reward=torch.randn(capacity, generator=g),
        terminated=ends.reshape(capacity),
        streams=streams,
    )


# -- TorchRL ---------------------------------------------------------------------------------------
def import_torchrl() -> ModuleType:
    """``torchrl.data``, with TorchRL's C++ sum trees loaded (built for this torch if its wheel's are not).

    Raises SystemExit naming the fix when TorchRL is missing or its extension cannot be built.
    """
    spec = importlib.util.find_spec("torchrl")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"replay: the TorchRL references need TorchRL: {INSTALL_HINT}")
    if "torchrl" not in sys.modules and "torchrl._torchrl" not in sys.modules:
        sys.modules["torchrl._torchrl"] = _segment_trees(Path(spec.submodule_search_locations[0]))
    # TorchRL logs an INFO line per storage it allocates; keep the benchmark's output readable.
    logging.getLogger("torchrl").setLevel(logging.WARNING)
    start_method = multiprocessing.get_start_method(allow_none=True)
    import torchrl.data
    from torchrl.data.replay_buffers.samplers import prioritized

    # Importing TorchRL sets the process-wide multiprocessing start method to "spawn"; its replay
    # buffers start no processes, so the importing process keeps its own setting.
    if multiprocessing.get_start_method(allow_none=True) != start_method:
        multiprocessing.set_start_method(start_method, force=True)

    if prioritized.SumSegmentTreeFp32 is None:
        raise SystemExit(
            "replay: TorchRL was imported before its C++ sum trees could be loaded, so it has no "
            f"prioritized replay; run the benchmark in a fresh process, or {INSTALL_HINT}"
        )
    return torchrl.data


def torchrl_version() -> str:
    return importlib.metadata.version("torchrl")


def _segment_trees(package: Path) -> ModuleType:
    """TorchRL's ``_torchrl`` extension: the wheel's binary when it loads, else built from its sources."""
    shipped = sorted(package.glob("_torchrl*.so")) + sorted(package.glob("_torchrl*.pyd"))
    error: Exception | None = None
    for path in shipped:
        try:
            return _load_extension(path)
        except ImportError as exc:  # built against another torch: undefined symbols
            error = exc
    csrc = package / "csrc"
    sources = [csrc / "pybind.cpp", csrc / "utils.cpp"]
    if not all(source.is_file() for source in sources):
        raise SystemExit(
            f"replay: TorchRL's C++ extension does not load ({error}) and its sources are not in "
            f"{csrc}; install a TorchRL wheel built for torch {torch.__version__}, or run with torchrl=0"
        )
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    build = root / f"torchrl-{torchrl_version()}-torch-{torch.__version__}"
    build.mkdir(parents=True, exist_ok=True)
    built = build / "_torchrl.so"
    if built.is_file():
        try:
            return _load_extension(built)
        except ImportError:
            pass  # a stale or partial build: compile again below
    reason = str(error)[:120] + ("..." if len(str(error)) > 120 else "")
    print(
        f"replay: TorchRL's C++ extension does not load with torch {torch.__version__} ({reason}); "
        f"building it from TorchRL's own sources in {csrc} into {build} (once, a minute or two)",
        file=sys.stderr,
        flush=True,
    )
    from torch.utils import cpp_extension

    try:
        # The module name is fixed by the sources (PYBIND11_MODULE(_torchrl, ...)); load() imports it.
        module: ModuleType = cpp_extension.load(
            "_torchrl", [str(s) for s in sources], extra_cflags=["-O3"], build_directory=str(build)
        )
    except (RuntimeError, OSError, ImportError) as exc:
        raise SystemExit(
            f"replay: building TorchRL's C++ extension failed ({exc}); it needs a C++ compiler and "
            f"ninja, or a TorchRL wheel built for torch {torch.__version__}; or run with torchrl=0"
        ) from exc
    return module


def _load_extension(path: Path) -> ModuleType:
    """Import the extension at ``path`` as ``torchrl._torchrl`` without importing ``torchrl`` itself."""
    loader = importlib.machinery.ExtensionFileLoader("torchrl._torchrl", str(path))
    spec = importlib.util.spec_from_file_location("torchrl._torchrl", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# TorchRL's documented ways to hold the same data: a TensorDict, or a plain dict of tensors (pytree).
TORCHRL_FORMATS = ("TensorDict", "dict of tensors")
# Its two documented prioritized buffers (the same sampler underneath), each with one data format.
TORCHRL_PER_ROUTES = (
    "PrioritizedReplayBuffer, TensorDict",
    "ReplayBuffer + PrioritizedSampler, dict of tensors",
)


def _torchrl_batch(data: dict[str, torch.Tensor], data_format: str) -> Any:
    if data_format == "dict of tensors":
        return dict(data)
    from tensordict import TensorDict

    return TensorDict(data, batch_size=[next(iter(data.values())).shape[0]])


def torchrl_uniform(
    transitions: Transitions, data_format: str, batch_size: int, device: torch.device
) -> tuple[Callable[[], object], Callable[[], object]]:
    """``(sample, extend)`` calls on a full ``ReplayBuffer(storage=LazyTensorStorage(N))``.

    ``extend`` writes one lock-step row (``streams`` transitions, already in TorchRL's format) per call,
    cycling over :func:`add_rows`.
    """
    data = import_torchrl()
    buffer = data.ReplayBuffer(
        storage=data.LazyTensorStorage(len(transitions), device=device), batch_size=batch_size
    )
    buffer.extend(_torchrl_batch(transitions.fields(), data_format))
    rows = [_torchrl_batch(row, data_format) for row in add_rows(transitions)]
    return buffer.sample, cycle(rows, buffer.extend)


def torchrl_prioritized(
    transitions: Transitions,
    route: str,
    batch_size: int,
    alpha: float,
    beta: float,
    eps: float,
    initial: torch.Tensor,
    updates: torch.Tensor,
    device: torch.device,
) -> Callable[[], object]:
    """One ``sample`` + ``update_priority`` call of TorchRL's prioritized replay on a full buffer.

    ``route``: ``"PrioritizedReplayBuffer, TensorDict"`` or ``"ReplayBuffer + PrioritizedSampler, dict
    of tensors"``. Every item starts at priority ``initial``; updates cycle through the rows of
    ``updates`` (``[k, batch_size]``).
    """
    data = import_torchrl()
    storage = data.LazyTensorStorage(len(transitions), device=device)
    if route == TORCHRL_PER_ROUTES[0]:
        buffer = data.PrioritizedReplayBuffer(
            alpha=alpha, beta=beta, eps=eps, storage=storage, batch_size=batch_size
        )
        data_format = "TensorDict"
    elif route == TORCHRL_PER_ROUTES[1]:
        from torchrl.data.replay_buffers import PrioritizedSampler

        sampler = PrioritizedSampler(len(transitions), alpha, beta, eps=eps)
        buffer = data.ReplayBuffer(storage=storage, sampler=sampler, batch_size=batch_size)
        data_format = "dict of tensors"
    else:
        raise ValueError(f"unknown TorchRL prioritized route {route!r}; known: {TORCHRL_PER_ROUTES}")
    buffer.extend(_torchrl_batch(transitions.fields(), data_format))
    buffer.update_priority(torch.arange(len(transitions)), initial)
    rows = iter(range(10**12))

    def step() -> None:
        _, info = buffer.sample(return_info=True)
        buffer.update_priority(info["index"], updates[next(rows) % updates.shape[0]])

    return step


# -- Stable-Baselines3 ---------------------------------------------------------------------------
def sb3_uniform(
    transitions: Transitions, batch_size: int
) -> tuple[Callable[[], object], Callable[[], object]]:
    """``(sample, add)`` calls on a full SB3 ``ReplayBuffer`` with ``n_envs = streams`` (NumPy storage,
    batches returned as torch tensors). ``add`` takes NumPy arrays, as SB3's vector envs hand them out."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    streams, obs_dim = transitions.streams, transitions.obs.shape[1]
    buffer = ReplayBuffer(
        len(transitions),
        spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        spaces.Discrete(6),
        device="cpu",
        n_envs=streams,
    )
    infos: list[dict[str, Any]] = [{} for _ in range(streams)]
    names = ("obs", "next_obs", "action", "reward", "terminated")

    def add(row: dict[str, np.ndarray]) -> None:
        buffer.add(*(row[name] for name in names), infos)

    for start in range(0, len(transitions), streams):
        add(
            {name: value.numpy() for name, value in transitions.fields(slice(start, start + streams)).items()}
        )
    rows = [{name: value.numpy() for name, value in row.items()} for row in add_rows(transitions)]
    return (lambda: buffer.sample(batch_size)), cycle(rows, add)


ADD_ROWS = 64  # timed adds cycle over this many rows, so every add writes fresh-looking data


def add_rows(transitions: Transitions) -> list[dict[str, torch.Tensor]]:
    """The first ``ADD_ROWS`` lock-step rows (one transition per stream), each as named fields."""
    streams = transitions.streams
    count = min(ADD_ROWS, len(transitions) // streams)
    return [transitions.fields(slice(r * streams, (r + 1) * streams)) for r in range(count)]


def cycle(items: list[Any], call: Callable[[Any], object]) -> Callable[[], object]:
    """A no-argument call that applies ``call`` to the next of ``items``, round robin."""
    calls = iter(range(10**12))
    return lambda: call(items[next(calls) % len(items)])
