"""Test-wide settings: quiet progress bars, one torch thread (small ops on a shared 2-core machine)."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("LODESTAR_NO_PROGRESS", "1")
torch.set_num_threads(1)
