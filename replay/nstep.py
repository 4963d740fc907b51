"""n-step returns, folded at sample time from consecutive 1-step transitions of one stream.

A window holds steps ``t, t+1, ..., t+n-1`` of the same env stream. Accumulation stops after the first
step that ends the bootstrap chain (``stop``: termination, truncation, or an episode boundary):

- ``reward = sum_{j<k} gamma^j r_{t+j}`` over the ``k`` steps accumulated;
- ``discount = gamma^k``, or ``0`` when step ``t+k-1`` terminated (nothing to bootstrap from);
- the bootstrap observation is the ``next_obs`` of step ``t+k-1``, which at a truncation is the
  episode's true final observation.

Because nothing is folded at write time, a transition needs no pending state: it becomes sampleable
once its window is complete or contains a stop (:func:`ready_in_window`).
"""

from __future__ import annotations

import torch


def fold_nstep(
    rewards: torch.Tensor, terminated: torch.Tensor, stop: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold ``[B, n]`` windows into ``(reward [B], discount [B], steps [B])``.

    ``stop[:, j]`` marks that the chain ends after step ``j`` (it must be set wherever ``terminated``
    is). Entries after the first stop are ignored, whatever they hold.
    """
    if rewards.shape != terminated.shape or rewards.shape != stop.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards, terminated and stop must share one [B, n] shape, got "
            f"{tuple(rewards.shape)}, {tuple(terminated.shape)}, {tuple(stop.shape)}"
        )
    n = rewards.shape[1]
    stop = stop | terminated
    stops_before = stop.long().cumsum(1) - stop.long()
    included = stops_before == 0
    powers = gamma ** torch.arange(n + 1, device=rewards.device, dtype=torch.float64)
    reward = (rewards.to(torch.float64) * powers[:n] * included).sum(1).to(torch.float32)
    steps = included.sum(1)
    ended_in_termination = terminated.gather(1, (steps - 1).unsqueeze(1)).squeeze(1)
    discount = (powers[steps] * ~ended_in_termination).to(torch.float32)
    return reward, discount, steps


def ready_in_window(stop: torch.Tensor, oldest_complete: bool = True) -> torch.Tensor:
    """Which transitions of the newest ``n`` steps are sampleable.

    ``stop`` is ``[m, num_envs]`` (``m <= n``) for steps ``s-m+1 .. s`` of every stream, ``s`` being the
    step just written. A step is ready if a stop lies between it and ``s`` (inclusive); the oldest one is
    ready anyway when ``oldest_complete`` (its window of ``n`` steps is fully written).
    """
    stop_at_or_after = stop.flip(0).long().cumsum(0).flip(0) > 0
    if oldest_complete:
        stop_at_or_after[0] = True
    return stop_at_or_after
