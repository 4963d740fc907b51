"""Frame-deduplicated stacks: rebuilt obs/next_obs equal what the env returned, never mixing streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lodestar.replay import ReplayBuffer
from tests.replay_helpers import StackedStreams


@pytest.fixture(autouse=True)
def single_thread():
    """84x84 stacks are big enough for torch to split ops across threads; on a busy 2-core machine
    the thread barriers make each add ~30x slower, so these tests run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fill(buffer: ReplayBuffer, env: StackedStreams, steps: int, life_loss_every: int = 0) -> list:
    """Run ``env`` into ``buffer``; returns per step ``(obs, final_obs, terminated, truncated)``."""
    obs, history = env.reset(), []
    for s in range(steps):
        next_obs, reward, term, trunc, final = env.step()
        done = term | trunc
        learn_term = term.clone()
        if life_loss_every:
            learn_term |= (torch.arange(env.num_envs) + s) % life_loss_every == 0
        action = torch.arange(env.num_envs) * 100 + s
        buffer.add(obs, action, reward, learn_term, trunc, final, episode_end=done)
        history.append((obs, final, learn_term, trunc | done))
        obs = next_obs
    return history


def check_all(buffer: ReplayBuffer, history: list) -> int:
    """Every sampleable transition's obs, action and bootstrap next_obs equal the recorded ones."""
    n, num_envs, rows = buffer.n_step, buffer.num_envs, buffer.rows
    indices = torch.nonzero(buffer.sampler.is_sampleable(torch.arange(buffer.capacity))).flatten()
    batch = buffer.gather(indices)
    steps = len(history)
    for i, index in enumerate(indices.tolist()):
        row, e = divmod(index, num_envs)
        t = steps - 1 - ((steps - 1 - row) % rows)  # the newest step written to this row
        assert torch.equal(batch.obs[i], history[t][0][e]), f"obs of step {t}, env {e}"
        assert batch.action[i].item() == e * 100 + t
        last = t
        while last < t + n - 1 and not history[last][3][e] and not history[last][2][e]:
            last += 1
        assert torch.equal(batch.next_obs[i], history[last][1][e]), f"next_obs of step {t}, env {e}"
    return indices.numel()


@pytest.mark.parametrize("pad", ["zero", "repeat", "noise"])
@pytest.mark.parametrize(("num_envs", "n_step"), [(1, 1), (5, 1), (5, 3)])
def test_rebuilt_stacks_equal_the_env_stacks_across_episode_starts_and_streams(
    pad: str, num_envs: int, n_step: int
) -> None:
    env = StackedStreams(num_envs, k=4, size=5, pad=pad, min_len=1, max_len=15, seed=num_envs + n_step)
    buffer = ReplayBuffer(num_envs * 40, num_envs, (4, 5, 5), torch.uint8, frame_stack=4, n_step=n_step)
    history = fill(buffer, env, 130)  # wraps the 40-row ring three times
    checked = check_all(buffer, history)
    assert checked >= buffer.capacity // 2


def test_long_episodes_lose_no_transition_to_frame_eviction() -> None:
    env = StackedStreams(3, k=4, size=4, pad="zero", min_len=300, max_len=400, seed=1)
    buffer = ReplayBuffer(3 * 400, 3, (4, 4, 4), torch.uint8, frame_stack=4)
    history = fill(buffer, env, 1000)
    assert check_all(buffer, history) == buffer.capacity == len(buffer)


def test_very_short_episodes_evict_the_oldest_transitions_instead_of_corrupting_them() -> None:
    # "noise" resets store whole stacks (4 frames) for one-step episodes: the frame ring, sized for
    # about one frame per transition, overruns, and the stale transitions must stop being sampleable.
    env = StackedStreams(2, k=4, size=4, pad="noise", min_len=1, max_len=2, seed=3)
    buffer = ReplayBuffer(2 * 50, 2, (4, 4, 4), torch.uint8, frame_stack=4, prioritized=True)
    history = fill(buffer, env, 200)
    checked = check_all(buffer, history)
    assert 0 < checked < len(buffer)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # sampling never returns a stale transition
        batch = buffer.sample(16, g)
        assert bool(buffer.sampler.is_sampleable(batch.indices).all())


