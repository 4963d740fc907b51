"""Synthetic env streams for the replay tests: every frame encodes (env, episode, step)."""

from __future__ import annotations

import torch


class StackedStreams:
    """``num_envs`` lock-step streams of ``[k, size, size]`` uint8 frame stacks with SAME_STEP autoreset.

    Frame pixels: ``[0, 0] = env + 1``, ``[0, 1] = episode % 251 + 1``, ``[0, 2] = step % 251 + 1``, the
    rest 7, so a frame from another env, episode or step never compares equal. ``pad`` is how older stack
    slots are filled at reset: ``"zero"`` (ale-py), ``"repeat"`` (gymnasium) or ``"noise"`` (arbitrary
    frames, e.g. no-op starts that leak into the stack).
    """

    def __init__(
        self,
        num_envs: int,
        k: int = 4,
        size: int = 6,
        pad: str = "zero",
        min_len: int = 1,
        max_len: int = 12,
        seed: int = 0,
    ) -> None:
        self.num_envs, self.k, self.size, self.pad = num_envs, k, size, pad
        self.min_len, self.max_len = min_len, max_len
        self.rng = torch.Generator().manual_seed(seed)
        self.episode = torch.zeros(num_envs, dtype=torch.long)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.length = torch.zeros(num_envs, dtype=torch.long)
        self.stack = torch.zeros(num_envs, k, size, size, dtype=torch.uint8)

    def frame(self, env: int, episode: int, t: int) -> torch.Tensor:
        f = torch.full((self.size, self.size), 7, dtype=torch.uint8)
        f[0, 0], f[0, 1], f[0, 2] = env + 1, episode % 251 + 1, t % 251 + 1
        return f

    def _reset_env(self, e: int) -> None:
        self.t[e] = 0
        self.length[e] = int(torch.randint(self.min_len, self.max_len + 1, (1,), generator=self.rng))
        first = self.frame(e, int(self.episode[e]), 0)
        if self.pad == "zero":
            self.stack[e] = 0
        elif self.pad == "repeat":
            self.stack[e] = first
        else:
            self.stack[e] = torch.randint(0, 256, self.stack[e].shape, generator=self.rng, dtype=torch.uint8)
        self.stack[e, -1] = first

    def reset(self) -> torch.Tensor:
        for e in range(self.num_envs):
            self._reset_env(e)
        return self.stack.clone()

    def step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(obs, reward, terminated, truncated, final_obs)`` like a SAME_STEP vector env."""
        self.t += 1
        reward = torch.zeros(self.num_envs)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool)
        truncated = torch.zeros(self.num_envs, dtype=torch.bool)
        for e in range(self.num_envs):
            new = self.frame(e, int(self.episode[e]), int(self.t[e]))
            self.stack[e] = torch.cat([self.stack[e, 1:], new.unsqueeze(0)])
            reward[e] = 1000 * e + int(self.t[e])
            if self.t[e] >= self.length[e]:
                if bool(torch.rand((), generator=self.rng) < 0.5):
                    terminated[e] = True
                else:
                    truncated[e] = True
        final = self.stack.clone()
        for e in torch.nonzero(terminated | truncated).flatten().tolist():
            self.episode[e] += 1
            self._reset_env(e)
        return self.stack.clone(), reward, terminated, truncated, final
