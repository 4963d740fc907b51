"""Trajectory store: variable-length navigation episodes, padding, masks, FIFO capacity, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lodestar.replay import TrajectoryStore


def episode(i: int, steps: int, tokens: int) -> dict[str, torch.Tensor]:
    return {
        "instruction": torch.arange(tokens) + 100 * i + 1,
        "viewpoints": torch.arange(steps) + 1000 * i,
        "actions": torch.arange(steps) % 3 + 10 * i,
        "teacher": torch.full((steps, 2), float(i)),
    }


def test_padding_and_masks() -> None:
    store = TrajectoryStore()
    lengths, token_lengths = [3, 1, 5], [4, 7, 2]
    for i, (steps, tokens) in enumerate(zip(lengths, token_lengths, strict=True)):
        e = episode(i, steps, tokens)
        store.append(e["instruction"], e["viewpoints"], e["actions"], teacher=e["teacher"])
    batch = store.get([2, 0, 1])
    assert batch.viewpoints.shape == (3, 5) and batch.instruction.shape == (3, 7)
    assert batch.lengths.tolist() == [5, 3, 1] and batch.instruction_lengths.tolist() == [2, 4, 7]
    assert batch.step_mask.tolist()[1] == [True, True, True, False, False]
    assert batch.instruction_mask.sum(1).tolist() == [2, 4, 7]
    assert batch.viewpoints[1].tolist() == [0, 1, 2, -1, -1]
    assert batch.actions[1].tolist() == [0, 1, 2, -100, -100]  # ignore_index for cross-entropy
    assert batch.instruction[0].tolist() == [201, 202, 0, 0, 0, 0, 0]
    assert batch.instruction[2].tolist() == list(range(101, 108))
    assert batch.extras["teacher"].shape == (3, 5, 2)
    assert batch.extras["teacher"][0].tolist() == [[2.0, 2.0]] * 5
    assert batch.extras["teacher"][2].tolist() == [[1.0, 1.0]] + [[0.0, 0.0]] * 4
    assert batch.indices.tolist() == [2, 0, 1]


def test_extend_padded_matches_appending_one_by_one() -> None:
    one, batched = TrajectoryStore(), TrajectoryStore()
    episodes = [episode(i, steps, tokens) for i, (steps, tokens) in enumerate([(2, 3), (4, 1), (1, 5)])]
    for e in episodes:
        one.append(e["instruction"], e["viewpoints"], e["actions"], teacher=e["teacher"])
    pad = torch.nn.utils.rnn.pad_sequence
    batched.extend_padded(
        pad([e["instruction"] for e in episodes], batch_first=True),
        torch.tensor([3, 1, 5]),
        pad([e["viewpoints"] for e in episodes], batch_first=True, padding_value=77),
        pad([e["actions"] for e in episodes], batch_first=True, padding_value=77),
        torch.tensor([2, 4, 1]),
        {"teacher": pad([e["teacher"] for e in episodes], batch_first=True, padding_value=77.0)},
    )
    a, b = one.get([0, 1, 2]), batched.get([0, 1, 2])
    for name in ("instruction", "instruction_mask", "viewpoints", "actions", "step_mask", "lengths"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.extras["teacher"], b.extras["teacher"])


def test_capacity_drops_the_oldest_episodes_and_compacts() -> None:
    store = TrajectoryStore(capacity=3)
    for i in range(11):
        e = episode(i, 1 + i % 4, 2 + i % 3)
        store.append(e["instruction"], e["viewpoints"], e["actions"])
    assert len(store) == 3
    batch = store.get([0, 1, 2])
    assert batch.viewpoints[:, 0].tolist() == [8000, 9000, 10000]
    assert batch.lengths.tolist() == [1 + 8 % 4, 1 + 9 % 4, 1 + 10 % 4]
    assert batch.instruction[:, 0].tolist() == [801, 901, 1001]
    assert store._steps.used < 4 * 11  # evicted steps were compacted away


def test_sampling_is_seeded_and_bounded() -> None:
    store = TrajectoryStore()
    with pytest.raises(ValueError, match="holds 0"):
        store.sample(1)
    for i in range(6):
        e = episode(i, 2, 2)
        store.append(e["instruction"], e["viewpoints"], e["actions"])
    a = store.sample(4, torch.Generator().manual_seed(0))
    b = store.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.viewpoints, b.viewpoints)
    assert torch.equal(a.viewpoints[:, 0], a.indices * 1000)
    with pytest.raises(ValueError, match="cannot sample 7 episodes: the store holds 6"):
        store.sample(7)
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        store.get([6])


def test_bad_episodes_are_rejected() -> None:
    store = TrajectoryStore()
    with pytest.raises(ValueError, match="one length"):
        store.append(torch.tensor([1, 2]), torch.tensor([1, 2, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="instruction"):
        store.append(torch.tensor([], dtype=torch.long), torch.tensor([1]), torch.tensor([0]))
    store.append(torch.tensor([1]), torch.tensor([1]), torch.tensor([0]), feat=torch.zeros(1, 3))
    with pytest.raises(KeyError, match="extras"):
        store.append(torch.tensor([1]), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="field 'feat'"):
        store.append(torch.tensor([1]), torch.tensor([1]), torch.tensor([0]), feat=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="lengths must lie in"):
        store.extend_padded(
            torch.ones(1, 2, dtype=torch.long),
            torch.tensor([2]),
            torch.ones(1, 3, dtype=torch.long),
            torch.ones(1, 3, dtype=torch.long),
            torch.tensor([4]),
            {"feat": torch.zeros(1, 3, 3)},
        )


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = TrajectoryStore(capacity=4, pad_action=-1)
    for i in range(6):
        e = episode(i, 1 + i, 3)
        store.append(e["instruction"], e["viewpoints"], e["actions"], teacher=e["teacher"])
    store.save(tmp_path / "traj.pt")
    loaded = TrajectoryStore.load(tmp_path / "traj.pt")
    assert len(loaded) == 4 and loaded.capacity == 4 and loaded.pad_action == -1
    a, b = store.get([0, 1, 2, 3]), loaded.get([0, 1, 2, 3])
    assert torch.equal(a.actions, b.actions) and torch.equal(a.extras["teacher"], b.extras["teacher"])
    e = episode(9, 2, 2)
    loaded.append(e["instruction"], e["viewpoints"], e["actions"], teacher=e["teacher"])
    assert loaded.get([3]).viewpoints[0, 0].item() == 9000 and len(loaded) == 4
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        TrajectoryStore.load(tmp_path / "nope.pt")
