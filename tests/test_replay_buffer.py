"""ReplayBuffer: the interface the DQN agent uses, errors, PER wiring and exact save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lodestar.replay import ReplayBatch, ReplayBuffer
from tests.replay_helpers import StackedStreams

NUM_ENVS, K, SIZE = 3, 4, 5
CONFIGS = {
    "plain": {},
    "frames": {"frame_stack": K},
    "plain-per-nstep": {"prioritized": True, "n_step": 3},
    "frames-per": {"frame_stack": K, "prioritized": True},
    "frames-nstep": {"frame_stack": K, "n_step": 4},
}


def make(capacity: int = NUM_ENVS * 30, **kwargs) -> ReplayBuffer:
    kwargs.setdefault("gamma", 0.9)
    return ReplayBuffer(capacity, NUM_ENVS, (K, SIZE, SIZE), torch.uint8, **kwargs)


class Feeder:
    """Generates synthetic stream steps (deterministic from its seed) and feeds them into buffers."""

    def __init__(self, seed: int = 0) -> None:
        self.env = StackedStreams(NUM_ENVS, k=K, size=SIZE, min_len=2, max_len=14, seed=seed)
        self.obs = self.env.reset()
        self.step_count = 0

    def steps(self, count: int) -> list[tuple[torch.Tensor, ...]]:
        """The next ``count`` steps as ``add`` arguments."""
        out = []
        for _ in range(count):
            next_obs, reward, term, trunc, final = self.env.step()
            action = (torch.arange(NUM_ENVS) + self.step_count) % 6
            out.append((self.obs, action, reward, term, trunc, final))
            self.obs, self.step_count = next_obs, self.step_count + 1
        return out

    def feed(self, buffer: ReplayBuffer, count: int) -> None:
        for args in self.steps(count):
            buffer.add(*args)


def same(a: ReplayBatch, b: ReplayBatch) -> bool:
    return all(
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("obs", "action", "reward", "discount", "next_obs", "weights", "indices")
    )


def test_batch_fields_shapes_and_dtypes() -> None:
    buffer = make(frame_stack=K, n_step=2, prioritized=True)
    Feeder().feed(buffer, 20)
    batch = buffer.sample(8, torch.Generator().manual_seed(0))
    assert batch.obs.shape == batch.next_obs.shape == (8, K, SIZE, SIZE)
    assert batch.obs.dtype == torch.uint8 and batch.action.dtype == torch.long
    assert batch.reward.dtype == batch.discount.dtype == batch.weights.dtype == torch.float32
    assert batch.indices.shape == (8,) and batch.indices.dtype == torch.long
    assert len(buffer) == 20 * NUM_ENVS and buffer.capacity == NUM_ENVS * 30


def test_circular_overwrite_keeps_only_the_newest_steps() -> None:
    buffer = make(capacity=NUM_ENVS * 10)
    feeder = Feeder()
    feeder.feed(buffer, 35)
    assert len(buffer) == buffer.num_sampleable == NUM_ENVS * 10
    batch = buffer.gather(torch.arange(buffer.capacity))
    # action = (env + step) % 6 with steps 25..34 left; rows hold step % 10.
    rows, envs = torch.arange(buffer.capacity) // NUM_ENVS, torch.arange(buffer.capacity) % NUM_ENVS
    steps = 25 + (rows - 25) % 10
    assert torch.equal(batch.action, (envs + steps) % 6)


@pytest.mark.parametrize("config", CONFIGS)
def test_sampling_more_than_held_or_from_empty_is_a_clear_error(config: str) -> None:
    buffer = make(**CONFIGS[config])
    with pytest.raises(ValueError, match="cannot sample 4 transitions: the buffer holds 0, of which 0"):
        buffer.sample(4)
    Feeder().feed(buffer, 2)
    available = buffer.num_sampleable
    with pytest.raises(ValueError, match=f"holds {2 * NUM_ENVS}, of which {available} are sampleable"):
        buffer.sample(available + 1)
    with pytest.raises(ValueError, match="batch_size"):
        buffer.sample(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 10}, "multiple of num_envs 3"),
        ({"capacity": 6, "n_step": 3}, "needs at least 4"),
        ({"n_step": 0}, "n_step"),
        ({"gamma": 1.5}, "gamma"),
        ({"frame_stack": 3}, "frame_stack=3 needs obs_shape"),
        ({"prioritized": True, "alpha": -1.0}, "alpha"),
    ],
)
def test_bad_construction_arguments(kwargs: dict, match: str) -> None:
    capacity = kwargs.pop("capacity", 30)
    with pytest.raises(ValueError, match=match):
        make(capacity=capacity, **kwargs)


def test_bad_add_arguments_name_the_argument() -> None:
    buffer = make(frame_stack=K)
    obs = torch.zeros(NUM_ENVS, K, SIZE, SIZE, dtype=torch.uint8)
    ok = {
        "obs": obs,
        "action": torch.zeros(NUM_ENVS, dtype=torch.long),
        "reward": torch.zeros(NUM_ENVS),
        "terminated": torch.zeros(NUM_ENVS, dtype=torch.bool),
        "truncated": torch.zeros(NUM_ENVS, dtype=torch.bool),
        "next_obs": obs,
    }
    for name, bad, match in [
        ("obs", obs.float(), "obs has dtype torch.float32"),
        ("next_obs", obs[:, :2], r"next_obs must have shape \(3, 4, 5, 5\)"),
        ("action", torch.zeros(2, dtype=torch.long), "action must have leading dimension num_envs=3"),
        ("terminated", torch.zeros(NUM_ENVS), "terminated must be a bool tensor"),
        ("reward", [0.0, 0.0, 0.0], "reward must be a torch.Tensor"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            buffer.add(**{**ok, name: bad})
    buffer.add(**ok)
    with pytest.raises(ValueError, match="field 'action': dtype torch.int32"):
        buffer.add(**{**ok, "action": torch.zeros(NUM_ENVS, dtype=torch.int32)})


def test_prioritized_buffer_weights_updates_and_overwrites() -> None:
    buffer = make(capacity=NUM_ENVS * 10, prioritized=True, alpha=1.0, priority_eps=1e-9)
    feeder = Feeder()
    feeder.feed(buffer, 10)
    priorities = torch.full((buffer.capacity,), 1e-6)
    priorities[7] = 1.0
    buffer.update_priorities(torch.arange(buffer.capacity), priorities)
    g = torch.Generator().manual_seed(0)
    batch = buffer.sample(30, g)
    assert (batch.indices == 7).float().mean() > 0.9
    expected = ((1.0 + 1e-9) / (1e-6 + 1e-9)) ** -0.4  # (p_i / p_min)^-beta
    assert torch.allclose(batch.weights[batch.indices == 7], torch.tensor(expected))
    buffer.beta = 1.0
    assert buffer.beta == 1.0 and buffer.sampler.beta == 1.0
    feeder.feed(buffer, 3)  # overwrites rows 0..2 (indices 0..8) with new steps at the max priority (1.0)
    assert buffer.sampler.tree.get(torch.arange(9)).tolist() == pytest.approx([1.0 + 1e-9] * 9)
    assert buffer.sampler.tree.get(torch.tensor([10])).item() == pytest.approx(1e-6 + 1e-9)


def test_uniform_buffer_ignores_priorities_and_keeps_beta() -> None:
    buffer = make()
    Feeder().feed(buffer, 5)
    buffer.update_priorities(torch.tensor([0, 1]), torch.tensor([5.0, 1.0]))
    buffer.beta = 0.7
    assert buffer.beta == 0.7
    assert torch.equal(buffer.sample(4).weights, torch.ones(4))
    with pytest.raises(ValueError, match="beta"):
        buffer.beta = -1.0


def test_recent_reward_mean_covers_the_newest_steps() -> None:
    buffer = make()
    assert buffer.recent_reward_mean() == 0.0
    Feeder().feed(buffer, 4)
    newest = buffer.gather(torch.arange(3 * NUM_ENVS, 4 * NUM_ENVS)).reward
    assert buffer.recent_reward_mean(window=NUM_ENVS) == pytest.approx(float(newest.mean()))


@pytest.mark.parametrize("config", CONFIGS)
def test_save_load_round_trip_resumes_exactly(config: str, tmp_path: Path) -> None:
    kwargs = CONFIGS[config]
    original = make(**kwargs)
    feeder = Feeder(seed=4)
    feeder.feed(original, 45)  # past one wrap of the 30-row ring
    if original.sampler.__class__.__name__ == "PrioritizedSampler":
        batch = original.sample(16, torch.Generator().manual_seed(1))
        original.update_priorities(batch.indices, torch.rand(16, generator=torch.Generator().manual_seed(2)))
    original.beta = 0.55
    path = tmp_path / "replay.pt"
    original.save(path)
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed over the target
    loaded = ReplayBuffer.load(path)
    assert len(loaded) == len(original) and loaded.num_sampleable == original.num_sampleable
    assert loaded.beta == 0.55
    assert same(
        original.sample(12, torch.Generator().manual_seed(3)),
        loaded.sample(12, torch.Generator().manual_seed(3)),
    )
    # Continuing both with the same steps keeps them identical (cursors, stream state, n-step state).
    for args in feeder.steps(7):
        original.add(*args)
        loaded.add(*args)
    assert same(
        original.sample(12, torch.Generator().manual_seed(5)),
        loaded.sample(12, torch.Generator().manual_seed(5)),
    )


def _tensors(state: object) -> list[torch.Tensor]:
    """Every tensor of a nested state, in a fixed order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state) for t in _tensors(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return []


@pytest.mark.parametrize("config", CONFIGS)
def test_a_mostly_empty_buffer_saves_only_its_filled_part_and_loads_back_exactly(
    config: str, tmp_path: Path
) -> None:
    kwargs = CONFIGS[config]
    original = make(capacity=NUM_ENVS * 2000, **kwargs)
    feeder = Feeder(seed=7)
    feeder.feed(original, 20)  # 1% of the 2,000 rows
    if original.sampler.__class__.__name__ == "PrioritizedSampler":
        batch = original.sample(16, torch.Generator().manual_seed(1))
        original.update_priorities(batch.indices, torch.rand(16, generator=torch.Generator().manual_seed(2)))
    original.save(tmp_path / "replay.pt")
    # What is saved follows what the buffer holds, not its capacity: a few percent of the memory.
    saved = (tmp_path / "replay.pt").stat().st_size
    assert saved < original.nbytes() / 20, (saved, original.nbytes())
    # Partial tensors are copies: torch.save of a view would write the whole storage behind it.
    state = original.state_dict()
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in _tensors(state))

    loaded = ReplayBuffer.load(tmp_path / "replay.pt")
    for mine, theirs in zip(_tensors(state), _tensors(loaded.state_dict()), strict=True):
        assert torch.equal(mine, theirs)
    assert loaded.nbytes() == original.nbytes()  # back in full-capacity tensors
    assert same(
        original.sample(12, torch.Generator().manual_seed(3)),
        loaded.sample(12, torch.Generator().manual_seed(3)),
    )
    for args in feeder.steps(30):
        original.add(*args)
        loaded.add(*args)
    assert same(
        original.sample(12, torch.Generator().manual_seed(5)),
        loaded.sample(12, torch.Generator().manual_seed(5)),
    )


def test_load_state_into_a_buffer_with_different_arguments_is_refused(tmp_path: Path) -> None:
    buffer = make(frame_stack=K)
    Feeder().feed(buffer, 3)
    with pytest.raises(ValueError, match="n_step=1, this buffer has n_step=2"):
        make(frame_stack=K, n_step=2).load_state_dict(buffer.state_dict())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ReplayBuffer.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="not a replay buffer state"):
        buffer.load_state_dict({"weights": 1})
