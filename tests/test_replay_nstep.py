"""n-step returns across terminations, truncations and stream breaks, by hand and against a reference."""

from __future__ import annotations

import pytest
import torch

from lodestar.replay import ReplayBuffer, fold_nstep, ready_in_window
from tests.replay_helpers import StackedStreams

F, T = False, True


def scalar_buffer(n_step: int, gamma: float = 0.5, capacity: int = 32) -> ReplayBuffer:
    return ReplayBuffer(capacity, 1, (1,), torch.float32, n_step=n_step, gamma=gamma)


def add(
    buffer: ReplayBuffer, obs: float, reward: float, term: bool, trunc: bool, next_obs: float, **kw
) -> None:
    buffer.add(
        torch.tensor([[float(obs)]]),
        torch.tensor([0]),
        torch.tensor([float(reward)]),
        torch.tensor([term]),
        torch.tensor([trunc]),
        torch.tensor([[float(next_obs)]]),
        **{k: torch.tensor([v]) for k, v in kw.items()},
    )


def sampleable(buffer: ReplayBuffer) -> list[int]:
    return torch.nonzero(buffer.sampler.is_sampleable(torch.arange(buffer.capacity))).flatten().tolist()


def test_fold_nstep_by_hand() -> None:
    rewards = torch.tensor([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    terminated = torch.tensor([[F, F, F], [F, T, F], [F, F, T], [T, F, F]])
    stop = torch.tensor([[F, T, F], [F, T, F], [F, F, T], [T, T, T]])
    reward, discount, steps = fold_nstep(rewards, terminated, stop, 0.5)
    # row 0: truncation-like stop after step 1 -> 1 + 0.5*2, bootstrap with 0.5^2
    # row 1: termination at step 1 -> 1 + 0.5*2, discount 0
    # row 2: termination at step 2 -> 1 + 1 + 1, discount 0
    # row 3: termination at step 0 -> 1, discount 0 (the garbage after the stop is ignored)
    assert reward.tolist() == [2.0, 2.0, 3.0, 1.0]
    assert discount.tolist() == [0.25, 0.0, 0.0, 0.0]
    assert steps.tolist() == [2, 2, 3, 1]
    full = fold_nstep(
        rewards[:1], torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool), 0.5
    )
    assert full[0].item() == 1 + 1 + 1 and full[1].item() == 0.125 and full[2].item() == 3


def test_ready_in_window() -> None:
    stop = torch.tensor([[F, F], [F, T], [F, F]])
    assert ready_in_window(stop).tolist() == [[T, T], [F, T], [F, F]]
    assert ready_in_window(stop, oldest_complete=False).tolist() == [[F, T], [F, T], [F, F]]


def test_buffer_nstep_across_termination_and_truncation_by_hand() -> None:
    buffer = scalar_buffer(n_step=3)
    add(buffer, 0, 1, F, F, 10)
    add(buffer, 10, 2, T, F, 15)  # terminated; 15 is the final observation
    add(buffer, 20, 4, F, F, 30)  # 20: first observation of the next episode
    add(buffer, 30, 8, F, T, 35)  # truncated; 35 is the true final observation
    add(buffer, 40, 16, F, F, 50)
    assert sampleable(buffer) == [0, 1, 2, 3]  # step 4's window is still open
    batch = buffer.gather(torch.tensor([0, 1, 2, 3]))
    assert batch.reward.tolist() == [2.0, 2.0, 8.0, 8.0]
    assert batch.discount.tolist() == [0.0, 0.0, 0.25, 0.5]
    assert batch.next_obs.flatten().tolist() == [15, 15, 35, 35]
    assert batch.obs.flatten().tolist() == [0, 10, 20, 30]
    add(buffer, 50, 32, F, F, 60)
    assert 4 not in sampleable(buffer)
    add(buffer, 60, 64, F, F, 70)
    batch = buffer.gather(torch.tensor([4]))
    assert (batch.reward.item(), batch.discount.item(), batch.next_obs.item()) == (16 + 16 + 16, 0.125, 70)
    with pytest.raises(ValueError, match="not sampleable"):
        buffer.gather(torch.tensor([5]))


def test_life_loss_terminal_stops_the_return_without_an_episode_end() -> None:
    buffer = scalar_buffer(n_step=3)
    add(buffer, 0, 1, F, F, 10, episode_end=F)
    add(buffer, 10, 2, T, F, 20, episode_end=F)  # life lost: terminal for learning, the game goes on
    add(buffer, 20, 4, F, F, 30, episode_end=F)
    add(buffer, 30, 8, F, F, 40, episode_end=F)
    batch = buffer.gather(torch.tensor([0, 1]))
    assert batch.reward.tolist() == [2.0, 2.0] and batch.discount.tolist() == [0.0, 0.0]
    assert sampleable(buffer) == [0, 1]  # step 2 bootstraps normally once steps 2..4 exist


def test_a_stream_break_without_a_done_flag_ends_the_previous_chain() -> None:
    buffer = scalar_buffer(n_step=3)
    add(buffer, 0, 1, F, F, 10)
    add(buffer, 10, 2, F, F, 20)
    add(buffer, 99, 4, F, F, 100)  # obs is not the previous next_obs: someone reset the env
    batch = buffer.gather(torch.tensor([0, 1]))
    assert batch.reward.tolist() == [2.0, 2.0]
    assert batch.discount.tolist() == [0.25, 0.5]  # bootstrap from the last real next_obs (truncation)
    assert batch.next_obs.flatten().tolist() == [20, 20]


def reference(records: list, n: int, gamma: float) -> dict[tuple[int, int], tuple[float, float, int]]:
    """Per (step, env): n-step reward, discount and the step whose next_obs to bootstrap from."""
    out = {}
    num_envs = records[0][1].shape[0]
    for e in range(num_envs):
        for t in range(len(records)):
            total = 0.0
            for j in range(n):
                s = t + j
                if s >= len(records):
                    break
                _, reward, term, trunc = records[s]
                total += gamma**j * float(reward[e])
                if term[e] or trunc[e]:
                    out[t, e] = (total, 0.0 if term[e] else gamma ** (j + 1), s)
                    break
                if j == n - 1:
                    out[t, e] = (total, gamma**n, s)
    return out


@pytest.mark.parametrize("n_step", [1, 2, 5])
def test_buffer_nstep_matches_a_reference_on_many_streams(n_step: int) -> None:
    num_envs, steps, gamma = 4, 60, 0.9
    env = StackedStreams(num_envs, k=2, size=3, min_len=1, max_len=8, seed=n_step)
    buffer = ReplayBuffer(num_envs * 100, num_envs, (2, 3, 3), torch.uint8, n_step=n_step, gamma=gamma)
    obs, records, finals = env.reset(), [], []
    for _ in range(steps):
        next_obs, reward, term, trunc, final = env.step()
        buffer.add(obs, torch.zeros(num_envs, dtype=torch.long), reward, term, trunc, final)
        records.append((obs, reward, term, trunc))
        finals.append(final)
        obs = next_obs
    expected = reference(records, n_step, gamma)
    indices = torch.tensor(sampleable(buffer))
    assert sorted((t * num_envs + e) for t, e in expected) == indices.tolist()
    batch = buffer.gather(indices)
    for i, index in enumerate(indices.tolist()):
        t, e = divmod(index, num_envs)
        reward, discount, last = expected[t, e]
        assert batch.reward[i].item() == pytest.approx(reward, rel=1e-6)
        assert batch.discount[i].item() == pytest.approx(discount, rel=1e-6)
        assert torch.equal(batch.next_obs[i], finals[last][e])
        assert torch.equal(batch.obs[i], records[t][0][e])
