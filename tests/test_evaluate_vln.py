"""Evaluation: the submission scores identically with the metrics command; maps and GIFs reach TensorBoard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.failures import CATEGORIES
from lodestar.envs.nav.eval.metrics import load_predictions
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, build_tiny_world, one_torch_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "LODESTAR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("evaluate") / "world")


@pytest.fixture(scope="module")
def checkpoint(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dataset = NavDataset(data_dir)
    vocab = dataset.vocab()
    torch.manual_seed(0)
    model = Follower(
        len(vocab), 16, ANGLE_DIM, FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64), vocab.pad_id
    )
    path = tmp_path_factory.mktemp("run") / "best.pt"
    FollowerBundle(model, vocab, FEATURE_NAME, ANGLE_DIM, 80, {"iteration": 7}).save(path)
    return path


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_submission_scores_identically_with_the_metrics_command(data_dir, checkpoint, tmp_path):
    out = run(
        "evaluate_vln.py", "--checkpoint", str(checkpoint), "--data", str(data_dir), "--split", "val_unseen",
        "--split", "val_seen", "--out-dir", str(tmp_path), "--log-dir", str(tmp_path / "tb"), "--log-episodes", "1",
        "--num-envs", "7", "--max-steps", "5", "--json",  # short episodes, short GIFs
    )  # fmt: skip
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    dataset = NavDataset(data_dir)
    for split in ("val_unseen", "val_seen"):
        submission = tmp_path / f"submit_{split}.json"
        predictions = load_predictions(submission)
        expected_ids = {ep.instr_id(k) for ep in dataset.episodes(split) for k in range(len(ep.instructions))}
        assert set(predictions) == expected_ids
        theirs = json.loads(
            run(
                "evaluate_nav.py",
                "--data",
                str(data_dir),
                "--split",
                split,
                "--predictions",
                str(submission),
                "--json",
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        assert ours[split] == theirs
        fractions = ours["failures"][split]
        assert fractions["success"] == pytest.approx(theirs["sr"]) and sum(
            fractions.values()
        ) == pytest.approx(1.0)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert any(tag.startswith("episodes/val_unseen/") and tag.endswith("/map") for tag in images)
    failure_maps = {tag.split("/")[2] for tag in images if tag.startswith("failures/val_unseen/")}
    if ours["failures"]["val_unseen"]["success"] < 1.0:  # failed episodes are drawn, tagged by category
        assert failure_maps and failure_maps <= set(CATEGORIES) - {"success"}
    gifs = [tag for tag in images if tag.endswith("/frames")]
    assert gifs and events.Images(gifs[0])[0].encoded_image_string[:6] == b"GIF89a"
    assert "eval/val_unseen/spl" in events.Tags()["scalars"]


def test_greedy_evaluation_is_deterministic_and_independent_of_batching(data_dir, checkpoint):
    from lodestar.agents.vln.follower import load_follower

    bundle = load_follower(checkpoint)
    dataset = NavDataset(data_dir)

    def records(num_envs: int):
        env = make_eval_env(dataset, "val_unseen", None, num_envs, FEATURE_NAME, ANGLE_DIM, 80, "cpu")
        return evaluate_follower(bundle.model, env)

    a, b = records(4), records(13)
    assert a.records == b.records and a.summary == b.summary
    assert [r["instr_id"] for r in a.records] == make_eval_env(
        dataset, "val_unseen", None, 2, FEATURE_NAME, ANGLE_DIM, 80, "cpu"
    ).instruction_ids


def test_hidden_goal_split_is_run_but_not_scored(data_dir, checkpoint, tmp_path):
    from lodestar.agents.vln.evaluate import write_submission
    from lodestar.agents.vln.follower import load_follower

    dataset = NavDataset(data_dir)
    hidden = [
        type(ep)(**{**ep.__dict__, "path": ep.path[:1], "distance": None}) for ep in dataset.episodes("test")
    ]
    env = make_eval_env(dataset, "test", hidden, 8, FEATURE_NAME, ANGLE_DIM, 80, "cpu")
    result = evaluate_follower(load_follower(checkpoint).model, env)
    assert result.summary is None and result.per_instruction == {}
    write_submission(result, tmp_path / "submit.json")
    assert len(load_predictions(tmp_path / "submit.json")) == sum(len(ep.instructions) for ep in hidden)
