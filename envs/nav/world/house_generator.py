"""Procedural houses from a seed: a floor plan of typed rooms, doors and walls, then furniture."""

from __future__ import annotations

import numpy as np

from lodestar.envs.nav.world.floorplan import HouseConfig, plan_house
from lodestar.envs.nav.world.furniture import furnish_house
from lodestar.envs.nav.world.houses import House


def scan_id(rng: np.random.Generator) -> str:
    """An 11-character alphanumeric id in the style of Matterport scan ids."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def generate_house(
    rng: np.random.Generator, config: HouseConfig | None = None, scan: str | None = None
) -> House:
    """Generate one furnished house; everything is drawn from ``rng``."""
    config = config or HouseConfig()
    scan = scan or scan_id(rng)
    house = plan_house(rng, config, scan)
    furnish_house(rng, house)
    return house
