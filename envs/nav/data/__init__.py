"""Navigation data in the formats of the R2R ecosystem: graphs, episodes, view features, vocabulary.

A dataset directory holds::

    connectivity/<scan>_connectivity.json   (+ connectivity/scans.txt)
    R2R_<split>.json
    features/<name>.hdf5                    (or the older base64 ``<name>.tsv``)
    vocab.txt

which is the layout of the real R2R release next to Matterport's ``connectivity/`` folder. Every
reader validates what it loads and raises :class:`NavDataError` naming the file and the item.
"""

from lodestar.envs.nav.data.connectivity import list_scans, load_connectivity, write_connectivity, write_scans
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import (
    NUM_VIEWS,
    feature_key,
    load_features_hdf5,
    load_features_tsv,
    write_features_hdf5,
    write_features_tsv,
)
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode, load_r2r, validate_episodes, write_r2r
from lodestar.envs.nav.data.tokenizer import Vocab, build_vocab, tokenize

__all__ = [
    "NUM_VIEWS",
    "Episode",
    "NavDataError",
    "NavDataset",
    "NavGraph",
    "Vocab",
    "build_vocab",
    "feature_key",
    "list_scans",
    "load_connectivity",
    "load_features_hdf5",
    "load_features_tsv",
    "load_r2r",
    "tokenize",
    "validate_episodes",
    "write_connectivity",
    "write_features_hdf5",
    "write_features_tsv",
    "write_r2r",
    "write_scans",
]
