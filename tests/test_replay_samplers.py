"""Uniform and prioritized samplers: frequencies, importance weights, priority updates."""

from __future__ import annotations

import pytest
import torch

from lodestar.replay import PrioritizedSampler, UniformSampler

# 99.9% quantile of the chi-square distribution with 9 degrees of freedom.
CHI2_9DOF_999 = 27.877


def chi_square(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def draw_counts(sampler, capacity: int, draws: int, batch: int = 50, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(capacity, dtype=torch.float64)
    for _ in range(draws // batch):
        indices, _ = sampler.sample(batch, g)
        counts += torch.bincount(indices, minlength=capacity).double()
    return counts


def test_prioritized_frequencies_are_proportional_to_priority_power_alpha() -> None:
    alpha = 0.7
    sampler = PrioritizedSampler(10, alpha=alpha, eps=1e-9)
    sampler.enable(torch.arange(10))
    priorities = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 0.2, 5.0, 0.05, 1.5, 4.0], dtype=torch.float64)
    sampler.update_priorities(torch.arange(10), priorities)
    expected = priorities**alpha / (priorities**alpha).sum()
    counts = draw_counts(sampler, 10, 40_000)
    assert chi_square(counts, expected) < CHI2_9DOF_999
    # Sanity check that the test has power: uniform expectations are rejected.
    assert chi_square(counts, torch.full((10,), 0.1, dtype=torch.float64)) > 10 * CHI2_9DOF_999


def test_importance_weights_follow_the_formula() -> None:
    beta, alpha = 0.6, 0.5
    sampler = PrioritizedSampler(8, alpha=alpha, beta=beta, eps=1e-9)
    sampler.enable(torch.arange(6))  # 6 sampleable items; slots 6 and 7 stay empty
    priorities = torch.tensor([1.0, 4.0, 9.0, 0.25, 2.0, 16.0], dtype=torch.float64)
    sampler.update_priorities(torch.arange(6), priorities)
    indices, weights = sampler.sample(64, torch.Generator().manual_seed(1))
    p = priorities**alpha
    probs = p / p.sum()
    n = 6
    raw = (n * probs) ** -beta
    expected = (raw / raw.max())[indices]  # normalized by the max weight over the whole buffer
    assert torch.allclose(weights.double(), expected, rtol=1e-5)
    assert weights.dtype == torch.float32 and float(weights.max()) <= 1.0
    sampler.beta = 1.0
    _, weights = sampler.sample(64, torch.Generator().manual_seed(1))
    assert torch.allclose(
        weights.double(), ((n * probs) ** -1.0 / ((n * probs) ** -1.0).max())[indices], rtol=1e-5
    )


def test_new_items_get_the_max_priority_seen_and_updates_change_sampling() -> None:
    sampler = PrioritizedSampler(4, alpha=1.0, eps=1e-9)
    sampler.enable(torch.tensor([0, 1]))
    assert sampler.tree.get(torch.tensor([0, 1])).tolist() == [1.0, 1.0]  # initial max priority is 1
    sampler.update_priorities(torch.tensor([0, 1]), torch.tensor([3.0, 0.5]))
    sampler.enable(torch.tensor([1, 2]))  # 1 is already enabled: it keeps its priority
    assert sampler.tree.get(torch.tensor([0, 1, 2])).tolist() == pytest.approx([3.0, 0.5, 3.0])
    sampler.update_priorities(torch.tensor([2, 2]), torch.tensor([7.0, 0.0]))  # last one wins
    assert sampler.tree.get(torch.tensor([2])).item() == pytest.approx(1e-9)
    assert sampler.max_priority == pytest.approx(3.0)  # the max seen, not the current max


def test_disabled_items_are_never_sampled_nor_revived_by_updates() -> None:
    sampler = PrioritizedSampler(6)
    sampler.enable(torch.arange(6))
    sampler.disable(torch.tensor([1, 4]))
    sampler.update_priorities(torch.tensor([1, 2]), torch.tensor([100.0, 1.0]))
    assert len(sampler) == 4
    counts = draw_counts(sampler, 6, 2_000)
    assert counts[1] == 0 and counts[4] == 0 and bool((counts[[0, 2, 3, 5]] > 0).all())


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
def test_renew_equals_disable_then_enable(kind: str) -> None:
    def make() -> UniformSampler | PrioritizedSampler:
        sampler = UniformSampler(12) if kind == "uniform" else PrioritizedSampler(12, alpha=1.0)
        sampler.enable(torch.arange(8))
        sampler.disable(torch.tensor([2]))
        sampler.update_priorities(torch.tensor([0, 1, 3]), torch.tensor([5.0, 0.5, 2.0]))
        return sampler

    # Overwritten slots: sampleable (0, 1), disabled (2) and never used (9, 10).
    slots = torch.tensor([0, 1, 2, 9, 10])
    renewed, reference = make(), make()
    renewed.renew(slots)
    reference.disable(slots)
    reference.enable(slots)
    a, b = renewed.state_dict(), reference.state_dict()
    assert a["count"] == b["count"] == 10 and a["high"] == b["high"] == 11
    assert torch.equal(a["mask"], b["mask"])
    if isinstance(renewed, PrioritizedSampler) and isinstance(reference, PrioritizedSampler):
        assert torch.equal(renewed.tree.leaves(), reference.tree.leaves())
        assert renewed.tree.get(slots).tolist() == pytest.approx([5.0] * 5)  # the max priority seen
        assert renewed.tree.total().item() == reference.tree.total().item()
        assert renewed.tree.min().item() == reference.tree.min().item()


@pytest.mark.parametrize("enabled", [list(range(10)), [0, 2, 3, 5, 6, 7, 8, 9], [1, 9], [4]])
def test_uniform_sampler_is_uniform_over_the_sampleable_items(enabled: list[int]) -> None:
    sampler = UniformSampler(40)
    sampler.enable(torch.arange(10))
    sampler.disable(torch.tensor([i for i in range(10) if i not in enabled]))
    counts = draw_counts(sampler, 40, 20_000, seed=3)
    assert set(torch.nonzero(counts).flatten().tolist()) == set(enabled)
    if len(enabled) == 10:
        assert chi_square(counts[:10], torch.full((10,), 0.1, dtype=torch.float64)) < CHI2_9DOF_999
    else:
        share = counts[enabled] / counts.sum()
        assert torch.allclose(share, torch.full_like(share, 1 / len(enabled)), atol=0.02)
    _, weights = sampler.sample(5)
    assert torch.equal(weights, torch.ones(5))


def test_sampling_is_reproducible_under_a_seed() -> None:
    for sampler in (UniformSampler(100), PrioritizedSampler(100)):
        sampler.enable(torch.arange(0, 100, 3))
        a = sampler.sample(16, torch.Generator().manual_seed(5))[0]
        b = sampler.sample(16, torch.Generator().manual_seed(5))[0]
        assert torch.equal(a, b)


def test_errors_name_the_problem() -> None:
    sampler = PrioritizedSampler(4)
    with pytest.raises(ValueError, match="no item is sampleable"):
        sampler.sample(2)
    sampler.enable(torch.arange(2))
    with pytest.raises(ValueError, match="finite and >= 0"):
        sampler.update_priorities(torch.tensor([0]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        sampler.update_priorities(torch.tensor([0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        sampler.update_priorities(torch.tensor([4]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="beta"):
        sampler.beta = -0.1
    with pytest.raises(ValueError, match="alpha=0.5"):
        PrioritizedSampler(4, alpha=0.6).load_state_dict(sampler.state_dict())
