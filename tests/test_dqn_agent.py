"""DQN learner on hand-built batches: each Rainbow-family switch changes the targets as it should."""

from __future__ import annotations

import pytest
import torch

from lodestar.agents.dqn.agent import DQNAgent, linear_schedule, random_shift
from lodestar.agents.dqn.config import AgentConfig
from tests.dqn_runs import Batch


def _frames(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=g)


def _agent(**overrides) -> DQNAgent:
    torch.manual_seed(0)
    return DQNAgent(num_actions=3, config=AgentConfig(**overrides), device=torch.device("cpu"))


def _set_linear_q(net, values: list[float]) -> None:
    """Make a (non-dueling) network output fixed Q-values regardless of input."""
    last = net.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(values))


def test_targets_plain_vs_double():
    next_obs = _frames(2, 1)
    reward, discount = torch.tensor([1.0, 0.5]), torch.tensor([0.99, 0.0])
    plain, double = _agent(), _agent(double=True)
    for agent in (plain, double):
        _set_linear_q(agent.q_network, [0.0, 10.0, 1.0])  # online prefers action 1
        _set_linear_q(agent.target_network, [5.0, -2.0, 3.0])  # target's max is action 0
    # plain DQN: max of target = 5; double: target evaluated at the online argmax (action 1) = -2
    assert torch.allclose(plain.td_targets(reward, discount, next_obs), torch.tensor([1.0 + 0.99 * 5.0, 0.5]))
    assert torch.allclose(
        double.td_targets(reward, discount, next_obs), torch.tensor([1.0 - 0.99 * 2.0, 0.5])
    )


def test_n_step_discount_and_terminal_are_used_as_given():
    agent = _agent()
    _set_linear_q(agent.target_network, [2.0, 0.0, 0.0])
    # a 3-step return sum 1 + 0.9*0 + 0.81*1 bootstraps with gamma^3; a terminated window does not
    reward = torch.tensor([1.81, 1.81])
    discount = torch.tensor([0.9**3, 0.0])
    targets = agent.td_targets(reward, discount, _frames(2, 2))
    assert torch.allclose(targets, torch.tensor([1.81 + 0.729 * 2.0, 1.81]))


def test_dueling_head_centres_advantages():
    agent = _agent(dueling=True)
    with torch.no_grad():
        agent.q_network.value[-1].weight.zero_()
        agent.q_network.value[-1].bias.fill_(4.0)
        agent.q_network.advantage[-1].weight.zero_()
        agent.q_network.advantage[-1].bias.copy_(torch.tensor([1.0, 2.0, 6.0]))
    q = agent.q_network(_frames(1, 3))
    assert torch.allclose(q, torch.tensor([[4.0 - 2.0, 4.0 - 1.0, 4.0 + 3.0]]))


def test_importance_weights_scale_the_loss():
    batch_args = dict(
        obs=_frames(2, 4),
        action=torch.tensor([0, 1]),
        reward=torch.tensor([1.0, -1.0]),
        discount=torch.tensor([0.0, 0.0]),
        next_obs=_frames(2, 5),
    )
    ones = _agent(loss="mse").update(Batch(**batch_args, weights=torch.ones(2)))
    zero_second = _agent(loss="mse").update(Batch(**batch_args, weights=torch.tensor([1.0, 0.0])))
    td = ones["td_abs"]
    assert torch.allclose(ones["loss"], (td**2).mean(), rtol=1e-5)
    assert torch.allclose(zero_second["loss"], (td[0] ** 2) / 2, rtol=1e-5)


def _large_error_batch() -> Batch:
    return Batch(
        obs=_frames(4, 6),
        action=torch.tensor([0, 1, 2, 0]),
        reward=torch.tensor([50.0, -40.0, 30.0, 20.0]),
        discount=torch.zeros(4),
        next_obs=_frames(4, 7),
        weights=torch.ones(4),
    )


def _grad_norm(net: torch.nn.Module) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))