def test_life_loss_terminals_keep_the_stack_continuing() -> None:
    env = StackedStreams(3, k=4, size=5, pad="zero", min_len=20, max_len=40, seed=7)
    buffer = ReplayBuffer(3 * 60, 3, (4, 5, 5), torch.uint8, frame_stack=4, n_step=3)
    history = fill(buffer, env, 150, life_loss_every=7)
    check_all(buffer, history)
    # Continuing stacks are stored one frame per step: life losses cost no extra frames.
    assert int(buffer._frames.frame_count.sum()) < 3 * (150 + 150 // 20 + 2)


def test_next_obs_that_is_not_a_shifted_stack_is_rejected() -> None:
    buffer = ReplayBuffer(8, 2, (4, 3, 3), torch.uint8, frame_stack=4)
    obs = torch.randint(1, 255, (2, 4, 3, 3), dtype=torch.uint8)
    reset_like = torch.zeros_like(obs)  # e.g. the next episode's reset stack instead of final_obs
    reset_like[:, -1] = 9
    next_obs = torch.cat([obs[:, 1:], reset_like[:, -1:]], 1)
    next_obs[1] = reset_like[1]
    no = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"env\(s\) \[1\]: next_obs is not obs shifted"):
        buffer.add(obs, torch.zeros(2, dtype=torch.long), torch.zeros(2), no, no, next_obs)


def test_bytes_per_transition_are_about_one_frame() -> None:
    env = StackedStreams(4, k=4, size=84, pad="zero", min_len=150, max_len=250, seed=0)
    buffer = ReplayBuffer(4 * 2000, 4, (4, 84, 84), torch.uint8, frame_stack=4, n_step=3, prioritized=True)
    fill(buffer, env, 20)
    per_transition = buffer.nbytes() / buffer.capacity
    assert 84 * 84 < per_transition < 84 * 84 * 1.03 + 64


def test_real_ale_vector_env_stacks_are_rebuilt_exactly() -> None:
    vector_env = pytest.importorskip("ale_py.vector_env")
    num_envs, steps = 2, 300
    env = vector_env.AtariVectorEnv(
        "breakout",
        num_envs,
        autoreset_mode="SameStep",
        num_threads=1,
        max_num_frames_per_episode=4 * 70,  # truncations every 70 steps, besides real game overs
        repeat_action_probability=0.0,
        noop_max=30,
        reward_clipping=False,
    )
    try:
        obs_np, _ = env.reset(seed=0)
        # ale-py fills the older stack slots with zeros after a reset (also after no-op starts).
        assert not obs_np[:, :-1].any() and obs_np[:, -1].any()
        buffer = ReplayBuffer(num_envs * 120, num_envs, (4, 84, 84), torch.uint8, frame_stack=4, n_step=3)
        rng = np.random.default_rng(0)
        history, ends = [], 0
        for s in range(steps):
            action = rng.integers(0, env.single_action_space.n, num_envs)
            next_np, reward, term, trunc, info = env.step(action)
            done = term | trunc
            final_np = next_np.copy()
            if done.any():
                final_np[done] = np.stack([info["final_obs"][e] for e in np.flatnonzero(done)])
                ends += int(done.sum())
            obs, final = torch.from_numpy(obs_np), torch.from_numpy(final_np)
            term_t, trunc_t = torch.from_numpy(term), torch.from_numpy(trunc)
            action_t = torch.arange(num_envs) * 100 + s
            buffer.add(obs, action_t, torch.from_numpy(reward).float(), term_t, trunc_t, final)
            history.append((obs.clone(), final.clone(), term_t.clone(), trunc_t.clone()))
            obs_np = next_np
        assert ends >= 4
        assert check_all(buffer, history) >= buffer.capacity - num_envs * 2
    finally:
        env.close()
