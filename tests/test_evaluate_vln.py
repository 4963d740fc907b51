"""Evaluation: the submission scores identically with the metrics command; maps and GIFs reach TensorBoard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import evaluate_nav
import evaluate_vln
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.failures import CATEGORIES
from lodestar.envs.nav.eval.metrics import load_predictions
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def data_dir(random_feature_world: Path) -> Path:
    return random_feature_world


def save_follower(data_dir: Path, path: Path, **info: object) -> Path:
    """An untrained small follower for the world at ``data_dir``, saved as a ``best.pt`` (``info`` added)."""
    vocab = NavDataset(data_dir).vocab()
    torch.manual_seed(0)
    model = Follower(
        len(vocab), 16, ANGLE_DIM, FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64), vocab.pad_id
    )
    FollowerBundle(model, vocab, FEATURE_NAME, ANGLE_DIM, 80, {"iteration": 7, **info}).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_follower(data_dir, tmp_path_factory.mktemp("run") / "best.pt")


def test_submission_scores_identically_with_the_metrics_command(data_dir, checkpoint, tmp_path, run_script):
    def run(main, *args: object):
        done = run_script(main, *args)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    out = run(
        evaluate_vln.main, "--checkpoint", checkpoint, "--data", data_dir, "--split", "val_unseen",
        "--split", "val_seen", "--out-dir", tmp_path, "--log-dir", tmp_path / "tb", "--log-episodes", "1",
        "--log-failures", "1", "--num-envs", "7", "--max-steps", "5", "--json",  # short episodes, short GIFs
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
                evaluate_nav.main,
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
    assert any(tag.startswith("final/val_unseen/episodes/") and tag.endswith("/map") for tag in images)
    failure_maps = {tag.split("/")[3] for tag in images if tag.startswith("final/val_unseen/failures/")}
    if ours["failures"]["val_unseen"]["success"] < 1.0:  # failed episodes are drawn, tagged by category
        assert failure_maps and failure_maps <= set(CATEGORIES) - {"success"}
    gifs = [tag for tag in images if tag.endswith("/frames")]
    assert gifs and events.Images(gifs[0])[0].encoded_image_string[:6] == b"GIF89a"
    # A standalone evaluation has its own cards, apart from the run's eval/ curves.
    scalars = set(events.Tags()["scalars"])
    assert {"final/val_unseen/spl", "final/val_unseen/failures/success"} <= scalars
    assert not any(tag.startswith("eval/") for tag in scalars)


def _smoke_args(fixture, work: Path) -> list[object]:
    data_dir = fixture("random_feature_world")
    checkpoint = save_follower(data_dir, work / "best.pt")
    return ["--checkpoint", checkpoint, "--data", data_dir, "--split", "val_seen", "--max-steps", "3",
            "--log-episodes", "0", "--log-failures", "0"]  # fmt: skip


@pytest.mark.script_run("evaluate_vln.py", _smoke_args)
def test_evaluate_script_smoke(script_run):
    """The one command-line run of ``scripts/evaluate_vln.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "val_seen:" in script_run.stdout and "SPL" in script_run.stdout
    assert load_predictions(script_run.work / "eval" / "submit_val_seen.json")  # beside the checkpoint


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


# -- the evaluation protocol: the headline split -------------------------------------------------------

QUIET = ["--log-episodes", "0", "--log-failures", "0", "--num-envs", "16", "--max-steps", "3"]


def test_default_splits_make_test_the_labelled_headline_with_a_progress_bar(
    data_dir, tmp_path, run_script, monkeypatch
):
    checkpoint = save_follower(data_dir, tmp_path / "run" / "best.pt", selected_by="eval/val_unseen/spl")
    common = ["--checkpoint", checkpoint, "--data", data_dir, "--out-dir", tmp_path / "out", *QUIET]
    done = run_script(evaluate_vln.main, *common, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    assert ours["headline"] == "test" and ours["selected_on"] == "val_unseen"
    assert all(ours[split] is not None for split in ("test", "val_seen", "val_unseen"))
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "submit_test.json", "submit_val_seen.json", "submit_val_unseen.json"
    }  # fmt: skip

    monkeypatch.setenv("LODESTAR_NO_PROGRESS", "0")  # the bar is on for users
    text = run_script(evaluate_vln.main, *common, "--split", "val_seen", "--split", "test")
    assert text.returncode == 0, text.stderr[-3000:]
    headline = text.stdout.index("HEADLINE test (held-out houses, used by no decision)")
    assert headline < text.stdout.index("beside the headline: val_seen")  # printed first, whatever the order
    assert "optimistic" not in text.stdout  # selected on val_unseen, which is not reported here
    test_instructions = sum(len(ep.instructions) for ep in NavDataset(data_dir).episodes("test"))
    assert "evaluate test: 100%" in text.stderr and f"{test_instructions}/{test_instructions}" in text.stderr


def test_hidden_test_goals_give_a_submission_and_val_unseen_as_headline(data_dir, tmp_path, run_script):
    world = tmp_path / "world"
    shutil.copytree(data_dir, world)
    episodes = json.loads((world / "R2R_test.json").read_text())
    for episode in episodes:  # as real R2R publishes test: the start viewpoint only, no distance
        episode["path"] = episode["path"][:1]
        episode.pop("distance", None)
    (world / "R2R_test.json").write_text(json.dumps(episodes))
    checkpoint = save_follower(world, tmp_path / "run" / "best.pt", selected_by="eval/val_unseen/spl")
    common = ["--checkpoint", checkpoint, "--data", world, "--out-dir", tmp_path / "out", *QUIET]
    done = run_script(evaluate_vln.main, *common, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    assert ours["test"] is None and "test" not in ours["failures"]
    assert ours["headline"] == "val_unseen" and ours["selected_on"] == "val_unseen"
    expected = {ep["path_id"] for ep in episodes}
    assert {iid.rpartition("_")[0] for iid in load_predictions(tmp_path / "out" / "submit_test.json")} == {
        str(p) for p in expected
    }
    text = run_script(evaluate_vln.main, *common).stdout
    assert text.index("HEADLINE val_unseen (test goals hidden)") < text.index("test: ")
    assert "selected on this split: optimistic" in text and "select_split=val_seen" in text


def test_headline_and_selection_helpers():
    metrics = {"sr": 0.5}
    assert (
        evaluate_vln.headline_split({"val_seen": metrics, "test": metrics, "val_unseen": metrics}) == "test"
    )
    assert (
        evaluate_vln.headline_split({"test": None, "val_unseen": metrics, "val_seen": metrics})
        == "val_unseen"
    )
    assert evaluate_vln.headline_split({"test": None, "val_seen": metrics}) == "val_seen"
    assert evaluate_vln.headline_split({"test": None}) is None
    assert evaluate_vln.selection_split({"selected_by": "eval/val_seen/spl"}) == "val_seen"
    assert evaluate_vln.selection_split({"stage": "pretrain"}) is None
