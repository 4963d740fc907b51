"""View features on disk: HDF5 ``"<scan>_<viewpoint>" -> [36, D]`` and the older base64 TSV.

Writers never leave half a file behind: :func:`atomic_hdf5` fills a temporary file next to the
target, fsyncs it and renames it over the target. Datasets carry HDF5's Fletcher-32 checksum (a
filter every HDF5 library reads), so a file damaged on disk fails to load instead of loading wrong
values. Readers check keys, shapes, dtypes and finite values, and turn every h5py error into a
:class:`NavDataError` naming the file (and the feature, where there is one).

Large feature sets (90 Matterport scans of ``[36, 2048]`` are several GB) are read one feature at a
time (:func:`iter_features`) straight into the table that keeps them (:func:`load_feature_array`, the
simulator's feature table), so loading peaks at that table plus one feature, not at a dict of every
feature plus a stacked copy.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lodestar.envs.nav.data.errors import NavDataError
from lodestar.runtime.atomic import atomic_write

NUM_VIEWS = 36
TSV_FIELDS = ("scanId", "viewpointId", "image_w", "image_h", "vfov", "features")
# What h5py raises on a damaged file: OSError on open and on reading data (checksums included),
# RuntimeError/KeyError from broken groups and links, ValueError (UnicodeDecodeError) from garbled names.
HDF5_ERRORS: tuple[type[Exception], ...] = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def feature_key(scan: str, viewpoint: str) -> str:
    return f"{scan}_{viewpoint}"


@contextmanager
def hdf5_errors(path: Path, what: str) -> Iterator[None]:
    """Re-raise h5py's errors inside the block as ``NavDataError("<path>: <what> (<h5py message>)")``."""
    try:
        yield
    except NavDataError:
        raise
    except HDF5_ERRORS as exc:
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise NavDataError(f"{path}: {what} ({detail})") from None


def stale_temp_files(path: Path) -> list[Path]:
    """Temporary files of writes of ``path`` that were killed before they finished."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@contextmanager
def atomic_hdf5(path: str | Path, base: Path | None = None) -> Iterator[h5py.File]:
    """An HDF5 file to fill that replaces ``path`` only once it is complete.

    It starts empty, or as a copy of ``base``. On success it is fsynced and renamed over ``path``, so
    a reader or a rerun after a crash finds the old file or the new one, never a part of one; on an
    exception the temporary file is removed.
    """
    with atomic_write(path) as tmp:
        if base is not None:
            shutil.copyfile(base, tmp)
        with h5py.File(tmp, "a" if base is not None else "w") as handle:
            yield handle


def _check_layout(shape: tuple[int, ...], dtype: np.dtype, key: str, source: Path, dim: int | None) -> None:
    """A feature must be a float ``[36, D]`` array, ``D >= 1``, with the ``D`` of the features read before it."""
    if len(shape) != 2 or shape[0] != NUM_VIEWS or shape[1] < 1 or (dim is not None and shape[1] != dim):
        want = f"[{NUM_VIEWS}, {dim if dim is not None else 'D'}]"
        raise NavDataError(f"{source}: feature {key!r} has shape {list(shape)}, expected {want}")
    if not np.issubdtype(dtype, np.floating):
        raise NavDataError(f"{source}: feature {key!r} has dtype {dtype}, expected floats")


def _check_finite(array: np.ndarray, key: str, source: Path) -> np.ndarray:
    # A NaN or inf feature would only surface many updates later, as diverged parameters.
    if not np.isfinite(array).all():
        raise NavDataError(f"{source}: feature {key!r} has non-finite values")
    return array


def write_features_hdf5(
    path: str | Path,
    features: Mapping[str, np.ndarray],
    dtype: Any = np.float16,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``{"<scan>_<viewpoint>": [36, D]}`` (float16 by default) and ``attrs`` to an HDF5 file.

    The file appears complete or not at all (:func:`atomic_hdf5`); each dataset has a checksum.
    """
    with atomic_hdf5(path) as f:
        for name, value in (attrs or {}).items():
            f.attrs[name] = value
        for key, array in features.items():
            f.create_dataset(key, data=np.asarray(array, dtype=dtype), fletcher32=True)


