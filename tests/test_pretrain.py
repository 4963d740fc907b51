"""Pretraining: MLM masking, objective losses, action targets, exact resume and DDP equivalence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lodestar.agents.vln.follower import Follower, FollowerConfig, load_follower
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import write_r2r
from lodestar.envs.nav.data.tokenizer import SPECIAL_TOKENS
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.pretrain.datasets import (
    IGNORE_INDEX,
    MaskingConfig,
    TripletDataset,
    load_episode_sources,
    mask_tokens,
    sample_uniforms,
)
from lodestar.pretrain.objectives import ObjectiveConfig, PretrainModel, per_sample_cross_entropy
from lodestar.pretrain.trainer import PretrainConfig, PretrainTrainer, TrainingDiverged
from lodestar.runtime.checkpoint import CheckpointManager
from lodestar.runtime.config import load_config
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, TINY_MODEL, one_torch_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    f"data.features={FEATURE_NAME}",
    f"data.angle_feature_size={ANGLE_DIM}",
    "data.eval_max_paths=4",
    "device=cpu",
    "batch_size=8",
    "log_every=1",
    "eval_every=0",
    "warmup=2",
    *TINY_MODEL,
]


@pytest.fixture(scope="module")
def data_dir(random_feature_world: Path) -> Path:
    return random_feature_world


@pytest.fixture(scope="module")
def dataset(data_dir: Path) -> NavDataset:
    return NavDataset(data_dir)


def triplets(dataset: NavDataset, episodes=None) -> TripletDataset:
    episodes = episodes or dataset.episodes("train")
    featurizer = PathFeaturizer.from_dataset(
        dataset, [ep.scan for ep in episodes], FEATURE_NAME, "cpu", ANGLE_DIM
    )
    return TripletDataset(featurizer, episodes, dataset.vocab(), 80, seed=5)


def test_masking_never_touches_padding_or_special_tokens():
    vocab_size, special = 50, len(SPECIAL_TOKENS)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(special, vocab_size, (400, 30), generator=generator)
    tokens[:, 0] = SPECIAL_TOKENS.index("<BOS>")
    tokens[:, 20] = SPECIAL_TOKENS.index("<EOS>")
    tokens[:, 21:] = SPECIAL_TOKENS.index("<PAD>")
    tokens[:, 5] = SPECIAL_TOKENS.index("<UNK>")
    uniforms = torch.rand(400, 3, 30, generator=generator)
    inputs, labels = mask_tokens(tokens, uniforms, vocab_size, MaskingConfig())
    selected = labels != IGNORE_INDEX
    assert not bool(selected[tokens < special].any())
    assert bool((inputs[tokens < special] == tokens[tokens < special]).all())
    assert torch.equal(labels[selected], tokens[selected])
    assert bool(selected.any(1).all())  # every instruction has at least one masked word
    eligible = tokens >= special
    assert 0.13 < selected.sum() / eligible.sum() < 0.18
    replaced = inputs[selected]
    as_mask = (replaced == SPECIAL_TOKENS.index("<MASK>")).float().mean()
    kept = (replaced == tokens[selected]).float().mean()
    assert 0.75 < as_mask < 0.85 and 0.06 < kept < 0.16
    assert bool((replaced >= special).logical_or(replaced == SPECIAL_TOKENS.index("<MASK>")).all())
    # An instruction without words gets no mask at all.
    empty = torch.tensor([[2, 3, 0, 0]])
    _, labels = mask_tokens(empty, torch.rand(1, 3, 4), vocab_size, MaskingConfig())
    assert bool((labels == IGNORE_INDEX).all())


def test_mask_draws_do_not_depend_on_batch_composition():
    a = sample_uniforms(3, 1, torch.tensor([7, 2, 9]), 12)
    b = sample_uniforms(3, 1, torch.tensor([9, 7]), 12)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], sample_uniforms(3, 2, torch.tensor([7]), 12)[0])


def test_mlm_loss_counts_masked_positions_only():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[0, 3], labels[1, 2] = 4, 7, 9
    losses, counts = per_sample_cross_entropy(logits, labels)
    assert counts.tolist() == [2, 1]
    changed = logits.clone()
    changed[labels == IGNORE_INDEX] = torch.randn(
        int((labels == IGNORE_INDEX).sum()), 11, generator=generator
    )
    torch.testing.assert_close(per_sample_cross_entropy(changed, labels)[0], losses)
    expected = torch.nn.functional.cross_entropy(logits[0, [1, 3]], torch.tensor([4, 7]))
    torch.testing.assert_close(losses[0], expected)


def test_batch_mlm_and_action_targets(dataset):
    data = triplets(dataset)
    batch = data.batch(torch.arange(6), epoch=0)
    selected = batch.mlm_labels != IGNORE_INDEX
    assert torch.equal(batch.mlm_labels[selected], batch.tokens[selected])
    assert not bool(selected[batch.tokens < len(SPECIAL_TOKENS)].any())
    # Same triplets in another batch and order get the same corruption.
    again = data.batch(torch.tensor([5, 3]), epoch=0)
    assert torch.equal(
        again.mlm_inputs[0, : batch.mlm_inputs.shape[1]][: again.tokens.shape[1]],
        batch.mlm_inputs[5, : again.tokens.shape[1]],
    )

    # Action targets are exactly the simulator's teacher actions along each reference path.
    episodes = dataset.episodes("train")[:2]
    env = NavVecEnv(
        dataset,
        episodes,
        6,
        features=FEATURE_NAME,
        angle_feature_size=ANGLE_DIM,
        device="cpu",
        sequential=True,
        oracle=True,
    )
    teacher = []
    obs = env.reset()
    for _ in range(batch.actions.shape[1]):
        teacher.append(obs["teacher_action"].clone())
        obs, *_ = env.step(obs["teacher_action"])
    teacher = torch.stack(teacher, 1)  # rows = instructions 0..5 = triplets 0..5
    valid = batch.actions != IGNORE_INDEX
    assert torch.equal(batch.actions[valid], teacher[valid])
    assert bool((batch.actions[valid][batch.steps.step_mask[valid].nonzero()[:, 0] * 0 == 0] >= 0).all())


def test_objectives_produce_finite_losses_and_gradients(dataset):
    data = triplets(dataset)
    vocab = dataset.vocab()
    config = FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64, text_layers=1, cross_layers=1)
    model = PretrainModel(Follower(len(vocab), 16, ANGLE_DIM, config, vocab.pad_id), ObjectiveConfig())
    out = model(data.batch(torch.arange(8)))
    assert set(out) == {"mlm", "mlm_accuracy", "action", "action_accuracy", "loss"}
    out["loss"].backward()
    assert model.follower.word_embedding.weight.grad.abs().sum() > 0
    assert model.mlm.bias.grad.abs().sum() > 0
    assert model.follower.query.weight.grad.abs().sum() > 0


def test_synthetic_sources_are_loaded_and_validated(dataset, data_dir, tmp_path):
    train = dataset.episodes("train")
    write_r2r(tmp_path / "R2R_extra.json", train[:3])
    loaded = load_episode_sources(dataset, ["train", str(tmp_path / "R2R_extra.json")])
    assert [len(v) for v in loaded.values()] == [len(train), 3]
    with pytest.raises(FileNotFoundError, match="not found"):
        load_episode_sources(dataset, [str(tmp_path / "R2R_missing.json")])
    bad = type(train[0])(**{**train[0].__dict__, "path": [train[0].path[0], "nowhere"]})
    write_r2r(tmp_path / "R2R_bad.json", [bad])
    with pytest.raises(ValueError, match="nowhere"):
        load_episode_sources(dataset, [str(tmp_path / "R2R_bad.json")])


def _config(data_dir: Path, runs: Path, *extra: str) -> PretrainConfig:
    return load_config(
        PretrainConfig,
        ROOT / "configs" / "vln_pretrain.yaml",
        [*SMALL, f"data_dir={data_dir}", f"runs_dir={runs}", *extra],
    )


def test_pretraining_resumes_exactly(data_dir, tmp_path):
    straight = PretrainTrainer(_config(data_dir, tmp_path, "iterations=4", "name=a"), tmp_path / "a")
    straight.train()
    first = PretrainTrainer(_config(data_dir, tmp_path, "iterations=4", "name=b"), tmp_path / "b")
    for _ in range(2):  # as if interrupted after two iterations
        first.train_step()
    first.save_checkpoint()
    resumed = PretrainTrainer(_config(data_dir, tmp_path, "iterations=4", "name=b"), tmp_path / "b")
    resumed.restore()
    assert resumed.iteration == 2
    resumed.train()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    # The checkpoint carries a loadable follower for fine-tuning.
    bundle = load_follower(tmp_path / "b")
    assert bundle.info["stage"] == "pretrain" and bundle.info["iteration"] == 4


EXACT = ["iterations=3", "model.dropout=0.0", "model.feature_dropout=0.0"]


def _ddp_args(fixture, work: Path) -> list[object]:
    config = ["--config", ROOT / "configs" / "vln_pretrain.yaml", "--data", fixture("random_feature_world")]
    return [*config, *SMALL, *EXACT, f"runs_dir={work}", "name=ddp"]


@pytest.mark.script_run("pretrain_vln.py", _ddp_args, torchrun=2)
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(data_dir, tmp_path, script_run):
    """``torchrun --nproc_per_node 2`` (gloo, CPU) makes the same updates as one process.

    The torchrun command (in the background: tests/script_runs.py) is also the command-line smoke test
    of ``scripts/pretrain_vln.py``.
    """
    single = PretrainTrainer(_config(data_dir, tmp_path, *EXACT, "name=single"), tmp_path / "single")
    initial = {k: v.clone() for k, v in single.model.state_dict().items()}
    single.train()
    assert script_run.returncode == 0, script_run.stderr[-2000:]
    assert "on 2 process(es)" in script_run.stdout
    a = CheckpointManager(tmp_path / "single" / "checkpoints").load()
    b = CheckpointManager(script_run.work / "ddp" / "checkpoints").load()
    assert a["iteration"] == b["iteration"] == 3
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, atol=1e-5, rtol=1e-5, msg=key)
    moved = max(float((a["model"][k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-4  # the runs did train


def test_pretraining_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    trainer = PretrainTrainer(_config(data_dir, tmp_path, "iterations=4", "name=nan"), tmp_path / "nan")
    trainer.train_step()
    good = trainer.save_checkpoint()
    with torch.no_grad():
        trainer.follower.word_embedding.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="the last good checkpoint"):
        trainer.train_step()
    assert trainer.checkpoints.latest() == good