def test_huber_vs_mse_on_large_errors():
    huber = _agent(loss="huber").update(_large_error_batch())
    mse = _agent(loss="mse").update(_large_error_batch())
    assert mse["loss"] > huber["loss"] * 10  # large errors: quadratic vs linear


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees():
    # ``update`` leaves the gradients it stepped with on the parameters. Both agents start from the
    # same weights and see the same batch, so their raw gradients agree; clipping rescales them.
    clipped, free = _agent(max_grad_norm=0.1), _agent(max_grad_norm=None)
    clipped.update(_large_error_batch())
    free.update(_large_error_batch())
    free_norm = _grad_norm(free.q_network)
    assert free_norm > 0.5  # Huber gradients of errors of 20-50: well above the bound, so clipping acts
    assert _grad_norm(clipped.q_network) == pytest.approx(0.1, rel=1e-4)
    scale = 0.1 / free_norm
    for ours, raw in zip(clipped.q_network.parameters(), free.q_network.parameters(), strict=True):
        assert torch.allclose(ours.grad, raw.grad * scale, rtol=1e-4, atol=1e-9)  # direction kept
    loose = _agent(max_grad_norm=1e6)
    loose.update(_large_error_batch())
    assert _grad_norm(loose.q_network) == pytest.approx(
        free_norm.item(), rel=1e-6
    )  # below the bound: untouched


def test_target_sync_hard_and_polyak():
    hard = _agent(target_update_period=2)
    batch = Batch(
        _frames(2, 8), torch.tensor([0, 1]), torch.ones(2), torch.zeros(2), _frames(2, 9), torch.ones(2)
    )
    hard.update(batch)
    assert not torch.equal(hard.q_network.head[-1].weight, hard.target_network.head[-1].weight)
    hard.update(batch)
    assert torch.equal(hard.q_network.head[-1].weight, hard.target_network.head[-1].weight)
    soft = _agent(target_update_period=1, tau=0.5)
    old_target = soft.target_network.head[-1].bias.clone()
    soft.update(batch)
    expected = 0.5 * old_target + 0.5 * soft.q_network.head[-1].bias
    assert torch.allclose(soft.target_network.head[-1].bias, expected)


def test_epsilon_greedy_and_schedule():
    agent = _agent(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=100)
    assert (
        agent.epsilon(0) == 1.0 and agent.epsilon(50) == pytest.approx(0.55) and agent.epsilon(10**6) == 0.1
    )
    _set_linear_q(agent.q_network, [0.0, 0.0, 9.0])
    obs = _frames(64, 10)
    assert agent.act(obs, 0.0).eq(2).all()
    explored = agent.act(obs, 1.0, torch.Generator().manual_seed(0))
    assert explored.ne(2).any()
    assert linear_schedule(0.4, 1.0, 0, 5) == 1.0


def test_random_shift_is_a_translated_crop():
    frames = torch.arange(84 * 84, dtype=torch.float32).view(1, 1, 84, 84).repeat(8, 4, 1, 1)
    shifted = random_shift(frames, pad=4, generator=torch.Generator().manual_seed(1))
    assert shifted.shape == frames.shape
    interior = shifted[:, 0, 10:70, 10:70]
    row_step = interior[:, 1:, :] - interior[:, :-1, :]
    assert torch.all(row_step == 84)  # rows stay contiguous rows of the original: a pure translation
    assert not all(torch.equal(shifted[0], shifted[i]) for i in range(1, 8))


def test_fully_random_acting_skips_the_network_but_keeps_the_random_stream():
    agent = _agent()
    obs = _frames(6, seed=1)
    # The draws the epsilon-greedy path makes: one uniform per env, then one random action per env.
    reference = torch.Generator().manual_seed(3)
    torch.rand(6, generator=reference)
    expected = torch.randint(0, 3, (6,), generator=reference)
    after_expected = torch.rand(1, generator=reference)

    def refuse(*args, **kwargs):
        raise AssertionError("the Q-network ran although every action is random")

    agent.q_network.forward = refuse  # type: ignore[method-assign]
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(agent.act(obs, 1.0, generator), expected)
    assert torch.equal(torch.rand(1, generator=generator), after_expected)
