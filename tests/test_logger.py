"""TensorBoard logging: everything written is read back with TensorBoard's own reader."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.runtime.logger import RunLogger, encode_gif


def test_event_file_holds_scalars_text_image_histogram_and_gif(tmp_path):
    frames = np.zeros((6, 20, 24, 3), dtype=np.uint8)
    for t in range(6):
        frames[t, :, t * 4 : t * 4 + 4] = 255
    with RunLogger(tmp_path / "run") as logger:
        logger.scalar("train/loss", 0.5, step=3)
        logger.text("config", "lr: 0.1", step=0)
        logger.image("map", np.full((10, 12, 3), 128, dtype=np.uint8), step=1)
        logger.histogram("q", np.arange(100, dtype=np.float32), step=2)
        logger.video("eval/video", frames, step=7, fps=10)
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(3, 0.5)]
    assert "eval/video" in acc.Tags()["images"] and "map" in acc.Tags()["images"]
    video = acc.Images("eval/video")[0]
    assert video.step == 7 and (video.width, video.height) == (24, 20)
    gif = Image.open(io.BytesIO(video.encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == 6
    gif.seek(5)
    assert np.asarray(gif.convert("RGB"))[0, 21, 0] == 255
    assert "q" in acc.Tags()["histograms"]
    text_tags = acc.Tags()["tensors"]
    assert any(tag.startswith("config") for tag in text_tags)


def test_gif_from_grayscale_channel_first_float():
    frames = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    gif = Image.open(io.BytesIO(encode_gif(frames)))
    assert gif.n_frames == 3 and gif.size == (8, 8)