def load_features_hdf5(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Read ``[36, D]`` arrays from an HDF5 file: all of them, or only ``keys`` (missing ones are an error).

    Every array is checked (shape, float dtype, one ``D``, finite values); a damaged file is a
    :class:`NavDataError` naming it.
    """
    return dict(_hdf5_rows(Path(path), None if keys is None else list(keys)))


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")


def _open_hdf5(path: Path) -> h5py.File:
    _require_file(path)
    with hdf5_errors(path, "not a readable HDF5 file"):
        return h5py.File(path, "r")


def _check_present(f: h5py.File, keys: Sequence[str], path: Path) -> None:
    missing = [k for k in keys if k not in f]
    if missing:
        raise NavDataError(f"{path}: no features for {len(missing)} viewpoints, e.g. {missing[:5]}")


def _hdf5_rows(path: Path, keys: Sequence[str] | None) -> Iterator[tuple[str, np.ndarray]]:
    """``(key, checked [36, D] array)`` in key order, one array in memory at a time."""
    f = _open_hdf5(path)
    dim = None
    with f, hdf5_errors(path, "damaged HDF5 file; rebuild or re-download it"):
        wanted = list(f.keys()) if keys is None else keys
        _check_present(f, wanted, path)
        for key in wanted:
            array = _read_feature(f, key, path, dim)
            dim = array.shape[1]
            yield key, array


def _dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    item = f[key]
    if not isinstance(item, h5py.Dataset):
        raise NavDataError(f"{path}: {key!r} is a group, not a [{NUM_VIEWS}, D] array")
    return item


def _read_feature(f: h5py.File, key: str, path: Path, dim: int | None) -> np.ndarray:
    """One checked ``[36, D]`` array; the layout is checked before reading, so a garbled shape costs nothing."""
    item = _dataset(f, key, path)
    _check_layout(item.shape, item.dtype, key, path, dim)
    with hdf5_errors(path, f"cannot read feature {key!r}; the file is damaged"):
        array = np.asarray(item[()])
    return _check_finite(array, key, path)


def feature_layout(path: str | Path, keys: Sequence[str], tsv_dim: int = 2048) -> tuple[int, np.dtype]:
    """``(D, dtype)`` of the features of ``keys`` in an HDF5 or base64 TSV file, reading no values.

    HDF5: every key must be a float ``[36, D]`` dataset with one ``D`` (a bad layout fails here, before
    anything is read); the dtype is the one they all convert to without loss. TSV: float32
    ``[36, tsv_dim]``, checked as the rows are read.
    """
    path = Path(path)
    if path.suffix == ".tsv":
        _require_file(path)
        return tsv_dim, np.dtype(np.float32)
    f = _open_hdf5(path)
    with f, hdf5_errors(path, "damaged HDF5 file; rebuild or re-download it"):
        _check_present(f, keys, path)
        dim, dtypes = None, set()
        for key in keys:
            item = _dataset(f, key, path)
            _check_layout(item.shape, item.dtype, key, path, dim)
            dim = item.shape[1]
            dtypes.add(item.dtype)
    if dim is None:
        raise NavDataError(f"{path}: no features requested (an empty list of viewpoints)")
    return dim, np.result_type(*dtypes)


def iter_features(
    path: str | Path, keys: Sequence[str], tsv_dim: int = 2048
) -> Iterator[tuple[int, np.ndarray]]:
    """``(position in keys, checked [36, D] array)`` for every key, one feature in memory at a time.

    HDF5 features come in key order, TSV ones in file order. A missing key is a :class:`NavDataError`
    (for TSV once the file has been read). Fill a preallocated table from it (see
    :func:`load_feature_array`): loading then peaks at the table plus one feature.
    """
    path = Path(path)
    position = {key: i for i, key in enumerate(keys)}
    rows = _tsv_rows(path, tsv_dim, set(position)) if path.suffix == ".tsv" else _hdf5_rows(path, keys)
    for key, array in rows:
        yield position[key], array


def load_feature_array(path: str | Path, keys: Sequence[str], tsv_dim: int = 2048) -> np.ndarray:
    """``[len(keys), 36, D]`` features of ``keys`` (HDF5 or TSV), read straight into one array."""
    dim, dtype = feature_layout(path, keys, tsv_dim)
    out = np.empty((len(keys), NUM_VIEWS, dim), dtype)
    for i, array in iter_features(path, keys, tsv_dim):
        out[i] = array
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
    return dict(_tsv_rows(Path(path), feature_dim, None if keys is None else set(keys)))


def _tsv_rows(path: Path, feature_dim: int, wanted: set[str] | None) -> Iterator[tuple[str, np.ndarray]]:
    """``(key, checked array)`` of the TSV rows in ``wanted`` (all rows for ``None``), in file order."""
    _require_file(path)
    seen: set[str] = set()
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
            array = np.frombuffer(raw, dtype=np.float32).reshape(NUM_VIEWS, feature_dim)
            seen.add(key)
            yield key, _check_finite(array, key, path)
    if wanted is not None:
        missing = sorted(wanted - seen)
        if missing:
            raise NavDataError(f"{path}: no features for {len(missing)} viewpoints, e.g. {missing[:5]}")


# ---------------------------------------------------------------------------------------------------
