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

import base64
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from envs.nav.graph import NavGraph
from envs.nav.tokenizer import VOCAB_FILE, Vocab, build_vocab

NUM_VIEWS = 36
TSV_FIELDS = ("scanId", "viewpointId", "image_w", "image_h", "vfov", "features")


class NavDataError(ValueError):
    """A navigation data file is missing, malformed or inconsistent with the graphs."""


# ---------------------------------------------------------------------------------------------------
# Connectivity graphs


def connectivity_path(conn_dir: str | Path, scan: str) -> Path:
    return Path(conn_dir) / f"{scan}_connectivity.json"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"navigation data file not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NavDataError(f"{path}: not valid JSON ({exc})") from None


def load_connectivity(path: str | Path, scan: str | None = None) -> NavGraph:
    """Read one Matterport connectivity file into a :class:`NavGraph`.

    Only ``included`` viewpoints are kept. As in the R2R code, ``i`` and ``j`` are joined when either
    lists the other as ``unobstructed`` and both are included; edge weights are Euclidean distances
    between the positions at pose indices 3, 7 and 11.
    """
    path = Path(path)
    if scan is None:
        scan = path.name.removesuffix("_connectivity.json")
    data = _read_json(path)
    if not isinstance(data, list) or not data:
        raise NavDataError(f"{path}: expected a non-empty JSON list of viewpoints")
    n = len(data)
    for i, item in enumerate(data):
        where = f"{path}: entry {i}"
        if not isinstance(item, dict):
            raise NavDataError(f"{where} is not an object")
        for key in ("image_id", "pose", "included", "unobstructed"):
            if key not in item:
                raise NavDataError(f"{where} ({item.get('image_id', '?')}) is missing key {key!r}")
        where = f"{path}: viewpoint {item['image_id']!r}"
        pose = item["pose"]
        if not isinstance(pose, list) or len(pose) != 16:
            raise NavDataError(f"{where}: 'pose' must be a list of 16 numbers (row-major 4x4)")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in pose):
            raise NavDataError(f"{where}: 'pose' holds a non-numeric or non-finite value")
        unobstructed = item["unobstructed"]
        if not isinstance(unobstructed, list) or len(unobstructed) != n:
            raise NavDataError(
                f"{where}: 'unobstructed' must list {n} booleans (one per entry), got "
                f"{len(unobstructed) if isinstance(unobstructed, list) else type(unobstructed).__name__}"
            )
    kept = [i for i, item in enumerate(data) if item["included"]]
    if not kept:
        raise NavDataError(f"{path}: no viewpoint is 'included'")
    local = {i: k for k, i in enumerate(kept)}
    viewpoints = [str(data[i]["image_id"]) for i in kept]
    positions = np.array([[data[i]["pose"][3], data[i]["pose"][7], data[i]["pose"][11]] for i in kept])
    edges = set()
    for i in kept:
        for j, flag in enumerate(data[i]["unobstructed"]):
            if flag and j != i and j in local:
                a, b = local[i], local[j]
                edges.add((min(a, b), max(a, b)))
    try:
        return NavGraph(scan, viewpoints, positions, sorted(edges))
    except ValueError as exc:
        raise NavDataError(f"{path}: {exc}") from None


def write_connectivity(
    path: str | Path,
    graph: NavGraph,
    heights: Sequence[float] | None = None,
    visible: np.ndarray | None = None,
) -> None:
    """Write ``graph`` as a Matterport connectivity file (all viewpoints included).

    ``heights`` is each camera's height above the floor (default 1.5 m); ``visible`` is a ``[V, V]``
    bool matrix that must contain the edges (default: the adjacency itself).
    """
    adjacency = graph.adjacency
    if visible is None:
        visible = adjacency
    visible = np.asarray(visible, dtype=bool)
    if visible.shape != adjacency.shape or (adjacency & ~visible).any():
        raise ValueError(f"scan {graph.scan}: 'visible' must be [V, V] and contain every edge")
    entries = []
    for i, vp in enumerate(graph.viewpoints):
        pose = np.eye(4)
        pose[:3, 3] = graph.positions[i]
        entries.append(
            {
                "image_id": vp,
                "pose": [float(v) for v in pose.reshape(-1)],
                "included": True,
                "visible": [bool(v) for v in visible[i]],
                "unobstructed": [bool(v) for v in adjacency[i]],
                "height": float(1.5 if heights is None else heights[i]),
            }
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(entries), encoding="utf-8")


