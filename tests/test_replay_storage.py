"""Circular tensor storage: overwrite order, lazy fields, clear errors."""

from __future__ import annotations

import pytest
import torch

from lodestar.replay import TensorStorage


def test_circular_overwrite_keeps_the_newest_items() -> None:
    storage = TensorStorage(5)
    for start in range(0, 12, 3):
        values = torch.arange(start, start + 3)
        storage.add({"x": values, "y": values.float().unsqueeze(1).repeat(1, 2)})
    # 12 items written into 5 slots: the survivors are 7..11, item i in slot i % 5.
    assert len(storage) == 5 and storage.cursor == 12 % 5
    got = storage.get(torch.arange(5))
    assert got["x"].tolist() == [10, 11, 7, 8, 9]
    assert torch.equal(got["y"][:, 1], got["x"].float())


def test_add_returns_wrapped_indices_and_size_grows_to_capacity() -> None:
    storage = TensorStorage(4)
    assert storage.add({"x": torch.tensor([1, 2, 3])}).tolist() == [0, 1, 2]
    assert len(storage) == 3
    assert storage.add({"x": torch.tensor([4, 5])}).tolist() == [3, 0]
    assert len(storage) == 4


def test_preallocated_specs_and_lazy_fields_mix_before_the_first_add() -> None:
    storage = TensorStorage(3, specs={"obs": ((2,), torch.float32)})
    storage.add({"obs": torch.ones(1, 2), "flag": torch.tensor([True])})
    assert storage["flag"].dtype == torch.bool and storage["obs"].shape == (3, 2)


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ({"x": torch.zeros(2, dtype=torch.long)}, KeyError, "lacks stored field"),
        (
            {"x": torch.zeros(2, dtype=torch.long), "y": torch.zeros(2), "z": torch.zeros(2)},
            KeyError,
            "'z' is new",
        ),
        ({"x": torch.zeros(2), "y": torch.zeros(2)}, ValueError, "field 'x': dtype"),
        ({"x": torch.zeros(2, dtype=torch.long), "y": torch.zeros(3)}, ValueError, "leading"),
        ({"x": torch.zeros(2, 2, dtype=torch.long), "y": torch.zeros(2)}, ValueError, "item shape"),
        ({"x": torch.zeros(9, dtype=torch.long), "y": torch.zeros(9)}, ValueError, "capacity 4"),
    ],
)
def test_bad_batches_are_rejected_with_the_field_named(batch: dict, error: type, match: str) -> None:
    storage = TensorStorage(4)
    storage.add({"x": torch.zeros(1, dtype=torch.long), "y": torch.zeros(1)})
    with pytest.raises(error, match=match):
        storage.add(batch)


def test_unknown_field_lookup_names_it() -> None:
    with pytest.raises(KeyError, match="no field 'nope'"):
        TensorStorage(2)["nope"]


def test_state_dict_round_trip() -> None:
    storage = TensorStorage(4)
    storage.add({"x": torch.arange(6)[:4]})
    storage.add({"x": torch.tensor([9])})
    restored = TensorStorage(4)
    restored.load_state_dict(storage.state_dict())
    assert (restored.cursor, len(restored)) == (storage.cursor, len(storage))
    assert torch.equal(restored["x"], storage["x"])
    with pytest.raises(ValueError, match="capacity"):
        TensorStorage(5).load_state_dict(storage.state_dict())
