"""The Nature-DQN convolutional torso with a plain or dueling Q head."""

from __future__ import annotations

import torch
from torch import nn


class NatureCNN(nn.Module):
    """Mnih et al. (2015) torso: 3 conv layers on ``[B, C, 84, 84]`` uint8 frames -> 3136 features.

    ``channels_last`` feeds the convolutions channels-last frames (with channels-last weights, see
    :class:`QNetwork`): oneDNN and cuDNN then skip their layout reorders. The values are the same.
    """

    def __init__(self, in_channels: int = 4, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
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
        if self.channels_last:  # converted as uint8, a quarter of the bytes of the float frames
            frames = frames.contiguous(memory_format=torch.channels_last)
        return self.layers(frames.float() / 255.0)


class QNetwork(nn.Module):
    """Q-values for every action; ``dueling`` splits value and advantage streams (Wang et al. 2016).

    ``channels_last`` stores the convolution weights channels-last and feeds them channels-last frames
    (a speed setting: the same Q-values up to float rounding, the same ``state_dict`` keys and shapes).
    """

    def __init__(
        self,
        num_actions: int,
        in_channels: int = 4,
        hidden: int = 512,
        dueling: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.torso = NatureCNN(in_channels, channels_last)
        self.dueling = dueling
        features = 3136
        if dueling:
            self.value = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.advantage = nn.Sequential(
                nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions)
            )
        else:
            self.head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))
        if channels_last:
            # Parameters keep this layout through .to(device), deepcopy and load_state_dict (it copies into them).
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing in torch's stubs

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.torso(frames)
        if not self.dueling:
            return self.head(features)
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=1, keepdim=True)
