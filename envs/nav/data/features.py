"""View features on disk: HDF5 ``"<scan>_<viewpoint>" -> [36, D]`` and the older base64 TSV."""

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

from lodestar.envs.nav.data.errors import NavDataError


NUM_VIEWS = 36
TSV_FIELDS = ("scanId", "viewpointId", "image_w", "image_h", "vfov", "features")


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
