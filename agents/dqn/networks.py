"""The Nature-DQN convolutional torso with a plain or dueling Q head."""

from __future__ import annotations

import torch
from torch import nn


class NatureCNN(nn.Module):
    """Mnih et al. (2015) torso: 3 conv layers on ``[B, C, 84, 84]`` uint8 frames -> 3136 features."""

    def __init__(self, in_channels: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.layers(frames.float() / 255.0)


class QNetwork(nn.Module):
    """Q-values for every action; ``dueling`` splits value and advantage streams (Wang et al. 2016)."""

    def __init__(
        self, num_actions: int, in_channels: int = 4, hidden: int = 512, dueling: bool = False
    ) -> None:
        super().__init__()
        self.torso = NatureCNN(in_channels)
        self.dueling = dueling
        features = 3136
        if dueling:
            self.value = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.advantage = nn.Sequential(
                nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions)
            )
        else:
            self.head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.torso(frames)
        if not self.dueling:
            return self.head(features)
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)