def list_scans(conn_dir: str | Path) -> list[str]:
    """Scan ids from ``scans.txt``, or from the ``*_connectivity.json`` names when it is absent."""
    conn_dir = Path(conn_dir)
    if not conn_dir.is_dir():
        raise FileNotFoundError(f"connectivity folder not found: {conn_dir}")
    scans_file = conn_dir / "scans.txt"
    if scans_file.is_file():
        scans = [line.strip() for line in scans_file.read_text(encoding="utf-8").splitlines()]
        scans = [s for s in scans if s]
        missing = [s for s in scans if not connectivity_path(conn_dir, s).is_file()]
        if missing:
            raise NavDataError(f"{scans_file}: no connectivity file for scans {missing[:10]}")
        return scans
    return sorted(p.name.removesuffix("_connectivity.json") for p in conn_dir.glob("*_connectivity.json"))


def write_scans(conn_dir: str | Path, scans: Iterable[str]) -> None:
    Path(conn_dir).mkdir(parents=True, exist_ok=True)
    (Path(conn_dir) / "scans.txt").write_text("".join(f"{s}\n" for s in scans), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# R2R episodes


@dataclass
class Episode:
    """One R2R path with its instructions; instruction ``k`` has id ``"<path_id>_<k>"``.

    In the real R2R test split ``path`` holds only the start viewpoint (the goal is hidden).
    """

    path_id: int | str
    scan: str
    heading: float
    path: list[str]
    instructions: list[str]
    distance: float | None = None

    def instr_id(self, k: int) -> str:
        return f"{self.path_id}_{k}"

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path_id": self.path_id,
            "scan": self.scan,
            "heading": self.heading,
            "path": list(self.path),
        }
        if self.distance is not None:
            record["distance"] = self.distance
        record["instructions"] = list(self.instructions)
        return record


def load_r2r(path: str | Path) -> list[Episode]:
    """Read an R2R JSON file (unknown keys such as ``instr_encodings`` are ignored)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise NavDataError(f"{path}: expected a JSON list of episodes")
    episodes = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        where = f"{path}: episode {i}"
        if not isinstance(item, dict):
            raise NavDataError(f"{where} is not an object")
        for key in ("path_id", "scan", "heading", "path", "instructions"):
            if key not in item:
                raise NavDataError(f"{where} (path_id {item.get('path_id', '?')}) is missing key {key!r}")
        where = f"{path}: episode path_id {item['path_id']!r}"
        if not isinstance(item["path_id"], (int, str)) or isinstance(item["path_id"], bool):
            raise NavDataError(f"{where}: 'path_id' must be an int or a string")
        if str(item["path_id"]) in seen:
            raise NavDataError(f"{where}: duplicate path_id")
        seen.add(str(item["path_id"]))
        if not isinstance(item["scan"], str):
            raise NavDataError(f"{where}: 'scan' must be a string")
        if not isinstance(item["heading"], (int, float)) or not math.isfinite(item["heading"]):
            raise NavDataError(f"{where}: 'heading' must be a finite number (radians)")
        route = item["path"]
        if not isinstance(route, list) or not route or not all(isinstance(v, str) for v in route):
            raise NavDataError(f"{where}: 'path' must be a non-empty list of viewpoint ids")
        instructions = item["instructions"]
        if not isinstance(instructions, list) or not all(isinstance(s, str) for s in instructions):
            raise NavDataError(f"{where}: 'instructions' must be a list of strings")
        distance = item.get("distance")
        if distance is not None and not isinstance(distance, (int, float)):
            raise NavDataError(f"{where}: 'distance' must be a number")
        episodes.append(
            Episode(
                path_id=item["path_id"],
                scan=item["scan"],
                heading=float(item["heading"]),
                path=list(route),
                instructions=list(instructions),
                distance=None if distance is None else float(distance),
            )
        )
    return episodes


def write_r2r(path: str | Path, episodes: Iterable[Episode]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps([ep.to_json() for ep in episodes], indent=1), encoding="utf-8")


def validate_episodes(episodes: Sequence[Episode], graphs: Mapping[str, NavGraph], source: str) -> None:
    """Check that every episode's scan exists and its path is a walk along graph edges."""
    adjacency_of: dict[str, np.ndarray] = {}
    for ep in episodes:
        where = f"{source}: episode path_id {ep.path_id!r}"
        graph = graphs.get(ep.scan)
        if graph is None:
            raise NavDataError(f"{where}: unknown scan {ep.scan!r}")
        for vp in ep.path:
            if vp not in graph.index:
                raise NavDataError(f"{where}: viewpoint {vp!r} is not in scan {ep.scan!r}")
        if ep.scan not in adjacency_of:
            adjacency_of[ep.scan] = graph.adjacency
        adjacency = adjacency_of[ep.scan]
        for a, b in pairwise(ep.path):
            if not adjacency[graph.index[a], graph.index[b]]:
                raise NavDataError(f"{where}: path step {a} -> {b} is not an edge of scan {ep.scan!r}")


