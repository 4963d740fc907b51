"""Navigation data on disk: Matterport connectivity graphs, R2R episodes, view features, vocabulary.

A dataset directory holds::

    connectivity/<scan>_connectivity.json   (+ connectivity/scans.txt)
    R2R_<split>.json
    features/<name>.hdf5                    (or the older base64 ``<name>.tsv``)
    vocab.txt                               (optional)

which is the layout of the real R2R release next to Matterport's ``connectivity/`` folder, so real
data loads with no conversion. Every reader validates what it loads and raises :class:`NavDataError`
naming the file and the offending item.

Two choices are made here for every stage, so that a folder of real data needs no extra options:

- features named ``auto`` (the configs' default) are the only features file in ``features/``
  (:meth:`NavDataset.resolve_features`); several files, or none, are an error saying what to do;
- without ``vocab.txt`` the vocabulary is built in memory from ``R2R_train.json``, the same way every
  time (so every stage of a pipeline gets the same token ids), and nothing is written into the data
  folder (:meth:`NavDataset.vocab`). A ``vocab.txt`` that is there is used as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from lodestar.envs.nav.data.connectivity import connectivity_path, list_scans, load_connectivity
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import feature_key, load_feature_array
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode, load_r2r, validate_episodes
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE, VOCAB_MIN_COUNT, Vocab, build_vocab

AUTO_FEATURES = "auto"
FEATURE_SUFFIXES = (".hdf5", ".h5", ".tsv")  # in order of preference for one name
FEATURES_HELP = (
    "data.features: 'auto' uses the only features file in <data>/features/ (<name>.hdf5, .h5 or .tsv);\n"
    "  with several files name one, data.features=<name>."
)
# Notes already printed by this process, so that a stage that opens a dataset several times says it once.
_ANNOUNCED: set[str] = set()


def console_warning(message: str) -> None:
    """Print ``warning: <message>`` on stderr, once per process for one message.

    For an optional input that is missing and what is done instead: a user must see it on the console,
    not only in a log file.
    """
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


class NavDataset:
    """A dataset directory: graphs are loaded lazily per scan, splits are validated against them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"navigation dataset directory not found: {self.root}")
        self.conn_dir = self.root / "connectivity"
        self._graphs: dict[str, NavGraph] = {}
        self._splits: dict[str, list[Episode]] = {}
        self._vocab: Vocab | None = None

    def __repr__(self) -> str:
        return f"NavDataset({str(self.root)!r})"

    @cached_property
    def scans(self) -> list[str]:
        return list_scans(self.conn_dir)

    @property
    def splits(self) -> list[str]:
        """Names of the ``R2R_<split>.json`` files present."""
        return sorted(p.name[len("R2R_") : -len(".json")] for p in self.root.glob("R2R_*.json"))

    def graph(self, scan: str) -> NavGraph:
        if scan not in self._graphs:
            path = connectivity_path(self.conn_dir, scan)
            if not path.is_file():
                raise NavDataError(f"{self.root}: unknown scan {scan!r} (no {path.name} in {self.conn_dir})")
            self._graphs[scan] = load_connectivity(path, scan)
        return self._graphs[scan]

    def graphs(self, scans: Iterable[str] | None = None) -> dict[str, NavGraph]:
        return {scan: self.graph(scan) for scan in (self.scans if scans is None else scans)}

    def max_degree(self) -> int:
        """The largest number of navigable neighbours of any viewpoint in any scan of the dataset.

        Envs pad their candidates to it, so every split of the dataset gets the same spaces.
        """
        return max((int(g.adjacency.sum(axis=1).max(initial=0)) for g in self.graphs().values()), default=0)

    def episodes(self, split: str) -> list[Episode]:
        """Episodes of ``R2R_<split>.json``, checked against the connectivity graphs."""
        if split not in self._splits:
            path = self.root / f"R2R_{split}.json"
            if not path.is_file():
                raise FileNotFoundError(f"split {split!r} not found: no {path} (available: {self.splits})")
            episodes = load_r2r(path)
            graphs = {
                scan: self.graph(scan)
                for scan in sorted({ep.scan for ep in episodes})
                if connectivity_path(self.conn_dir, scan).is_file()
            }
            validate_episodes(episodes, graphs, str(path))
            self._splits[split] = episodes
        return self._splits[split]

    @staticmethod
    def viewpoint_keys(graphs: Iterable[NavGraph]) -> list[str]:
        """Feature keys of every viewpoint of ``graphs``, in packing order (scan by scan)."""
        return [feature_key(g.scan, vp) for g in graphs for vp in g.viewpoints]

    @property
    def feature_dir(self) -> Path:
        return self.root / "features"

    def feature_names(self) -> list[str]:
        """Names of the features files in ``features/`` (``<name>.hdf5``, ``.h5`` or ``.tsv``), sorted.

        Other files there (an encoder, summaries, an unfinished build's folder, temporary files) are not
        features files.
        """
        if not self.feature_dir.is_dir():
            return []
        return sorted(
            {
                p.stem
                for p in self.feature_dir.iterdir()
                if p.suffix in FEATURE_SUFFIXES and p.is_file() and not p.name.startswith(".")
            }
        )

    def resolve_features(self, name: str | None = AUTO_FEATURES) -> str:
        """The features a stage uses: ``name`` itself, or for ``auto`` (or ``None``) the only features file.

        Several files, or none, are a ``FileNotFoundError`` that lists what is there and says how to choose.
        """
        if name is not None and name != AUTO_FEATURES:
            return name
        names = self.feature_names()
        if len(names) == 1:
            return names[0]
        if names:
            raise FileNotFoundError(
                f"{self.feature_dir} holds {len(names)} features files ({', '.join(names)}): choose one "
                f"with data.features=<name>, e.g. data.features={names[0]}"
            )
        raise FileNotFoundError(
            f"no features file in {self.feature_dir}: put the view features there, as <name>.hdf5 "
            f"('<scan>_<viewpoint>' -> [36, D] arrays) or the base64 <name>.tsv of [36, 2048]; a generated "
            f"world builds them with scripts/build_nav_features.py --data {self.root}"
        )

    def features_overrides(self, name: str) -> list[str]:
        """The ``data.features=<name>`` override a command on this dataset needs (none when ``auto`` picks ``name``)."""
        try:
            if self.resolve_features(AUTO_FEATURES) == name:
                return []
        except FileNotFoundError:
            pass
        return [f"data.features={name}"]

    def feature_path(self, name: str) -> Path:
        """The features file of ``name`` (``auto``: :meth:`resolve_features`)."""
        name = self.resolve_features(name)
        for suffix in FEATURE_SUFFIXES:
            path = self.feature_dir / f"{name}{suffix}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"features {name!r} not found in {self.feature_dir} (available: {self.feature_names()})"
        )

    def load_features(self, name: str, scans: Sequence[str], tsv_dim: int = 2048) -> np.ndarray:
        """A ``[num_viewpoints, 36, D]`` array for every viewpoint of ``scans``, in packing order.

        Every viewpoint must have a finite float ``[36, D]`` feature (one ``D``); a missing, invalid or
        damaged one is a :class:`NavDataError` naming the file (and the feature, where there is one).
        Features are read straight into the returned array (no second copy of them in memory).
        """
        keys = self.viewpoint_keys(self.graph(s) for s in scans)
        return load_feature_array(self.feature_path(name), keys, tsv_dim)

    def vocab(self, build_if_missing: bool = True, min_count: int = VOCAB_MIN_COUNT) -> Vocab:
        """The dataset's ``vocab.txt`` when it has one (a user's own file is used as it is).

        Without one, the vocabulary of ``R2R_train.json`` (words seen at least ``min_count`` times) is
        built in memory and a console warning says so. It is the same every time it is built, so every
        stage of a pipeline gets the same token ids; nothing is written into the data folder (runs keep
        the vocabulary they used in their checkpoints and in ``<run>/vocab.txt``).
        """
        if self._vocab is None:
            path = self.root / VOCAB_FILE
            if path.is_file():
                self._vocab = Vocab.load(path)
            elif build_if_missing:
                self._vocab = build_vocab(self.root, "train", min_count=min_count, write=False)
                console_warning(
                    f"{path} not found: using the {len(self._vocab)}-token vocabulary of "
                    f"{self.root / 'R2R_train.json'} (words seen at least {min_count} times), "
                    "built in memory; nothing is written into the data folder"
                )
            else:
                raise FileNotFoundError(f"vocabulary file not found: {path}")
        return self._vocab
