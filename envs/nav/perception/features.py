"""The feature store: render every viewpoint of a built world and cache its view features in HDF5.

``build_features(data_dir, name)`` writes ``<data_dir>/features/<name>.hdf5`` with one float16
``[36, D]`` array per key ``"<scan>_<viewpoint>"`` (the R2R layout, see ``envs/nav/data/``):

- ``kind="cnn"``: the penultimate activations of the view encoder. The encoder is trained on views
  of the train houses (the scans of ``R2R_train.json``) unless ``features/encoder.pt`` already
  exists, and scored on views of the val_unseen houses.
- ``kind="oracle"``: the semantic descriptors of ``envs/nav/perception/semantics.py`` (no learning).

A ``<name>_summary.json`` next to it records the encoder quality, the baselines, timings and sizes.

The build is crash-safe and resumable. Each finished scan goes into its own file in
``<name>.hdf5.scans/`` (written to a temporary file, fsynced, renamed into place), so a rerun keeps
every scan finished before an interruption - a kill in the first scan included - and renders the
rest. With every scan done, the store is assembled in a temporary file (a copy of the existing
store when scans were added to the world later) and renamed to ``<name>.hdf5``: readers and reruns
see the old store or the new one, never a part of one. Settings that change the features (kind,
image size, encoder) are stored as attributes and checked on resume.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import (
    HDF5_ERRORS,
    NUM_VIEWS,
    atomic_hdf5,
    feature_key,
    hdf5_errors,
    stale_temp_files,
    write_features_hdf5,
)
from lodestar.envs.nav.perception.render import (
    VIEW_ELEVATIONS,
    VIEW_HEADINGS,
    CameraConfig,
    Renderer,
    RenderOutput,
    Scene,
)
from lodestar.envs.nav.perception.semantics import DESCRIPTOR_DIM, oracle_descriptors, view_labels
from lodestar.envs.nav.perception.view_encoder import (
    EncoderConfig,
    LabelledViews,
    ViewEncoder,
    evaluate_encoder,
    load_encoder,
    save_encoder,
    train_view_encoder,
)
from lodestar.envs.nav.world.build import house_path, load_house
from lodestar.envs.nav.world.houses import House
from lodestar.runtime.atomic import fsync_path
from lodestar.runtime.device import resolve_device
from lodestar.runtime.progress import progress

ENCODER_FILE = "encoder.pt"
FeatureKind = Literal["cnn", "oracle"]
FEATURE_KINDS: tuple[FeatureKind, ...] = ("cnn", "oracle")


def feature_kind(name: str) -> FeatureKind:
    """``name`` as a feature kind; ValueError unless it is one of :data:`FEATURE_KINDS`."""
    for kind in FEATURE_KINDS:
        if name == kind:
            return kind
    raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {name!r}")


@dataclass
class FeatureConfig:
    """What to render and how to turn views into features."""

    kind: FeatureKind = "cnn"
    image_size: int = 64
    max_depth: float = 10.0
    azimuth_bins: int = 1024
    batch_viewpoints: int = 8
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self) -> None:
        feature_kind(self.kind)
        if self.batch_viewpoints < 1:
            raise ValueError(f"batch_viewpoints must be >= 1, got {self.batch_viewpoints}")

    def camera(self) -> CameraConfig:
        return CameraConfig(
            image_size=self.image_size, max_depth=self.max_depth, azimuth_bins=self.azimuth_bins
        )


def feature_file(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / "features" / f"{name}.hdf5"


def load_houses(data_dir: str | Path, scans: Sequence[str]) -> dict[str, House]:
    """The floor plans of ``scans``; a world without them (e.g. real R2R data) is a clear error."""
    missing = [s for s in scans if not house_path(data_dir, s).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: no house description for {len(missing)} scans "
            f"(e.g. {house_path(data_dir, missing[0])}); "
            "features can only be rendered for worlds built by scripts/build_nav_world.py - "
            "real R2R data comes with its own precomputed features"
        )
    return {scan: load_house(data_dir, scan)[0] for scan in scans}


def split_scans(dataset: NavDataset, split: str) -> list[str]:
    """Scans used by a split (empty when the split file is absent)."""
    if split not in dataset.splits:
        return []
    return sorted({ep.scan for ep in dataset.episodes(split)})


class _NoBar:
    """Stands in for a progress bar when progress is switched off."""

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **kw: Any) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(show: bool, **kw: Any) -> Any:
    return progress(**kw) if show else _NoBar()


# ------------------------------------------------------------------------------------ rendering


def render_viewpoints(
    renderer: Renderer, scene: Scene, positions: np.ndarray, views: np.ndarray | None = None
) -> RenderOutput:
    """Render ``[P, 3]`` positions: the full panorama, or ``[P, V]`` chosen view indices."""
    if views is None:
        return renderer.render_panoramas(scene, positions)
    return renderer.render(scene, positions, VIEW_HEADINGS[views], VIEW_ELEVATIONS[views])


def sample_labelled_views(
    dataset: NavDataset,
    houses: dict[str, House],
    scans: Sequence[str],
    count: int,
    renderer: Renderer,
    config: FeatureConfig,
    rng: np.random.Generator,
    desc: str = "views",
    show_progress: bool = True,
) -> LabelledViews:
    """About ``count`` random views (``views_per_viewpoint`` per sampled viewpoint) with their labels."""
    pool = [(scan, i) for scan in scans for i in range(dataset.graph(scan).num_viewpoints)]
    if not pool or count <= 0:
        return _empty_views(config.image_size)
    # Small worlds make up for few viewpoints with more views of each.
    per_vp = min(NUM_VIEWS, max(config.encoder.views_per_viewpoint, -(-count // len(pool))))
    chosen = rng.choice(len(pool), size=min(len(pool), -(-count // per_vp)), replace=False)
    by_scan: dict[str, list[int]] = {}
    for k in sorted(chosen.tolist()):
        scan, index = pool[k]
        by_scan.setdefault(scan, []).append(index)
    images, rooms, objects = [], [], []
    bar = _progress(show_progress, total=len(chosen), desc=desc, unit="vp")
    for scan, indices in by_scan.items():
        scene = renderer.scene(houses[scan])
        positions = dataset.graph(scan).positions[indices]
        for start in range(0, len(indices), config.batch_viewpoints):
            pos = positions[start : start + config.batch_viewpoints]
            views = np.stack([rng.choice(NUM_VIEWS, size=per_vp, replace=False) for _ in pos])
            out = render_viewpoints(renderer, scene, pos, views)
            camera_rooms = scene.rooms_at(
                torch.as_tensor(pos[:, :2], dtype=torch.float32, device=renderer.device)
            )
            room, obj = view_labels(out, scene, camera_rooms, config.encoder.min_object_fraction)
            images.append(out.rgb.reshape(-1, *out.rgb.shape[2:]).cpu())
            rooms.append(room.reshape(-1).cpu())
            objects.append(obj.reshape(-1, obj.shape[-1]).cpu())
            bar.update(len(pos))
    bar.close()
    return LabelledViews(torch.cat(images), torch.cat(rooms), torch.cat(objects))


def _empty_views(size: int) -> LabelledViews:
    from lodestar.envs.nav.perception.semantics import NUM_CATEGORIES

    return LabelledViews(
        torch.zeros(0, size, size, 3, dtype=torch.uint8),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, NUM_CATEGORIES, dtype=torch.bool),
    )


# -------------------------------------------------------------------------------------- encoder


def encoder_digest(encoder: ViewEncoder) -> str:
    """A short fingerprint of the weights, stored with the features to catch a swapped encoder."""
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def obtain_encoder(
    dataset: NavDataset,
    houses: dict[str, House],
    renderer: Renderer,
    config: FeatureConfig,
    path: Path,
    show_progress: bool = True,
) -> tuple[ViewEncoder, dict[str, Any]]:
    """Load ``path`` if it exists, else train (and save) an encoder; returns it and its report."""
    if path.is_file():
        encoder, state = load_encoder(path, renderer.device)
        trained_size = state.get("image_size")
        if trained_size != config.image_size:
            raise ValueError(
                f"{path} was trained on {trained_size}px views but {config.image_size}px were asked for; "
                "use the same --image-size or delete the encoder to retrain it"
            )
        return encoder, {**state.get("report", {}), "loaded_from": str(path)}
    rng = np.random.default_rng(config.encoder.seed)
    train_scans = split_scans(dataset, "train")
    if not train_scans:
        raise NavDataError(
            f"{dataset.root}: R2R_train.json is missing or empty; the encoder trains on its houses"
        )
    started = time.perf_counter()
    train = sample_labelled_views(
        dataset,
        houses,
        train_scans,
        config.encoder.train_views,
        renderer,
        config,
        rng,
        "train views",
        show_progress,
    )
    val_scans = split_scans(dataset, "val_unseen")
    val = sample_labelled_views(
        dataset,
        houses,
        val_scans,
        config.encoder.val_views,
        renderer,
        config,
        rng,
        "val_unseen views",
        show_progress,
    )
    render_seconds = time.perf_counter() - started
    bar = _progress(show_progress, total=config.encoder.epochs, desc="train view encoder", unit="epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update()

    encoder, stats = train_view_encoder(train, config.encoder, renderer.device, on_epoch)
    bar.close()
    report: dict[str, Any] = {
        "train_scans": len(train_scans),
        "val_scans": len(val_scans),
        "sample_render_seconds": round(render_seconds, 2),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()},
    }
    if len(val):
        metrics = evaluate_encoder(encoder, val, train)
        report["val_unseen"] = {k: v for k, v in metrics.to_dict().items() if k != "extra"}
    save_encoder(encoder, path, config.encoder, {"image_size": config.image_size, "report": report})
    return encoder, report


# ------------------------------------------------------------------------------------ the store


def journal_dir(final: Path) -> Path:
    """Where a build keeps the scans it has finished, one ``<scan>.hdf5`` each, until it assembles the store."""
    return final.with_name(final.name + ".scans")


def build_features(
    data_dir: str | Path,
    name: str = "cnn",
    config: FeatureConfig | None = None,
    device: str | torch.device = "auto",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Render every viewpoint of every scan and write ``features/<name>.hdf5`` (see module docstring).

    Without a ``config``, an existing store keeps the settings it was built with (so scans added to
    the world later, e.g. extra houses for synthesis, get matching features); a new one uses the
    defaults with ``kind=name`` when that is a feature kind. Returns the summary that is also written
    to ``features/<name>_summary.json``.
    """
    final = feature_file(data_dir, name)
    journal = journal_dir(final)
    if config is None:
        config = _stored_config([final, *sorted(journal.glob("*.hdf5"))]) or FeatureConfig(
            kind=feature_kind(name) if name in FEATURE_KINDS else "cnn"
        )
    started = time.perf_counter()
    dataset = NavDataset(data_dir)
    scans = dataset.scans
    houses = load_houses(data_dir, scans)
    renderer = Renderer(config.camera(), resolve_device(device))
    out_dir = Path(data_dir) / "features"
    out_dir.mkdir(parents=True, exist_ok=True)

    encoder: ViewEncoder | None = None
    report: dict[str, Any] = {}
    if config.kind == "cnn":
        encoder, report = obtain_encoder(
            dataset, houses, renderer, config, out_dir / ENCODER_FILE, show_progress
        )
    expected = {
        "kind": config.kind,
        "image_size": config.image_size,
        "max_depth": config.max_depth,
        "feature_dim": encoder.feature_dim if encoder is not None else DESCRIPTOR_DIM,
        "encoder": encoder_digest(encoder) if encoder is not None else "",
    }
    timings = {"render_seconds": 0.0, "encode_seconds": 0.0}
    kept = _stored_scans(final, expected)
    finished = _finished_scans(journal, expected)
    total = sum(dataset.graph(s).num_viewpoints for s in scans)
    bar = _progress(show_progress, total=total, desc=f"{name} features", unit="vp")
    written = 0
    for scan in scans:
        graph = dataset.graph(scan)
        if scan in kept or scan in finished:
            bar.update(graph.num_viewpoints)
            continue
        features = _render_scan(
            scan, graph.viewpoints, graph.positions, houses[scan], renderer, encoder, config, timings, bar
        )
        finished[scan] = _journal_scan(journal, scan, features, expected)
        written += 1
    bar.close()
    added = {scan: finished[scan] for scan in scans if scan in finished and scan not in kept}
    if added or not final.is_file():
        _assemble(final, kept, added, expected)
    _drop_journal(final, journal)
    summary = {
        "name": name,
        "file": str(final),
        **expected,
        "scans": len(scans),
        "viewpoints": total,
        "views": total * NUM_VIEWS,
        "scans_written": written,
        "scans_kept": len(scans) - written,
        "device": str(renderer.device),
        **{k: round(v, 2) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 2),
        "encoder_report": report,
        "config": asdict(config),
    }
    (out_dir / f"{name}_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _stored_config(paths: Sequence[Path]) -> FeatureConfig | None:
    """The settings of the first readable store among ``paths`` (None when there is none)."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            with h5py.File(path, "r") as handle:
                attrs = {k: handle.attrs[k] for k in ("kind", "image_size", "max_depth") if k in handle.attrs}
        except HDF5_ERRORS:
            continue  # reported with the file name when the build reads it
        if len(attrs) == 3:
            return FeatureConfig(
                kind=feature_kind(str(attrs["kind"])),
                image_size=int(attrs["image_size"]),
                max_depth=float(attrs["max_depth"]),
            )
    return None


def _check_settings(attrs: Mapping[str, Any], where: Path, expected: dict[str, Any]) -> None:
    """Features built with other settings (kind, image size, encoder) must not be mixed with these."""
    for key, value in expected.items():
        stored = attrs.get(key)
        stored = stored.item() if isinstance(stored, np.generic) else stored
        if stored != value:
            raise NavDataError(
                f"{where}: was built with {key}={stored!r} but this build uses {key}={value!r}; "
                "delete it (or pick another feature name) to rebuild"
            )


def _stored_scans(final: Path, expected: dict[str, Any]) -> list[str]:
    """The scans of an existing store, after checking its settings (none without a store)."""
    if not final.is_file():
        return []
    with hdf5_errors(final, "cannot read the feature store; delete it to rebuild"):
        with h5py.File(final, "r") as handle:
            attrs = dict(handle.attrs)
            if "complete_scans" not in attrs:
                if len(handle):
                    raise NavDataError(f"{final}: holds features without build records; delete it to rebuild")
                return []
        _check_settings(attrs, final, expected)
        return list(json.loads(attrs["complete_scans"]))


def _finished_scans(journal: Path, expected: dict[str, Any]) -> dict[str, Path]:
    """The scans an interrupted build finished (``scan -> file``), after checking their settings."""
    if not journal.is_dir():
        return {}
    for tmp in journal.glob(".*.tmp"):
        tmp.unlink()  # a scan whose write was cut off: it is rendered again
    finished: dict[str, Path] = {}
    for part in sorted(journal.glob("*.hdf5")):
        try:
            with h5py.File(part, "r") as handle:
                attrs = dict(handle.attrs)
        except HDF5_ERRORS:
            # Scans appear whole (atomic rename), so only damage on disk gets here: render it again.
            part.unlink()
            continue
        _check_settings(attrs, journal, expected)
        finished[part.stem] = part
    return finished


def _journal_scan(
    journal: Path, scan: str, features: dict[str, np.ndarray], expected: dict[str, Any]
) -> Path:
    """Write one finished scan into the journal (whole or not at all) and return its file."""
    if not journal.is_dir():
        journal.mkdir(parents=True)
        fsync_path(journal.parent)
    part = journal / f"{scan}.hdf5"
    write_features_hdf5(part, features, np.float16, expected)
    return part


def _assemble(final: Path, kept: list[str], added: dict[str, Path], expected: dict[str, Any]) -> None:
    """Write the store: the scans of ``final`` (if any) and the journalled ``added`` ones, in one rename."""
    for tmp in stale_temp_files(final):
        tmp.unlink()  # an assembly cut off by a kill
    with atomic_hdf5(final, final if final.is_file() else None) as handle:
        for key, value in expected.items():
            handle.attrs[key] = value
        for part in added.values():
            unreadable = "cannot read a finished scan; delete it to render the scan again"
            with hdf5_errors(part, unreadable), h5py.File(part, "r") as source:
                features = {key: source[key][()] for key in source}
            for key, array in features.items():
                if key in handle:  # half a scan in a store extended in place by older builds
                    del handle[key]
                handle.create_dataset(key, data=array, fletcher32=True)
        handle.attrs["complete_scans"] = json.dumps([*kept, *added])


def _drop_journal(final: Path, journal: Path) -> None:
    """Remove what only an unfinished build needs, once the store holds every scan."""
    if journal.is_dir():
        shutil.rmtree(journal)
    # The single-file work store of older builds; its scans are in the store now.
    final.with_name(final.name + ".partial").unlink(missing_ok=True)


def _render_scan(
    scan: str,
    viewpoints: Sequence[str],
    positions: np.ndarray,
    house: House,
    renderer: Renderer,
    encoder: ViewEncoder | None,
    config: FeatureConfig,
    timings: dict[str, float],
    bar: Any,
) -> dict[str, np.ndarray]:
    """Render and encode every viewpoint of one scan: ``{"<scan>_<viewpoint>": float16 [36, D]}``."""
    features: dict[str, np.ndarray] = {}
    scene = renderer.scene(house)
    for start in range(0, len(viewpoints), config.batch_viewpoints):
        stop = min(start + config.batch_viewpoints, len(viewpoints))
        began = time.perf_counter()
        out = render_viewpoints(renderer, scene, positions[start:stop])
        rendered = time.perf_counter()
        if encoder is None:
            feats = oracle_descriptors(out, scene, config.max_depth)
        else:
            feats = encoder.encode(out.rgb.reshape(-1, *out.rgb.shape[2:])).reshape(
                stop - start, NUM_VIEWS, -1
            )
        stored = feats.cpu().numpy().astype(np.float16)
        timings["render_seconds"] += rendered - began
        timings["encode_seconds"] += time.perf_counter() - rendered
        for k, vp in enumerate(viewpoints[start:stop]):
            features[feature_key(scan, vp)] = stored[k]
        bar.update(stop - start)
    return features
