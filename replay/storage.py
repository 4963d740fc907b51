"""Circular storage of named tensor fields, all on one device.

Fields are allocated on the first :meth:`TensorStorage.add` from the shapes and dtypes of the batch
(``[n, *item_shape]`` per field) or up front through ``specs``. Writes advance a cursor and wrap, so
once full the oldest items are overwritten first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class TensorStorage:
    """Fixed-capacity ring of named tensor fields with batched add and indexed get."""

    def __init__(
        self,
        capacity: int,
        device: torch.device | str = "cpu",
        specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"storage capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.cursor = 0
        self.size = 0
        self._data: dict[str, torch.Tensor] = {}
        for name, (shape, dtype) in (specs or {}).items():
            self._data[name] = torch.zeros((self.capacity, *shape), dtype=dtype, device=self.device)

    def __len__(self) -> int:
        return self.size

    @property
    def fields(self) -> dict[str, torch.Tensor]:
        """The full backing tensors (``[capacity, ...]``), for vectorized reads by samplers."""
        return self._data

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._data:
            raise KeyError(f"storage has no field {name!r} (fields: {sorted(self._data)})")
        return self._data[name]

    def add(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Write ``n`` items (every field ``[n, ...]``) at the cursor; returns their indices."""
        if not batch:
            raise ValueError("cannot add an empty batch: give at least one field")
        sizes = {name: value.shape[0] if value.dim() else -1 for name, value in batch.items()}
        n = next(iter(sizes.values()))
        if any(size != n for size in sizes.values()) or n < 0:
            raise ValueError(f"every field must share its leading (batch) dimension, got {sizes}")
        if n > self.capacity:
            raise ValueError(f"cannot add {n} items to a storage of capacity {self.capacity}")
        missing = set(self._data) - set(batch)
        if missing:
            raise KeyError(f"batch lacks stored field(s) {sorted(missing)} (batch has {sorted(batch)})")
        for name, value in batch.items():
            if name not in self._data:
                if self.size:
                    raise KeyError(f"field {name!r} is new but {self.size} items were stored without it")
                self._data[name] = torch.zeros(
                    (self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device
                )
        indices = (torch.arange(n, device=self.device) + self.cursor) % self.capacity
        contiguous = self.cursor + n <= self.capacity
        for name, value in batch.items():
            target = self._data[name]
            if value.shape[1:] != target.shape[1:]:
                raise ValueError(
                    f"field {name!r}: item shape {tuple(value.shape[1:])} differs from the stored "
                    f"{tuple(target.shape[1:])}"
                )
            if value.dtype != target.dtype:
                raise ValueError(
                    f"field {name!r}: dtype {value.dtype} differs from the stored {target.dtype}"
                )
            value = value.to(self.device)
            if contiguous:
                target[self.cursor : self.cursor + n] = value
            else:
                target[indices] = value
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        return indices

    def get(self, indices: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Gather the items at ``indices`` for the given fields (all fields by default)."""
        return {name: self[name][indices] for name in (names if names is not None else self._data)}

    def nbytes(self) -> int:
        """Bytes held by the backing tensors."""
        return sum(t.numel() * t.element_size() for t in self._data.values())

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "cursor": self.cursor, "size": self.size, "data": dict(self._data)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the tensors are adopted (moved to the device), not copied."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"storage state has capacity {state['capacity']}, this storage {self.capacity}")
        self.cursor = int(state["cursor"])
        self.size = int(state["size"])
        self._data = {name: t.to(self.device) for name, t in state["data"].items()}
