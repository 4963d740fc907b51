"""The view encoder: a small CNN trained on rendered views, whose penultimate layer is the visual feature.

It plays the part of the ImageNet ResNet (or CLIP) that R2R agents read panoramas with: it learns to
recognise the room type at the centre of a view (softmax over ``ROOM_TYPES``) and the object
categories in it (independent sigmoids over ``OBJECT_CATEGORIES``). Quality is reported on views of
houses it never saw (val_unseen) next to the trivial baselines: always answering the most frequent
training room type, and scoring every view with the training frequency of each category.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lodestar.envs.nav.perception.semantics import NUM_CATEGORIES, NUM_ROOM_TYPES
from lodestar.runtime.checkpoint import FORMAT_VERSION, CheckpointError, atomic_save, load_file


@dataclass
class EncoderConfig:
    """Architecture and training budget of the view encoder."""

    feature_dim: int = 512
    channels: tuple[int, ...] = (24, 48, 96, 192)
    train_views: int = 12000  # views sampled from the train houses
    val_views: int = 3000  # views sampled from the val_unseen houses, for the quality report
    views_per_viewpoint: int = 12
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    min_object_fraction: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.feature_dim < 1 or not self.channels or min(self.channels) < 1:
            raise ValueError(
                f"feature_dim and channels must be positive, got {self.feature_dim}, {self.channels}"
            )
        if not 1 <= self.views_per_viewpoint <= 36:
            raise ValueError(f"views_per_viewpoint must be in [1, 36], got {self.views_per_viewpoint}")
        for name in ("train_views", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


class ViewEncoder(nn.Module):
    """Strided conv blocks, a 2x2 average pool, a ``feature_dim`` layer and two heads.

    Takes ``[N, S, S, 3]`` uint8 images (or ``[N, 3, S, S]`` floats already normalised by
    :func:`prepare`); :meth:`features` returns the penultimate activations ``[N, feature_dim]``.
    """

    def __init__(self, feature_dim: int = 512, channels: tuple[int, ...] = (24, 48, 96, 192)) -> None:
        super().__init__()
        self.feature_dim, self.channels = int(feature_dim), tuple(int(c) for c in channels)
        layers: list[nn.Module] = []
        width = 3
        for i, out in enumerate(self.channels):
            kernel = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(width, out, kernel, stride=2, padding=kernel // 2, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            width = out
        # A 2x2 pool keeps coarse layout (what is left/right, up/down) that room recognition needs.
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.project = nn.Sequential(nn.Linear(4 * width, self.feature_dim), nn.ReLU(inplace=True))
        self.room_head = nn.Linear(self.feature_dim, NUM_ROOM_TYPES)
        self.object_head = nn.Linear(self.feature_dim, NUM_CATEGORIES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.body(prepare(images)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, room-type logits and object logits."""
        feats = self.features(images)
        return feats, self.room_head(feats), self.object_head(feats)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Features of many uint8 images in eval mode, batch by batch; returned on the images' device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [
            self.features(images[i : i + batch_size].to(device)).to(images.device)
            for i in range(0, len(images), batch_size)
        ]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.feature_dim)


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, S, S, 3]`` -> float ``[N, 3, S, S]`` centred around 0; floats pass through."""
    if images.dtype != torch.uint8:
        return images
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N, S, S, 3], got {tuple(images.shape)}")
    return (
        images.permute(0, 3, 1, 2).float().div(255.0).sub(0.5).contiguous(memory_format=torch.channels_last)
    )


@dataclass
class LabelledViews:
    """Rendered views and their targets (see ``lodestar.envs.nav.perception.semantics.view_labels``), kept on the CPU."""

    images: torch.Tensor  # [N, S, S, 3] uint8
    room: torch.Tensor  # [N] int64
    objects: torch.Tensor  # [N, C] bool

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.room) != n or len(self.objects) != n:
            raise ValueError(f"labelled views disagree in length: {n}, {len(self.room)}, {len(self.objects)}")

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class EncoderMetrics:
    """Quality on held-out views next to the trivial baselines."""

    room_accuracy: float
    room_majority_accuracy: float
    object_map: float
    object_prior_map: float
    views: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[C]`` average precision of each column (NaN for columns without positives).

    Tied scores form one threshold (as in scikit-learn), so a constant score gets the positive rate.
    """
    scores, targets = scores.double(), targets.bool()
    out = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for c in range(scores.shape[1]):
        positives = int(targets[:, c].sum())
        if positives == 0:
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        s, t = scores[order, c], targets[order, c].double()
        hits = torch.cumsum(t, 0)
        ranks = torch.arange(1, len(s) + 1, dtype=torch.float64)
        ends = torch.ones(len(s), dtype=torch.bool)
        ends[:-1] = s[1:] != s[:-1]  # last position of each run of tied scores
        recall = hits[ends] / positives
        precision = hits[ends] / ranks[ends]
        out[c] = (torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum()
    return out


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if len(kept) else math.nan


def evaluate_encoder(encoder: ViewEncoder, views: LabelledViews, train: LabelledViews) -> EncoderMetrics:
    """Room-type accuracy and object mAP on ``views``; baselines use the label statistics of ``train``."""
    if len(views) == 0:
        raise ValueError("no views to evaluate the encoder on")
    encoder.eval()
    device = next(encoder.parameters()).device
    rooms, objects = [], []
    with torch.no_grad():
        for i in range(0, len(views), 512):
            _, room_logits, object_logits = encoder(views.images[i : i + 512].to(device))
            rooms.append(room_logits.argmax(1).cpu())
            objects.append(object_logits.sigmoid().cpu())
    predicted = torch.cat(rooms)
    scores = torch.cat(objects)
    majority = int(torch.bincount(train.room, minlength=NUM_ROOM_TYPES).argmax())
    prior = train.objects.float().mean(0).expand_as(scores)
    return EncoderMetrics(
        room_accuracy=float((predicted == views.room).float().mean()),
        room_majority_accuracy=float((views.room == majority).float().mean()),
        object_map=_nanmean(average_precision(scores, views.objects)),
        object_prior_map=_nanmean(average_precision(prior, views.objects)),
        views=len(views),
    )


def train_view_encoder(
    train: LabelledViews,
    config: EncoderConfig,
    device: torch.device,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[ViewEncoder, dict[str, float]]:
    """Train a fresh encoder on ``train``; deterministic on the CPU for a fixed ``config.seed``.

    Returns the encoder (in eval mode) and training statistics; ``on_epoch(epoch, mean_loss)`` is
    called after each epoch (progress reporting).
    """
    if len(train) == 0:
        raise ValueError("no training views for the view encoder")
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = ViewEncoder(config.feature_dim, config.channels)
    # Module.to takes memory_format at runtime; torch's overloads of it leave the keyword out.
    encoder = encoder.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    started = time.perf_counter()
    loss_value = math.nan
    encoder.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(train), generator=generator)
        flips = torch.rand(len(train), generator=generator) < 0.5
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            images = train.images[batch]
            # Mirroring a view changes neither its room type nor the objects in it.
            images = torch.where(flips[batch, None, None, None], images.flip(2), images).to(device)
            _, room_logits, object_logits = encoder(images)
            loss = F.cross_entropy(room_logits, train.room[batch].to(device))
            loss = loss + F.binary_cross_entropy_with_logits(
                object_logits, train.objects[batch].float().to(device)
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"view encoder loss is {float(loss)} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        loss_value = total / steps_per_epoch
        if on_epoch is not None:
            on_epoch(epoch, loss_value)
    encoder.eval()
    return encoder, {
        "final_loss": loss_value,
        "train_seconds": time.perf_counter() - started,
        "train_views": len(train),
    }


def save_encoder(
    encoder: ViewEncoder, path: str | Path, config: EncoderConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write the encoder in the project's checkpoint format, atomically (temp file + rename)."""
    state = {
        "format": FORMAT_VERSION,
        "step": 0,
        "config": asdict(config),
        "model": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "architecture": {"feature_dim": encoder.feature_dim, "channels": list(encoder.channels)},
        **(extra or {}),
    }
    atomic_save(state, path)


def load_encoder(path: str | Path, device: torch.device) -> tuple[ViewEncoder, dict[str, Any]]:
    """Read an encoder written by :func:`save_encoder`; returns it (eval mode) and the whole checkpoint.

    A missing, corrupt or foreign file is a :class:`lodestar.runtime.checkpoint.CheckpointError` naming it.
    """
    state = load_file(path)
    try:
        arch = state["architecture"]
        encoder = ViewEncoder(arch["feature_dim"], tuple(arch["channels"]))
        encoder.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a view encoder checkpoint ({exc})") from None
    # Module.to takes memory_format at runtime; torch's overloads of it leave the keyword out.
    encoder = encoder.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return encoder.eval(), state
