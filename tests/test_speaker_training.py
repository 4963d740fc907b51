"""Speaker training: exact resume, best-checkpoint selection, NaN stop, config errors, the script."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import train_speaker
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lodestar.agents.vln.speaker import load_speaker
from lodestar.agents.vln.speaker_training import SpeakerTrainConfig, SpeakerTrainer, TrainingDiverged
from lodestar.runtime.checkpoint import CheckpointError, CheckpointManager
from lodestar.runtime.config import ConfigError, load_config
from lodestar.runtime.logger import SECTIONS
from tests.speaker_fixtures import ANGLE_SIZE, FEATURES

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "vln_speaker.yaml"


@pytest.fixture(scope="module")
def world(random_feature_world: Path) -> Path:
    return random_feature_world


def small(world: Path, runs: Path, *extra: str) -> list[str]:
    return [
        f"data_dir={world}",
        f"runs_dir={runs}",
        "device=cpu",
        f"data.features={FEATURES}",
        f"data.angle_feature_size={ANGLE_SIZE}",
        "model.embed_dim=16",
        "model.hidden_dim=24",
        "batch_size=4",
        "eval_batch_size=16",
        "decode_max_len=20",
        "log_every=2",
        "eval_every=3",
        "checkpoint_every=3",
        *extra,
    ]


def _config(world: Path, runs: Path, *extra: str) -> SpeakerTrainConfig:
    return load_config(SpeakerTrainConfig, CONFIG, small(world, runs, *extra))


def _params(trainer: SpeakerTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_resume_continues_exactly(world: Path, tmp_path: Path) -> None:
    straight = SpeakerTrainer(_config(world, tmp_path, "iterations=8", "name=a"), tmp_path / "a")
    result = straight.train()
    assert result.iterations == 8 and result.best_iteration in (3, 6, 8)
    assert (tmp_path / "a" / "best.pt").is_file()

    first = SpeakerTrainer(_config(world, tmp_path, "iterations=5", "name=b"), tmp_path / "b")
    first.train()
    resumed = SpeakerTrainer(_config(world, tmp_path, "iterations=8", "name=b"), tmp_path / "b")
    resumed.restore()
    assert resumed.iteration == 5
    resumed.train()
    for p, q in zip(_params(straight), _params(resumed), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert resumed.best_score == straight.best_score


def test_best_checkpoint_is_selected_by_val_unseen_bleu4(world: Path, tmp_path: Path) -> None:
    trainer = SpeakerTrainer(_config(world, tmp_path, "iterations=6"), tmp_path / "run")
    scores = []

    original = trainer.evaluate

    def spy(logger=None):
        out = original(logger)
        scores.append((trainer.iteration, out["val_unseen/bleu4"]))
        return out

    trainer.evaluate = spy
    trainer.train()
    best_iteration, best = max(scores, key=lambda s: (s[1], -s[0]))
    bundle = load_speaker(tmp_path / "run")
    assert bundle.info["iteration"] == best_iteration == trainer.best_iteration
    assert bundle.info["scores"]["val_unseen/bleu4"] == best
    assert bundle.info["select"] == "val_unseen/bleu4"


def test_nan_loss_stops_and_keeps_last_checkpoint(world: Path, tmp_path: Path) -> None:
    trainer = SpeakerTrainer(_config(world, tmp_path, "iterations=20"), tmp_path / "run")
    for _ in range(3):
        trainer.train_step()
    trainer.save_checkpoint()
    with torch.no_grad():
        trainer.model.out.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="iteration 3"):
        trainer.train()
    kept = CheckpointManager(tmp_path / "run" / "checkpoints").checkpoints()
    assert [p.name for p in kept] == ["ckpt_000000000003.pt"]


def test_config_errors_name_the_key(world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.hiden_dim"):
        _config(world, tmp_path, "model.hiden_dim=3")
    with pytest.raises(ConfigError, match="select_split"):
        _config(world, tmp_path, "select_split=test")
    with pytest.raises(ValueError, match="--data"):
        SpeakerTrainer(load_config(SpeakerTrainConfig, CONFIG, ["device=cpu"]), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="features"):
        SpeakerTrainer(_config(world, tmp_path, "data.features=missing"), tmp_path / "y")


def test_resume_refuses_another_architecture(world: Path, tmp_path: Path) -> None:
    SpeakerTrainer(_config(world, tmp_path, "iterations=3"), tmp_path / "run").train()
    other = SpeakerTrainer(_config(world, tmp_path, "iterations=6", "model.hidden_dim=32"), tmp_path / "run")
    with pytest.raises(CheckpointError, match="model.hidden_dim"):
        other.restore()


def test_train_script_with_resume(world: Path, tmp_path: Path, run_script) -> None:
    args = small(world, tmp_path, "iterations=4", "name=cli")[1:]  # data via --data
    done = run_script(train_speaker.main, "--config", CONFIG, "--data", world, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "cli"
    assert "trained 4 iterations" in done.stdout and "best speaker" in done.stdout
    again = run_script(train_speaker.main, "--resume", run, "iterations=6")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout and "at iteration 4" in again.stdout
    assert "trained 6 iterations" in again.stdout
    assert CheckpointManager(run / "checkpoints").latest().name == "ckpt_000000000006.pt"
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for split in ("val_seen", "val_unseen"):
        for n in range(1, 5):
            assert f"eval/{split}/bleu{n}" in scalars
    assert {"train/loss", "perf/iterations_per_second", "eval/val_unseen/best_bleu4"} <= scalars
    assert all(tag.split("/")[0] in SECTIONS for tag in scalars)  # the one tag scheme
    texts = set(acc.Tags()["tensors"])
    assert {"eval/val_seen/samples/text_summary", "eval/val_unseen/samples/text_summary"} <= texts
    sample = acc.Tensors("eval/val_unseen/samples/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "**path" in sample and "*speaker:*" in sample and "*reference 0:*" in sample
    # Starting a new run over an existing one is refused (it would mix two runs).
    clash = run_script(train_speaker.main, "--config", CONFIG, "--data", world, *args)
    assert clash.returncode == 2 and "--resume" in clash.stderr


def _smoke_args(fixture, work: Path) -> list[object]:
    world = fixture("random_feature_world")
    return [
        "--config",
        CONFIG,
        "--data",
        world,
        *small(world, work, "iterations=1", "eval_every=1", "name=smoke"),
    ]


@pytest.mark.script_run("train_speaker.py", _smoke_args)
def test_train_script_smoke(script_run) -> None:
    """The one command-line run of ``scripts/train_speaker.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "trained 1 iterations" in script_run.stdout and (script_run.work / "smoke" / "best.pt").is_file()
