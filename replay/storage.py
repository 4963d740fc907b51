"""Circular storage of named tensor fields, all on one device.

Fields are allocated on the first :meth:`TensorStorage.add` from the shapes and dtypes of the batch
(``[n, *item_shape]`` per field) or up front through ``specs``. Writes advance a cursor and wrap, so
once full the oldest items are overwritten first.

Saved states hold only the filled part of what is sized by capacity (:func:`filled_part`), so a
mostly empty buffer makes a small file; loading puts it back into full-capacity tensors
(:func:`into_capacity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def filled_part(tensor: torch.Tensor, count: int, dim: int = 0) -> torch.Tensor:
    """The first ``count`` entries of ``tensor`` along ``dim``, to save: ``tensor`` itself when that is
    all of it, else a copy (``torch.save`` of a view writes the whole storage behind it)."""
    if count >= tensor.shape[dim]:
        return tensor
    return tensor.narrow(dim, 0, max(count, 0)).clone()


def zero_tail_start(*tensors: torch.Tensor) -> int:
    """The shortest length along dim 0 past which every tensor holds only zeros.

    Saving that :func:`filled_part` of tensors that start zeroed loses nothing, whatever wrote them.
    """
    length = tensors[0].shape[0]
    written = torch.zeros(length, dtype=torch.bool, device=tensors[0].device)
    for tensor in tensors:
        written |= (tensor != 0).reshape(length, -1).any(1)
    last = written.nonzero()
    return int(last[-1]) + 1 if last.numel() else 0


def into_capacity(
    saved: torch.Tensor, shape: tuple[int, ...], device: torch.device, name: str, dim: int = 0
) -> torch.Tensor:
    """A :func:`filled_part` back in a zero tensor of the full ``shape`` on ``device``.

    A saved tensor that is already full size is adopted (moved to ``device``), not copied.
    """
    expected = tuple(shape)
    found = tuple(saved.shape)
    others_match = len(found) == len(expected) and all(
        a == b for axis, (a, b) in enumerate(zip(found, expected, strict=True)) if axis != dim
    )
    if not others_match or found[dim] > expected[dim]:
        raise ValueError(f"saved {name} has shape {found}, which does not fit this storage's {expected}")
    if found == expected:
        return saved.to(device)
    full = torch.zeros(expected, dtype=saved.dtype, device=device)
    full.narrow(dim, 0, found[dim]).copy_(saved)
    return full


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
        contiguous = self.cursor + n <= self.capacity
        if contiguous:
            indices = torch.arange(self.cursor, self.cursor + n, device=self.device)
        else:
            indices = (torch.arange(n, device=self.device) + self.cursor) % self.capacity
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
        """Cursor, size and the filled items of every field (the first ``size``: writes fill slots
        from 0 until the ring is full)."""
        data = {name: filled_part(t, self.size) for name, t in self._data.items()}
        return {"capacity": self.capacity, "cursor": self.cursor, "size": self.size, "data": data}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; full-size tensors are adopted (moved to the device), not
        copied, partial ones are put back into zeroed full-capacity tensors."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"storage state has capacity {state['capacity']}, this storage {self.capacity}")
        size = int(state["size"])
        data = {}
        for name, saved in state["data"].items():
            if saved.shape[0] < size:
                raise ValueError(f"storage state holds {saved.shape[0]} items of field {name!r}, not {size}")
            shape = (self.capacity, *saved.shape[1:])
            data[name] = into_capacity(saved, shape, self.device, f"field {name!r}")
        self.cursor = int(state["cursor"])
        self.size = size
        self._data = data
