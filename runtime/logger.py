"""TensorBoard logging under ``runs/<run-name>/``: scalars, histograms, text, images and GIF videos.

One tag scheme for every run (DQN, speaker, pretraining, fine-tuning, standalone evaluation); the
first part of a tag is one of :data:`SECTIONS`, so each becomes one group of cards in TensorBoard:

- ``train/<metric>``: the updates, averaged over the log window: ``loss`` and its parts
  (``q_mean``, ``mlm``, ``teacher_forcing``, ``dagger``, ...), ``grad_norm``, ``lr``;
- ``rollout/<metric>``: the data a run collects: its training episodes (``episodic_return``,
  ``episodic_length``, ``clipped_episodic_return``, ``learner_success_rate``), exploration
  (``epsilon``) and what its buffers hold (``replay_size``, ``dagger_store_episodes``);
- ``perf/<metric>``: throughput over the log window: ``steps_per_second``, ``updates_per_second``,
  ``iterations_per_second``, ``samples_per_second``, ``episodes_per_second``;
- ``eval/[<split>/]<metric>``: evaluation during training, at the run's step: DQN's
  ``eval/episodic_return_mean`` / ``_median`` and ``eval/video``; per split for the navigation
  trainers: R2R metrics (``eval/val_unseen/spl``), BLEU (``eval/val_unseen/bleu4``), decoded samples
  (``eval/<split>/samples``), episode maps and GIFs (``eval/<split>/episodes/<instr_id>/map``) and the
  best score so far of the metric that selects ``best.pt`` (``eval/<split>/best_<metric>``);
- ``final/<split>/<metric>``: a standalone evaluation of a saved model (``scripts/evaluate_vln.py``) at
  its checkpoint's iteration, with its failure breakdown (``final/<split>/failures/<category>``) and
  episode maps, so that it never lands on the cards of the run's own ``eval/`` curves.

Steps are the run's progress counter: env steps for DQN, iterations for the navigation trainers. The
resolved config is the text ``config`` at step 0, beside a trainer's notes (``data``, ``init``).

``torch.utils.tensorboard``'s ``add_video`` needs moviepy and silently writes nothing with moviepy
2.x, so videos are encoded here as animated GIFs with Pillow and written as image summaries, which
TensorBoard's image dashboard plays.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

# The first part of every scalar, image and video tag (the scheme above).
SECTIONS = ("train", "rollout", "perf", "eval", "final")


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _to_uint8_frames(frames: Any) -> np.ndarray:
    """``[T, H, W]``, ``[T, H, W, C]`` or ``[T, C, H, W]`` (uint8 or float in [0, 1]) -> ``[T, H, W, C]``."""
    array = _to_numpy(frames)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"video frames must be [T, H, W(, C)] or [T, C, H, W], got shape {array.shape}")
    if array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def encode_gif(frames: Any, fps: float = 15.0) -> bytes:
    """Encode frames as an animated, looping GIF."""
    array = _to_uint8_frames(frames)
    if len(array) == 0:
        raise ValueError("cannot encode a video with no frames")
    images = [Image.fromarray(frame) for frame in array]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(round(1000.0 / fps), 20),
        loop=0,
    )
    return buffer.getvalue()


def _wait_to_sort_last(run_dir: Path) -> None:
    """Wait until a new event file of ``run_dir`` would sort after every existing one.

    TensorBoard reads a directory's event files in name order and a purge applies only to the files
    read before it; a name starts with the second the file was opened, then host, process id and a
    counter, which do not order files opened within one second. Waiting for the next second (at most
    one) puts the new file last. Files from a clock more than a second ahead are not waited for.
    """
    stamps = [
        int(part)
        for path in run_dir.glob("events.out.tfevents.*")
        if (part := path.name.split(".")[3]).isdigit()
    ]
    newest = max(stamps, default=None)
    while newest is not None and int(time.time()) <= newest <= time.time() + 1:
        time.sleep(0.05)


class RunLogger:
    """One TensorBoard run directory; a thin, typed face over ``SummaryWriter``.

    ``purge_step``: TensorBoard hides the points at this step and after that earlier event files of the
    directory hold (what a crashed run logged past the checkpoint a resumed run starts from).
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if purge_step is not None:
            _wait_to_sort_last(self.run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, float(value), step)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        for tag, value in values.items():
            self.scalar(prefix + tag, value, step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        self.writer.add_histogram(tag, _to_numpy(values), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def image(self, tag: str, image: Any, step: int) -> None:
        """Log one image given as ``[H, W, C]`` / ``[H, W]`` (uint8 or float in [0, 1])."""
        array = _to_uint8_frames(_to_numpy(image)[None])[0]
        self.writer.add_image(tag, array, step, dataformats="HWC")

    def video(self, tag: str, frames: Any, step: int, fps: float = 15.0) -> None:
        """Log an animated GIF (shown by TensorBoard's image dashboard)."""
        array = _to_uint8_frames(frames)
        summary_image = Summary.Image(
            height=array.shape[1],
            width=array.shape[2],
            colorspace=3,
            encoded_image_string=encode_gif(array, fps),
        )
        # Through _get_file_writer, as SummaryWriter's own add_* methods write (its file_writer
        # attribute is typed None: it is assigned in an unannotated method).
        self.writer._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, image=summary_image)]), step
        )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
