"""The feature store: render every viewpoint of a built world and cache its view features in HDF5.

``build_features(data_dir, name)`` writes ``<data_dir>/features/<name>.hdf5`` with one float16
``[36, D]`` array per key ``"<scan>_<viewpoint>"`` (the R2R layout, see ``envs/nav/data/``):

- ``kind="cnn"``: the penultimate activations of the view encoder. The encoder is trained on views
  of the train houses (the scans of ``R2R_train.json``) unless ``features/encoder.pt`` already
  exists, and scored on views of the val_unseen houses.
- ``kind="oracle"``: the semantic descriptors of ``envs/nav/perception/semantics.py`` (no learning).

A ``<name>_summary.json`` next to it records the encoder quality, the baselines, timings and sizes.

The build is resumable. Scans are written one at a time into ``<name>.hdf5.partial`` and listed in
its ``complete_scans`` attribute once fully written; a rerun keeps those, drops the keys of a scan
that was cut off half way and carries on. Only a complete store is renamed to ``<name>.hdf5``, so
readers never see a partial one. Settings that change the features (kind, image size, encoder) are
stored as attributes and checked on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch

from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import NUM_VIEWS, feature_key
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
    work = final if final.is_file() else final.with_name(final.name + ".partial")
    if config is None:
        config = _stored_config(work) or FeatureConfig(
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
    skipped = written = 0
    try:
        handle = h5py.File(work, "a")
    except OSError as exc:
        raise NavDataError(f"{work}: cannot open the feature store ({exc}); delete it to rebuild") from None
    with handle:
        done = _check_store(handle, work, expected)
        total = sum(dataset.graph(s).num_viewpoints for s in scans)
        bar = _progress(show_progress, total=total, desc=f"{name} features", unit="vp")
        for scan in scans:
            graph = dataset.graph(scan)
            if scan in done:
                skipped += 1
                bar.update(graph.num_viewpoints)
                continue
            _write_scan(
                handle,
                scan,
                graph.viewpoints,
                graph.positions,
                houses[scan],
                renderer,
                encoder,
                config,
                timings,
                bar,
            )
            done.append(scan)
            handle.attrs["complete_scans"] = json.dumps(done)
            handle.flush()
            written += 1
        bar.close()
    if work != final:
        os.replace(work, final)
    summary = {
        "name": name,
        "file": str(final),
        **expected,
        "scans": len(scans),
        "viewpoints": total,
        "views": total * NUM_VIEWS,
        "scans_written": written,
        "scans_kept": skipped,
        "device": str(renderer.device),
        **{k: round(v, 2) for k, v in timings.items()},
        "total_seconds": round(time.perf_counter() - started, 2),
        "encoder_report": report,
        "config": asdict(config),
    }
    (out_dir / f"{name}_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _stored_config(path: Path) -> FeatureConfig | None:
    """The settings an existing store was built with (None when there is no readable store)."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            attrs = {k: handle.attrs[k] for k in ("kind", "image_size", "max_depth") if k in handle.attrs}
    except OSError:
        return None  # reported with the file name when the build opens it
    if len(attrs) < 3:
        return None
    return FeatureConfig(
        kind=feature_kind(str(attrs["kind"])),
        image_size=int(attrs["image_size"]),
        max_depth=float(attrs["max_depth"]),
    )


def _check_store(handle: h5py.File, path: Path, expected: dict[str, Any]) -> list[str]:
    """Complete scans of an existing store after checking its settings; fresh stores get them written."""
    if "complete_scans" not in handle.attrs:
        if len(handle.keys()):
            raise NavDataError(f"{path}: holds features without build records; delete it to rebuild")
        for key, value in expected.items():
            handle.attrs[key] = value
        handle.attrs["complete_scans"] = "[]"
        return []
    for key, value in expected.items():
        stored = handle.attrs.get(key)
        stored = stored.item() if isinstance(stored, np.generic) else stored
        if stored != value:
            raise NavDataError(
                f"{path}: was built with {key}={stored!r} but this build uses {key}={value!r}; "
                "delete it (or pick another feature name) to rebuild"
            )
    return list(json.loads(handle.attrs["complete_scans"]))


def _write_scan(
    handle: h5py.File,
    scan: str,
    viewpoints: Sequence[str],
    positions: np.ndarray,
    house: House,
    renderer: Renderer,
    encoder: ViewEncoder | None,
    config: FeatureConfig,
    timings: dict[str, float],
    bar: Any,
) -> None:
    """Render and encode every viewpoint of one scan into the store (after dropping partial keys)."""
    for vp in viewpoints:
        key = feature_key(scan, vp)
        if key in handle:
            del handle[key]
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
            handle.create_dataset(feature_key(scan, vp), data=stored[k])
        bar.update(stop - start)
