"""What a user sees of a training run in TensorBoard: the evaluation video as recorded in the event
file, and the run served by the ``tensorboard`` program and read back through its HTTP data API."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.dqn.config import DQNConfig
from lodestar.agents.dqn.trainer import DQNTrainer
from lodestar.runtime.config import load_config
from tests.dqn_runs import PRESET, TINY_PONG

RUN = "tiny"
VIDEO_STEPS = 100
# The tiny run of tests/dqn_runs.py, evaluated once at its end (one game cut at 100 agent steps)
# with a video of that game.
TINY_EVALUATED = [
    *TINY_PONG,
    "total_steps=60",
    "save_replay=false",
    "eval.episodes=1",
    "eval.num_envs=1",
    "eval.every_steps=0",
    f"eval.max_episode_frames={4 * VIDEO_STEPS}",
    f"eval.video_max_steps={VIDEO_STEPS}",
]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("tb-runs")
    config = load_config(DQNConfig, PRESET, [*TINY_EVALUATED, f"name={RUN}", f"runs_dir={runs}"])
    result = DQNTrainer(config, runs / RUN).train()
    assert result.steps == 60 and result.last_eval_mean is not None
    return runs


def _video_frames(gif: bytes) -> tuple[list[np.ndarray], int]:
    """A GIF's frames as RGB arrays and its first frame's duration in milliseconds."""
    image = Image.open(io.BytesIO(gif))
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(np.asarray(image.convert("RGB")))
    image.seek(0)
    return frames, int(image.info["duration"])


def _distinct(frames: list[np.ndarray]) -> int:
    return len({frame.tobytes() for frame in frames})


def test_the_evaluation_video_shows_play_at_twice_the_screen_size(runs_dir: Path) -> None:
    acc = EventAccumulator(str(runs_dir / RUN), size_guidance={"images": 0})
    acc.Reload()
    (video,) = acc.Images("eval/video")
    assert video.step == 60
    # Atari's 160x210 screen scaled 2x (nearest neighbour), as the summary says and the GIF holds.
    assert (video.width, video.height) == (320, 420)
    frames, duration = _video_frames(video.encoded_image_string)
    assert frames[0].shape == (420, 320, 3)
    # One frame per agent step of the game (the reset screen first); Pillow merges repeated
    # consecutive frames, so nearly every step must change the picture (ball, paddles, score).
    assert _distinct(frames) >= VIDEO_STEPS // 2, _distinct(frames)
    # Real game time: 60 emulator frames/s over frameskip 4 = 15 frames/s (GIFs keep centiseconds).
    assert 60 <= duration <= 70
    # Nearest-neighbour scaling: every 2x2 block is one source pixel.
    frame = frames[-1]
    np.testing.assert_array_equal(frame[0::2, 0::2], frame[1::2, 1::2])


# -- the tensorboard program over HTTP --------------------------------------------------------------


def _tensorboard_command() -> str:
    beside = Path(sys.executable).parent / "tensorboard"
    found = str(beside) if beside.is_file() else shutil.which("tensorboard")
    if found is None:
        pytest.fail("the tensorboard program is not installed (it comes with the tensorboard package)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A ``tensorboard`` process serving ``logdir`` on loopback, and GETs to it."""

    def __init__(self, logdir: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        self._log = log.open("wb")
        command = [_tensorboard_command(), "--logdir", str(logdir), "--host", "127.0.0.1"]
        # The Python data loader reads event files in-process (no data-server binary to spawn).
        command += ["--port", self.url.rsplit(":", 1)[1], "--load_fast=false", "--reload_interval=1"]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def get(self, path: str, **query: str) -> bytes:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def get_json(self, path: str, **query: str) -> Any:
        return json.loads(self.get(path, **query))

    def wait_for_run(self, run: str, timeout: float = 120.0) -> dict[str, Any]:
        """The scalar tags of ``run`` once the server answers and has loaded the run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tensorboard exited with code {self.process.returncode}: {self.output()}")
            try:
                tags = self.get_json("/data/plugin/scalars/tags")
                if tags.get(run):
                    return tags[run]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            time.sleep(0.5)
        pytest.fail(f"tensorboard did not serve run {run!r} within {timeout:.0f} s: {self.output()}")

    def output(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def test_tensorboard_serves_the_scalars_video_and_config_of_a_run(runs_dir: Path, tmp_path: Path) -> None:
    server = _Server(runs_dir, tmp_path / "tensorboard.log")
    try:
        scalar_tags = server.wait_for_run(RUN)
        assert {"eval/episodic_return_mean", "rollout/epsilon", "perf/steps_per_second"} <= set(scalar_tags)
        points = server.get_json("/data/plugin/scalars/scalars", run=RUN, tag="eval/episodic_return_mean")
        assert [step for _, step, _ in points] == [60]
        # one game of at most 100 agent steps of Pong: at most one point per step either way
        assert abs(points[0][2]) <= VIDEO_STEPS
        epsilon = server.get_json("/data/plugin/scalars/scalars", run=RUN, tag="rollout/epsilon")
        assert [step for _, step, _ in epsilon] == [20, 40, 60]

        # The video is an animated GIF on the images dashboard.
        assert "eval/video" in server.get_json("/data/plugin/images/tags")[RUN]
        (entry,) = server.get_json("/data/plugin/images/images", run=RUN, tag="eval/video", sample="0")
        assert entry["step"] == 60
        gif = server.get(f"/data/plugin/images/individualImage?{entry['query']}")
        assert gif.startswith(b"GIF89a")
        frames, _ = _video_frames(gif)
        assert frames[0].shape == (420, 320, 3) and _distinct(frames) >= VIDEO_STEPS // 2

        # The resolved config is the run's text at step 0.
        (config_tag,) = [
            tag for tag in server.get_json("/data/plugin/text/tags")[RUN] if tag.startswith("config")
        ]
        (text,) = server.get_json("/data/plugin/text/text", run=RUN, tag=config_tag)
        assert text["step"] == 0
        assert "total_steps: 60" in text["text"] and "game: Pong" in text["text"]
    finally:
        server.stop()
