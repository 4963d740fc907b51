"""The learner's pass over a collected rollout: the follower re-run with gradients, and GAE advantages.

The collector runs without gradients; :func:`replay_rollout` replays the stored observations through
the follower with its recurrent memory, restarting it at episode boundaries, starting from the memory
carried into the rollout (truncated backpropagation through time, as in recurrent PPO).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lodestar.agents.rollout import Rollout
from lodestar.agents.vln.follower import Follower, FollowerMemory
from lodestar.envs.base import Observation, dict_observation
from lodestar.envs.nav.sim.feature_table import FeatureTable


@dataclass
class ReplayedRollout:
    """Follower outputs on a rollout: ``logits [T, N, C]``, ``values [T, N]`` (with gradients) and
    ``next_values [T, N]`` (detached): the value of the state after each step, 0 after termination."""

    logits: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor


def _at(obs: Observation, t: int, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return {k: (v[t] if rows is None else v[t][rows]) for k, v in dict_observation(obs).items()}


def replay_rollout(
    model: Follower,
    rollout: Rollout,
    start_memory: FollowerMemory | None,
    start_fresh: torch.Tensor,
    features: FeatureTable | None = None,
) -> ReplayedRollout:
    """Re-run the follower over ``rollout`` with gradients (see the module docstring).

    ``features``: the env's ``feature_table`` when the rollout holds index observations.
    """
    steps, n = rollout.action.shape
    done = rollout.terminated | rollout.truncated
    memory = start_memory
    bootstrap = torch.zeros(steps, n, device=rollout.reward.device)
    logits, values = [], []
    everyone = torch.ones(n, dtype=torch.bool, device=done.device)
    for t in range(steps):
        # Text is re-encoded with gradients at t = 0; states carried into the rollout are constants.
        fresh_text, fresh_state = (everyone, start_fresh) if t == 0 else (done[t - 1], done[t - 1])
        out, memory = model.observe(memory, _at(rollout.obs, t), fresh_text, fresh_state, features)
        logits.append(out.logits)
        values.append(out.value)
        truncated = torch.nonzero(rollout.truncated[t]).flatten()
        if truncated.numel():
            with torch.no_grad():
                final, _ = model.observe(
                    memory.select(truncated).detach(), _at(rollout.next_obs, t, truncated), features=features
                )
            bootstrap[t, truncated] = final.value
    if memory is None:
        raise ValueError("cannot replay a rollout of zero steps")
    with torch.no_grad():
        last_obs = dict_observation(rollout.last_obs)
        last, _ = model.observe(memory.detach(), last_obs, done[-1], done[-1], features)
    value_tensor = torch.stack(values)
    following = torch.cat([value_tensor[1:].detach(), last.value.unsqueeze(0)])
    return ReplayedRollout(torch.stack(logits), value_tensor, torch.where(done, bootstrap, following))


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(lambda) advantages and returns over ``[T, N]`` tensors; ``next_values`` already handle episode ends."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        running = delta + gamma * lam * (~done[t]).to(rewards.dtype) * running
        advantages[t] = running
    return advantages, advantages + values
