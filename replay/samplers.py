"""Samplers: which stored items a batch draws, and with what importance weights.

A sampler sees only item indices ``[0, capacity)``. The writer tells it which items are sampleable
(:meth:`Sampler.enable` / :meth:`Sampler.disable`, e.g. once an n-step window is complete or when a
slot is overwritten); ``sample`` draws only among those. Samplers draw with replacement.

- :class:`UniformSampler`: every sampleable item equally likely, weights all one.
- :class:`PrioritizedSampler`: proportional prioritized replay (Schaul et al., 2016) on a
  :class:`~lodestar.replay.sum_tree.SumTree`: ``P(i) = p_i^alpha / sum_k p_k^alpha``, importance weights
  ``(N * P(i))^-beta`` divided by their maximum over all sampleable items, and newly enabled items get
  the largest priority seen so far.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lodestar.replay.storage import filled_part, into_capacity
from lodestar.replay.sum_tree import SumTree


class Sampler:
    """Tracks the sampleable set; subclasses decide how a batch is drawn from it."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"sampler capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._mask = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
        self._count = 0
        # One past the highest index ever enabled: uniform candidates are drawn below it.
        self._high = 0

    def __len__(self) -> int:
        """Number of sampleable items."""
        return self._count

    def is_sampleable(self, indices: torch.Tensor) -> torch.Tensor:
        return self._mask[indices]

    def enable(self, indices: torch.Tensor) -> None:
        """Make ``indices`` (unique) sampleable; items that already are keep their state."""
        indices = indices.reshape(-1).to(device=self.device, dtype=torch.long)
        if indices.numel() == 0:
            return
        fresh = indices[~self._mask.index_select(0, indices)]
        if fresh.numel() == 0:
            return
        self._mask.index_fill_(0, fresh, True)
        self._count += fresh.numel()
        self._high = max(self._high, int(fresh.max()) + 1)
        self._on_enable(fresh)

    def renew(self, indices: torch.Tensor) -> None:
        """Make ``indices`` (unique) sampleable as new items, e.g. slots just overwritten with data that
        is ready at once: :meth:`disable` then :meth:`enable`, in fewer ops."""
        indices = indices.reshape(-1).to(device=self.device, dtype=torch.long)
        if indices.numel() == 0:
            return
        self._count += indices.numel() - int(self._mask.index_select(0, indices).sum())
        self._mask.index_fill_(0, indices, True)
        self._high = max(self._high, int(indices.max()) + 1)
        self._on_enable(indices)

    def disable(self, indices: torch.Tensor) -> None:
        """Make ``indices`` (unique) unsampleable, e.g. because their slot is about to be overwritten."""
        indices = indices.reshape(-1).to(device=self.device, dtype=torch.long)
        if indices.numel() == 0:
            return
        gone = indices[self._mask.index_select(0, indices)]
        if gone.numel() == 0:
            return
        self._mask.index_fill_(0, gone, False)
        self._count -= gone.numel()
        self._on_disable(gone)

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` indices (with replacement); returns ``(indices, weights)``."""
        if self._count == 0:
            raise ValueError(f"cannot sample {batch_size} items: no item is sampleable yet")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self._sample(batch_size, generator)

    def update_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """Set new priorities for sampled items (a no-op for samplers without priorities)."""

    def nbytes(self) -> int:
        return self._mask.numel() * self._mask.element_size()

    def state_dict(self) -> dict[str, Any]:
        """The sampleable set; only its part below ``high`` (nothing past it was ever enabled)."""
        mask = filled_part(self._mask, self._high)
        return {"capacity": self.capacity, "mask": mask, "count": self._count, "high": self._high}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"sampler state has capacity {state['capacity']}, this sampler {self.capacity}")
        mask = state["mask"].to(dtype=torch.bool)
        self._mask = into_capacity(mask, (self.capacity,), self.device, "sampleable mask")
        self._count = int(state["count"])
        self._high = int(state["high"])

    # -- subclass hooks -------------------------------------------------------------------------
    def _on_enable(self, indices: torch.Tensor) -> None:
        pass

    def _on_disable(self, indices: torch.Tensor) -> None:
        pass

    def _sample(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class UniformSampler(Sampler):
    """Every sampleable item with probability ``1 / len(sampler)``."""

    def _sample(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.ones(batch_size, dtype=torch.float32, device=self.device)
        high = self._high
        if self._count == high:
            return self._randint(high, batch_size, generator), weights
        if 4 * self._count < high:
            # Sparse sampleable set: draw among the explicit list instead of rejecting most candidates.
            valid = self._mask[:high].nonzero().squeeze(1)
            return valid[self._randint(valid.numel(), batch_size, generator)], weights
        # Rejection sampling from [0, high) is exactly uniform over the sampleable items.
        accepted: list[torch.Tensor] = []
        missing = batch_size
        while missing > 0:
            candidates = self._randint(high, 2 * missing + 16, generator)
            hits = candidates[self._mask[candidates]][:missing]
            accepted.append(hits)
            missing -= hits.numel()
        return torch.cat(accepted), weights

    def _randint(self, high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randint(0, high, (n,), device=self.device, generator=generator)


class PrioritizedSampler(Sampler):
    """Proportional prioritized sampling with importance weights (stratified over the total mass)."""

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.5,
        beta: float = 0.4,
        eps: float = 1e-6,
        device: torch.device | str = "cpu",
        branching: int | None = None,
    ) -> None:
        super().__init__(capacity, device)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if eps <= 0:
            raise ValueError(f"priority_eps must be > 0, got {eps}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.eps = float(eps)
        self.tree = SumTree(self.capacity, self.device, branching)
        # Largest p^alpha seen so far; a 0-dim tensor so that updates never wait for the device.
        self._max_priority = torch.ones((), dtype=torch.float64, device=self.device)
        self._starts: torch.Tensor | None = None  # k / batch_size, k < batch_size, of the last batch size

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"beta must be >= 0, got {value}")
        self._beta = float(value)

    @property
    def max_priority(self) -> float:
        """The largest ``p^alpha`` seen so far (what newly enabled items get)."""
        return float(self._max_priority)

    def _on_enable(self, indices: torch.Tensor) -> None:
        self.tree.update(indices, self._max_priority.expand(indices.shape))

    def _on_disable(self, indices: torch.Tensor) -> None:
        self.tree.update(indices, torch.zeros(indices.shape, dtype=torch.float64, device=self.device))

    def _sample(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # A replay batch is a few dozen items: the cost is the number of tensor ops, so each counts.
        starts = self._starts
        if starts is None or starts.numel() != batch_size:
            starts = self._starts = (
                torch.arange(batch_size, dtype=torch.float64, device=self.device) / batch_size
            )
        # Stratified: one uniform draw inside each of batch_size equal slices of the total mass.
        u = torch.rand(batch_size, dtype=torch.float64, device=self.device, generator=generator)
        mass = torch.add(starts, u, alpha=1.0 / batch_size).mul_(self.tree.total())
        indices = self.tree.find(mass)
        # (N P(i))^-beta / max_j (N P(j))^-beta = (p_i / p_min)^-beta: N and the total cancel.
        weights = (self.tree.get(indices) / self.tree.min()).pow_(-self._beta)
        return indices, weights.to(torch.float32)

    def update_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """Set ``p_i = (priority_i + eps)^alpha`` for the items still sampleable; others are ignored.

        ``priorities`` must be finite and non-negative (e.g. ``|td error|``). Items disabled since they
        were sampled (overwritten slots) keep priority zero. A repeated index takes its last priority.
        """
        indices = indices.reshape(-1).to(device=self.device, dtype=torch.long)
        priorities = priorities.reshape(-1).to(device=self.device, dtype=torch.float64)
        if indices.numel() != priorities.numel():
            raise ValueError(f"got {indices.numel()} indices but {priorities.numel()} priorities")
        if indices.numel() == 0:
            return
        # One reduction per input checks it: a NaN makes both bounds NaN, which fails the comparisons.
        low, high = torch.aminmax(priorities)
        if not (float(low) >= 0 and float(high) < float("inf")):
            bad = priorities[~torch.isfinite(priorities) | (priorities < 0)][:5].tolist()
            raise ValueError(f"priorities must be finite and >= 0, got {bad}")
        first, last = torch.aminmax(indices)
        if int(first) < 0 or int(last) >= self.capacity:
            raise ValueError(f"priority indices must lie in [0, {self.capacity})")
        # Items no longer sampleable get zero: (p + eps)^alpha times the live mask.
        values = (priorities + self.eps).pow_(self.alpha).mul_(self._mask.index_select(0, indices))
        # With repeated indices only the last value is stored, and only it counts as seen.
        stored = self.tree.update(indices, values)
        self._max_priority = torch.maximum(self._max_priority, stored.max())

    def nbytes(self) -> int:
        return super().nbytes() + self.tree.nbytes()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "alpha": self.alpha,
            "tree": self.tree.state_dict(),
            "max_priority": self._max_priority,
            "beta": self._beta,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if float(state["alpha"]) != self.alpha:
            raise ValueError(
                f"sampler state was written with alpha={state['alpha']}, this sampler has alpha={self.alpha}: "
                "stored priorities are p^alpha and cannot be reused"
            )
        super().load_state_dict(state)
        self.tree.load_state_dict(state["tree"])
        self._max_priority = state["max_priority"].to(device=self.device, dtype=torch.float64)
        self.beta = float(state["beta"])