# ---------------------------------------------------------------------------------------------------
# View features


def feature_key(scan: str, viewpoint: str) -> str:
    return f"{scan}_{viewpoint}"


def _check_feature(array: np.ndarray, key: str, source: Path, dim: int | None) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] != NUM_VIEWS or (dim is not None and array.shape[1] != dim):
        want = f"[{NUM_VIEWS}, {dim if dim is not None else 'D'}]"
        raise NavDataError(f"{source}: feature {key!r} has shape {list(array.shape)}, expected {want}")
    if not np.issubdtype(array.dtype, np.floating):
        raise NavDataError(f"{source}: feature {key!r} has dtype {array.dtype}, expected floats")
    return array


def write_features_hdf5(
    path: str | Path, features: Mapping[str, np.ndarray], dtype: Any = np.float16
) -> None:
    """Write ``{"<scan>_<viewpoint>": [36, D]}`` to an HDF5 file (float16 by default)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, array in features.items():
            f.create_dataset(key, data=np.asarray(array, dtype=dtype))


def load_features_hdf5(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read ``[36, D]`` arrays from an HDF5 file: all of them, or only ``keys`` (missing ones are an error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise NavDataError(f"{path}: not a readable HDF5 file ({exc})") from None
    out: dict[str, np.ndarray] = {}
    dim = None
    with f:
        wanted = list(f.keys()) if keys is None else list(keys)
        missing = [k for k in wanted if k not in f]
        if missing:
            raise NavDataError(f"{path}: no features for {len(missing)} viewpoints, e.g. {missing[:5]}")
        for key in wanted:
            if not isinstance(f[key], h5py.Dataset):
                raise NavDataError(f"{path}: {key!r} is a group, not a [{NUM_VIEWS}, D] array")
            array = _check_feature(np.asarray(f[key][()]), key, path, dim)
            dim = array.shape[1]
            out[key] = array
    return out


def write_features_tsv(
    path: str | Path,
    features: Mapping[str, np.ndarray],
    image_w: int = 640,
    image_h: int = 480,
    vfov: int = 60,
) -> None:
    """Write the older R2R TSV layout: ``scanId viewpointId image_w image_h vfov base64(float32[36,D])``.

    Keys are ``"<scan>_<viewpoint>"``; the scan id is the part before the first underscore.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as f:
        for key, array in features.items():
            scan, sep, vp = key.partition("_")
            if not sep:
                raise ValueError(f"feature key {key!r} is not '<scan>_<viewpoint>'")
            blob = base64.b64encode(np.ascontiguousarray(array, dtype=np.float32).tobytes()).decode("ascii")
            f.write("\t".join([scan, vp, str(image_w), str(image_h), str(vfov), blob]) + "\n")


def load_features_tsv(
    path: str | Path, feature_dim: int = 2048, keys: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Read the base64 TSV layout of the original R2R release (float32 ``[36, feature_dim]``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    wanted = None if keys is None else set(keys)
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="ascii", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != len(TSV_FIELDS):
                raise NavDataError(f"{path}: line {line_no} has {len(cols)} columns, expected {TSV_FIELDS}")
            key = feature_key(cols[0], cols[1])
            if wanted is not None and key not in wanted:
                continue
            try:
                raw = base64.b64decode(cols[5], validate=True)
            except ValueError:
                raise NavDataError(f"{path}: line {line_no} ({key}): features are not valid base64") from None
            if len(raw) != NUM_VIEWS * feature_dim * 4:
                raise NavDataError(
                    f"{path}: line {line_no} ({key}): {len(raw)} bytes of features, expected "
                    f"{NUM_VIEWS}x{feature_dim} float32 ({NUM_VIEWS * feature_dim * 4} bytes)"
                )
            out[key] = np.frombuffer(raw, dtype=np.float32).reshape(NUM_VIEWS, feature_dim)
    if wanted is not None:
        missing = sorted(wanted - out.keys())
        if missing:
            raise NavDataError(f"{path}: no features for {len(missing)} viewpoints, e.g. {missing[:5]}")
    return out


# ---------------------------------------------------------------------------------------------------
# The dataset directory


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
        """A ``[num_viewpoints, 36, D]`` array for every viewpoint of ``scans``, in packing order."""
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
