"""Test-wide settings: quiet progress bars, CPU only, few threads."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("LODESTAR_NO_PROGRESS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))
