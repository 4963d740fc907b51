"""The DQN learner: epsilon-greedy acting, TD targets, one gradient update, target-network sync."""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from lodestar.agents.dqn.config import AgentConfig
from lodestar.agents.dqn.networks import QNetwork
from lodestar.runtime.checkpoint import restore_module


class ReplayBatch(Protocol):
    """What the learner needs from a replay sample (n-step fields already folded in)."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor
    weights: torch.Tensor


def linear_schedule(start: float, end: float, duration: int, step: int) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then constant."""
    if step >= duration:
        return end
    return start + max(step, 0) / duration * (end - start)


def random_shift(
    frames: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by ``pad`` pixels, then crop back at a random offset per item."""
    batch, channels, height, width = frames.shape
    padded = F.pad(frames.float(), (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), device=frames.device, generator=generator)
    rows = torch.arange(height, device=frames.device).view(1, height, 1) + offsets[:, 0].view(batch, 1, 1)
    cols = torch.arange(width, device=frames.device).view(1, 1, width) + offsets[:, 1].view(batch, 1, 1)
    index = (rows * (width + 2 * pad) + cols).view(batch, 1, height * width).expand(batch, channels, -1)
    cropped = padded.flatten(2).gather(2, index).view(batch, channels, height, width)
    return cropped.to(frames.dtype)


def adam_kernels(impl: str) -> dict[str, bool]:
    """``torch.optim.Adam`` keyword arguments choosing its kernels (``AgentConfig.adam_impl``)."""
    choices = {
        "fused": {"fused": True, "foreach": False},
        "foreach": {"fused": False, "foreach": True},
        "for_loop": {"fused": False, "foreach": False},
    }
    if impl not in choices:
        raise ValueError(f"agent.adam_impl must be one of {', '.join(choices)}, got {impl!r}")
    return choices[impl]


class DQNAgent:
    """Online and target Q-networks with their optimizer; every tensor lives on ``device``.

    The speed levers of :class:`~lodestar.agents.dqn.config.AgentConfig` (``adam_impl``,
    ``channels_last``, ``compile``, ``precision``) change how the update is computed, not what it
    computes (bfloat16 aside, which rounds the forward passes).
    """

    def __init__(
        self, num_actions: int, config: AgentConfig, device: torch.device, in_channels: int = 4
    ) -> None:
        self.config = config
        self.num_actions = num_actions
        self.device = device
        self.q_network = QNetwork(
            num_actions, in_channels, dueling=config.dueling, channels_last=config.channels_last
        ).to(device)
        self.target_network = copy.deepcopy(self.q_network)
        self.target_network.requires_grad_(False)
        kernels = adam_kernels(config.adam_impl)
        self.optimizer = torch.optim.Adam(
            self.q_network.parameters(),
            lr=config.lr,
            eps=config.adam_eps,
            foreach=kernels["foreach"],
            fused=kernels["fused"],
        )
        self.updates = 0
        # The random shifts stay outside the compiled part: they draw from a torch.Generator.
        self._loss_terms = torch.compile(self._eager_loss_terms) if config.compile else self._eager_loss_terms

    def epsilon(self, step: int) -> float:
        c = self.config
        return linear_schedule(c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps, step)

    def _autocast(self) -> torch.autocast:
        """The forward passes' precision (a no-op context for float32)."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bfloat16"
        )

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, epsilon: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Epsilon-greedy actions for a batch of observations (one random draw per env)."""
        batch = obs.shape[0]
        if epsilon >= 1.0:
            # All random (before learning starts): skip the network, with the same draws as below so
            # the generator's stream, and hence a resumed run, does not depend on this shortcut.
            torch.rand(batch, device=self.device, generator=generator)
            return torch.randint(0, self.num_actions, (batch,), device=self.device, generator=generator)
        with self._autocast():
            greedy = self.q_network(obs).argmax(dim=1)
        if epsilon <= 0.0:
            return greedy
        explore = torch.rand(batch, device=self.device, generator=generator) < epsilon
        random_actions = torch.randint(0, self.num_actions, (batch,), device=self.device, generator=generator)
        return torch.where(explore, random_actions, greedy)

    @torch.no_grad()
    def td_targets(
        self, reward: torch.Tensor, discount: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        """``r + discount * Q_target(s', a*)``; ``a*`` from the online net when ``double``.

        ``reward`` is the (n-step) discounted reward sum and ``discount`` is ``gamma**k``, or 0 when
        the episode terminated within the window, as the replay buffer computes them.
        """
        with self._autocast():
            next_target_q = self.target_network(next_obs).float()
            if self.config.double:
                next_action = self.q_network(next_obs).argmax(dim=1, keepdim=True)
            else:
                next_action = next_target_q.argmax(dim=1, keepdim=True)
        next_value = next_target_q.gather(1, next_action).squeeze(1)
        return reward + discount * next_value

    def update(self, batch: ReplayBatch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One gradient step on a replay batch; returns detached loss, mean Q and |TD| per item.

        Nothing here waits for the device (no ``.item()``): on CUDA the caller decides when to read.
        """
        obs, next_obs = batch.obs, batch.next_obs
        if self.config.augment == "random_shift":
            obs = random_shift(obs, generator=generator)
            next_obs = random_shift(next_obs, generator=generator)
        loss, q_taken, td_error = self._loss_terms(
            obs,
            next_obs,
            batch.action.long(),
            batch.reward.to(torch.float32),
            batch.discount.to(torch.float32),
            batch.weights.to(torch.float32),
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.q_network.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        self._sync_target()
        return {"loss": loss.detach(), "q_mean": q_taken.detach().mean(), "td_abs": td_error.detach().abs()}

    def _eager_loss_terms(
        self,
        obs: torch.Tensor,
        next_obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        discount: torch.Tensor,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The weighted TD loss, the Q-values of the actions taken and the TD errors."""
        targets = self.td_targets(reward, discount, next_obs)
        with self._autocast():
            q_values = self.q_network(obs).float()
        q_taken = q_values.gather(1, action.view(-1, 1)).squeeze(1)
        if self.config.loss == "huber":
            per_item = F.smooth_l1_loss(q_taken, targets, reduction="none")
        else:
            per_item = F.mse_loss(q_taken, targets, reduction="none")
        return (weights * per_item).mean(), q_taken, targets - q_taken

    def _sync_target(self) -> None:
        if self.updates % self.config.target_update_period != 0:
            return
        if self.config.tau >= 1.0:
            self.target_network.load_state_dict(self.q_network.state_dict())
            return
        with torch.no_grad():
            for target, online in zip(
                self.target_network.parameters(), self.q_network.parameters(), strict=True
            ):
                target.lerp_(online, self.config.tau)

    def state_dict(self) -> dict[str, Any]:
        return {
            "q_network": self.q_network.state_dict(),
            "target_network": self.target_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        restore_module(self.q_network, state["q_network"], "q_network", source)
        restore_module(self.target_network, state["target_network"], "target_network", source)
        # The configured kernels win over the saved ones (a checkpoint may come from another setting);
        # they are set before loading because they decide where Adam's step counts are put.
        kernels = adam_kernels(self.config.adam_impl)
        saved = state["optimizer"]
        self.optimizer.load_state_dict(
            {**saved, "param_groups": [{**group, **kernels} for group in saved["param_groups"]]}
        )
        self.updates = int(state["updates"])
