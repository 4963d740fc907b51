"""Navigation data on disk: Matterport connectivity graphs, R2R episodes, view features, vocabulary.

A dataset directory holds::

    connectivity/<scan>_connectivity.json   (+ connectivity/scans.txt)
    R2R_<split>.json
    features/<name>.hdf5                    (or the older base64 ``<name>.tsv``)
    vocab.txt

which is the layout of the real R2R release next to Matterport's ``connectivity/`` folder, so real
data loads with no conversion. Every reader validates what it loads and raises :class:`NavDataError`
naming the file and the offending item.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from lodestar.envs.nav.data.connectivity import connectivity_path, list_scans, load_connectivity
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import feature_key, load_features_hdf5, load_features_tsv
from lodestar.envs.nav.data.graph import NavGraph
from lodestar.envs.nav.data.r2r import Episode, load_r2r, validate_episodes
from lodestar.envs.nav.data.tokenizer import VOCAB_FILE, Vocab, build_vocab


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

    def feature_path(self, name: str) -> Path:
        for suffix in (".hdf5", ".h5", ".tsv"):
            path = self.root / "features" / f"{name}{suffix}"
            if path.is_file():
                return path
        folder = self.root / "features"
        available = sorted(p.stem for p in folder.glob("*")) if folder.is_dir() else []
        raise FileNotFoundError(
            f"features {name!r} not found in {self.root / 'features'} (available: {available})"
        )

    def load_features(self, name: str, scans: Sequence[str], tsv_dim: int = 2048) -> np.ndarray:
        """A ``[num_viewpoints, 36, D]`` array for every viewpoint of ``scans``, in packing order.

        Every viewpoint must have a finite float ``[36, D]`` feature (one ``D``); a missing, invalid or
        damaged one is a :class:`NavDataError` naming the file (and the feature, where there is one).
        """
        keys = self.viewpoint_keys(self.graph(s) for s in scans)
        path = self.feature_path(name)
        if path.suffix == ".tsv":
            table = load_features_tsv(path, tsv_dim, keys)
        else:
            table = load_features_hdf5(path, keys)
        return np.stack([table[k] for k in keys])

    def vocab(self, build_if_missing: bool = True, min_count: int = 5) -> Vocab:
        """The dataset's ``vocab.txt``; when absent it is built from the train split and written."""
        if self._vocab is None:
            path = self.root / VOCAB_FILE
            if path.is_file():
                self._vocab = Vocab.load(path)
            elif build_if_missing:
                warnings.warn(f"{path} not found: building it from R2R_train.json", stacklevel=2)
                self._vocab = build_vocab(self.root, "train", min_count=min_count)
            else:
                raise FileNotFoundError(f"vocabulary file not found: {path}")
        return self._vocab
