"""The batched navigation simulator: packed graphs, transition tables, the feature table, the path log.

It reads only :mod:`lodestar.envs.nav.data` (never ``world`` or ``perception``), so it runs the
same on real R2R data.
"""

from lodestar.envs.nav.sim.env import OBSERVATION_MODES, NavVecEnv
from lodestar.envs.nav.sim.feature_table import VIEW_ELEVATIONS, VIEW_HEADINGS, FeatureTable, angle_features
from lodestar.envs.nav.sim.packing import PackedGraphs, nearest_view, pack_graphs

__all__ = [
    "OBSERVATION_MODES",
    "VIEW_ELEVATIONS",
    "VIEW_HEADINGS",
    "FeatureTable",
    "NavVecEnv",
    "PackedGraphs",
    "angle_features",
    "nearest_view",
    "pack_graphs",
]
