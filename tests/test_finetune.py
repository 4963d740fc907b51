"""Fine-tuning: GAE, DAgger aggregation through the trajectory store, init checks and exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import finetune_vln
import pytest
import torch

from lodestar.agents.rollout import RolloutCollector
from lodestar.agents.vln.dagger import DaggerWriter, replay_inputs
from lodestar.agents.vln.finetune import FinetuneTrainer, TrainingDiverged
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig, FollowerPolicy
from lodestar.agents.vln.rollout_replay import generalized_advantages
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.pretrain.trainer import PretrainConfig, PretrainTrainer
from lodestar.replay.trajectory import TrajectoryStore
from lodestar.runtime.checkpoint import CheckpointError
from lodestar.runtime.config import load_config
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, TINY_MODEL, one_torch_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    f"data.features={FEATURE_NAME}",
    f"data.angle_feature_size={ANGLE_DIM}",
    "data.eval_max_episodes=3",
    "device=cpu",
    "eval_every=0",
    "log_every=1",
    "log_episodes=0",
    "eval_num_envs=4",
    "learn.teacher_envs=2",
    "learn.learner_envs=3",
    "learn.rollout_steps=6",
    "dagger.min_episodes=2",
    "dagger.batch_size=4",
    "env.max_steps=6",
    *TINY_MODEL,
]


@pytest.fixture(scope="module")
def data_dir(random_feature_world: Path) -> Path:
    return random_feature_world


@pytest.fixture(scope="module")
def dataset(data_dir: Path) -> NavDataset:
    return NavDataset(data_dir)


def _config(data_dir: Path, runs: Path, *extra: str) -> FinetuneConfig:
    return load_config(
        FinetuneConfig,
        ROOT / "configs" / "vln_finetune.yaml",
        [*SMALL, f"data_dir={data_dir}", f"runs_dir={runs}", *extra],
    )


def test_generalized_advantages_by_hand():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [0.2]])
    done = torch.tensor([[False], [True], [False]])
    next_values = torch.tensor([[1.0], [0.0], [0.7]])  # after the termination at t=1: 0
    gamma, lam = 0.9, 0.8
    adv, ret = generalized_advantages(rewards, values, next_values, done, gamma, lam)
    d2 = 2.0 + 0.9 * 0.7 - 0.2
    d1 = 0.0 + 0.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    expected = torch.tensor([[d0 + gamma * lam * d1], [d1], [d2]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_dagger_writes_learner_states_with_teacher_labels(dataset):
    env = NavVecEnv(
        dataset, "train", 3, features=FEATURE_NAME, angle_feature_size=ANGLE_DIM, device="cpu", seed=4,
        max_steps=5, record_trajectories=True, oracle=True,
    )  # fmt: skip
    scans = sorted(
        {ep.scan for ep in dataset.episodes("train")} | {ep.scan for ep in dataset.episodes("val_unseen")}
    )
    # A featurizer over more scans than the env: indices must be translated, not copied.
    featurizer = PathFeaturizer.from_dataset(dataset, scans, FEATURE_NAME, "cpu", ANGLE_DIM)
    store = TrajectoryStore(capacity=100)
    writer = DaggerWriter(store, env, featurizer, torch.ones(3, dtype=torch.bool))
    plain = NavVecEnv(dataset, "train", 3, features=FEATURE_NAME, angle_feature_size=ANGLE_DIM, device="cpu")
    with pytest.raises(ValueError, match="oracle=True"):  # DAgger's labels are the teacher's actions
        DaggerWriter(store, plain, featurizer, torch.ones(3, dtype=torch.bool))
    torch.manual_seed(0)
    vocab = dataset.vocab()
    model = Follower(
        len(vocab), 16, ANGLE_DIM, FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64), vocab.pad_id
    )
    policy = FollowerPolicy(model, 3, "sample", generator=torch.Generator().manual_seed(0))
    observed: list[list[dict]] = [[] for _ in range(3)]
    finished: list[list[dict]] = []

    def sink(t):
        writer(t)
        for row in range(3):
            observed[row].append(
                {k: t.obs[k][row].clone() for k in ("cand_feats", "cand_mask", "teacher_action")}
            )
        for row in torch.nonzero(t.done).flatten().tolist():
            finished.append(observed[row])
            observed[row] = []

    collector = RolloutCollector(env, policy, sink, policy.on_episode_end)
    collector.reset(seed=4)
    collector.collect(25, keep=False)
    trajectories = env.trajectories()
    assert len(store) == len(trajectories) == len(finished) >= 5
    batch = store.get(torch.arange(len(store)))
    by_path = {str(ep.path_id): ep for ep in dataset.episodes("train")}
    ids = featurizer.world.viewpoint_ids
    for i, record in enumerate(trajectories):
        length = int(batch.lengths[i])
        visited = [ids[v] for v in batch.viewpoints[i, :length].tolist()]
        assert visited == [step[0] for step in record["trajectory"]][:length]
        episode = by_path[record["instr_id"].rpartition("_")[0]]
        graph = dataset.graph(episode.scan)
        goal = graph.index[episode.path[-1]]
        for t, vp in enumerate(visited):
            here = graph.index[vp]
            hop = int(graph.next_hop[here, goal])
            expected = graph.neighbours(here).index(hop) if here != goal else env.world.max_degree
            assert int(batch.actions[i, t]) == expected
        assert [int(o["teacher_action"]) for o in finished[i]] == batch.actions[i, :length].tolist()
    # Replaying the stored states shows the learner exactly what it saw.
    _, _, steps, labels = replay_inputs(featurizer, batch)
    for i, episode_obs in enumerate(finished):
        for t, obs in enumerate(episode_obs):
            k = int(obs["cand_mask"].sum()) - 1  # real candidates, STOP comes after the padding
            torch.testing.assert_close(steps.cand_feats[i, t, :k], obs["cand_feats"][:k], atol=1e-5, rtol=0)
            assert int(labels[i, t]) == int(obs["teacher_action"])


def test_init_from_a_pretrained_follower_checks_that_it_fits(data_dir, dataset, tmp_path):
    config = _config(data_dir, tmp_path, "iterations=1")
    trainer = FinetuneTrainer(config, tmp_path / "scratch")
    bundle = FollowerBundle(
        trainer.model, dataset.vocab(), FEATURE_NAME, ANGLE_DIM, 80, {"stage": "pretrain"}
    )
    with torch.no_grad():
        trainer.model.stop_embedding.fill_(0.25)
    bundle.save(tmp_path / "pretrained.pt")
    warm = FinetuneTrainer(
        _config(data_dir, tmp_path, "iterations=1", f"init={tmp_path / 'pretrained.pt'}"), tmp_path / "w"
    )
    assert torch.equal(warm.model.stop_embedding, torch.full_like(warm.model.stop_embedding, 0.25))
    validated = []
    validate = warm.validate
    warm.validate = lambda logger=None: validated.append(warm.iteration) or validate(logger)
    warm.config.eval_every = 1
    warm.train()
    assert validated == [0, 1]  # the pretrained follower itself competes for best.pt
    with pytest.raises(CheckpointError, match="model.hidden_dim is 32 there, 48 here"):
        FinetuneTrainer(
            _config(data_dir, tmp_path, f"init={tmp_path / 'pretrained.pt'}", "model.hidden_dim=48"),
            tmp_path / "x",
        )


def test_finetuning_resumes_exactly(data_dir, tmp_path):
    straight = FinetuneTrainer(_config(data_dir, tmp_path, "iterations=5"), tmp_path / "a")
    result = straight.train()
    assert result.iterations == 5 and len(straight.store) >= 2
    first = FinetuneTrainer(_config(data_dir, tmp_path, "iterations=5"), tmp_path / "b")
    for _ in range(3):  # as if interrupted after three iterations
        first.train_step()
    first.save_checkpoint()
    resumed = FinetuneTrainer(_config(data_dir, tmp_path, "iterations=5"), tmp_path / "b")
    resumed.restore()
    assert resumed.iteration == 3
    resumed.train()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert len(resumed.store) == len(straight.store)


def test_validation_writes_the_best_follower(data_dir, tmp_path):
    trainer = FinetuneTrainer(_config(data_dir, tmp_path, "iterations=2", "eval_every=2"), tmp_path / "v")
    result = trainer.train()
    assert (tmp_path / "v" / "best.pt").is_file()
    assert result.best_iteration == 2
    assert set(result.last_scores) >= {"eval/val_unseen/spl", "eval/val_seen/sr", "train/loss"}


def _run_script(*args: str, torchrun: bool = False) -> subprocess.CompletedProcess:
    prefix = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        if torchrun
        else [sys.executable]
    )
    env = {**os.environ, "LODESTAR_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*prefix, str(ROOT / "scripts" / "finetune_vln.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def pretraining_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-iteration pretraining run of the tiny follower."""
    runs = tmp_path_factory.mktemp("pretraining")
    pretrain_config = load_config(
        PretrainConfig,
        ROOT / "configs" / "vln_pretrain.yaml",
        [f"data_dir={data_dir}", f"runs_dir={runs}", f"data.features={FEATURE_NAME}",
         f"data.angle_feature_size={ANGLE_DIM}", "device=cpu", "iterations=2", "batch_size=4", "eval_every=0",
         "name=pt", *TINY_MODEL],
    )  # fmt: skip
    PretrainTrainer(pretrain_config, runs / "pt").train()
    return runs / "pt"


def test_finetune_script_from_a_pretraining_run(data_dir, pretraining_run, tmp_path, run_script):
    config = ["--config", ROOT / "configs" / "vln_finetune.yaml", "--data", data_dir]
    done = run_script(finetune_vln.main, *config, *SMALL, f"runs_dir={tmp_path}", "name=ft", "iterations=2",
                      "eval_every=2", f"init={pretraining_run}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best follower" in done.stdout and (tmp_path / "ft" / "best.pt").is_file()
    assert f"init: {pretraining_run}" in (tmp_path / "ft" / "config.yaml").read_text()
    bad = run_script(finetune_vln.main, *config, f"runs_dir={tmp_path}", "name=bad", "learn.techer_envs=3")
    assert bad.returncode == 2 and "learn.techer_envs" in bad.stderr


def _smoke_args(fixture, work: Path) -> list[object]:
    config = ["--config", ROOT / "configs" / "vln_finetune.yaml", "--data", fixture("random_feature_world")]
    return [*config, *SMALL, f"runs_dir={work}", "name=smoke", "iterations=1"]


@pytest.mark.script_run("finetune_vln.py", _smoke_args)
def test_finetune_script_smoke(script_run):
    """The one command-line run of ``scripts/finetune_vln.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "fine-tuned 1 iterations" in script_run.stdout
    assert (script_run.work / "smoke" / "checkpoints" / "ckpt_000000000001.pt").is_file()


@pytest.mark.slow
def test_finetune_under_torchrun_runs_and_resumes(data_dir, tmp_path):
    config = ["--config", str(ROOT / "configs" / "vln_finetune.yaml"), "--data", str(data_dir), *SMALL]
    first = _run_script(*config, f"runs_dir={tmp_path}", "name=ddp", "iterations=2", torchrun=True)
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(next((tmp_path / "ddp" / "checkpoints").glob("ckpt_*.pt")), weights_only=False)
    assert len(state["processes"]) == 2
    # The two processes ran different episodes.
    actions = [p["runners"]["train"]["actions"] for p in state["processes"]]
    assert not torch.equal(actions[0], actions[1])
    resumed = _run_script("--resume", str(tmp_path / "ddp"), "iterations=3", torchrun=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout and "fine-tuned 3 iterations" in resumed.stdout
    single = _run_script("--resume", str(tmp_path / "ddp"), "iterations=4")
    assert single.returncode == 2 and "written by 2 process(es)" in single.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    trainer = FinetuneTrainer(_config(data_dir, tmp_path, "iterations=4"), tmp_path / "nan")
    trainer.train_step()
    good = trainer.save_checkpoint()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    nan = torch.tensor(float("nan"))
    trainer._a2c = lambda *args: {"policy": nan, "value": nan * 0, "entropy": nan * 0, "return": nan * 0}
    with pytest.raises(TrainingDiverged, match="the last good checkpoint"):
        trainer.train_step()
    assert trainer.checkpoints.latest() == good
    for key, value in trainer.model.state_dict().items():  # no update was applied
        assert torch.equal(value, before[key]), key


def test_interrupt_writes_a_checkpoint(data_dir, tmp_path):
    trainer = FinetuneTrainer(_config(data_dir, tmp_path, "iterations=4"), tmp_path / "stop")
    trainer.train_step()
    trainer._request_stop(2, None)  # what Ctrl-C does
    result = trainer.train()
    assert result.interrupted and result.iterations == 1
    assert trainer.checkpoints.latest().name == "ckpt_000000000001.pt"


@pytest.mark.parametrize(
    ("truncation", "expected"), [("stop", (3.25 + 2.5) / 2), ("bootstrap", (2.017 + 1.13) / 2)]
)
def test_truncated_episodes_are_scored_where_they_end(data_dir, tmp_path, truncation, expected):
    from lodestar.agents.rollout import Rollout
    from lodestar.agents.vln.rollout_replay import ReplayedRollout

    overrides = ("iterations=1", "learn.gamma=0.9", "learn.gae_lambda=1.0", f"learn.truncation={truncation}")
    trainer = FinetuneTrainer(_config(data_dir, tmp_path, *overrides), tmp_path / truncation)
    rollout = Rollout(
        obs={},
        action=torch.zeros(2, 1, dtype=torch.long),
        reward=torch.tensor([[1.0], [0.5]]),
        terminated=torch.tensor([[False], [False]]),
        truncated=torch.tensor([[False], [True]]),
        next_obs={"distance": torch.tensor([[[5.0]], [[1.0]]])},  # [T, N, 1]; ends 1 m from the goal
        extras={"learner_action": torch.zeros(2, 1, dtype=torch.long)},
        last_obs={},
    )
    out = ReplayedRollout(torch.zeros(2, 1, 3), torch.tensor([[0.2], [0.3]]), torch.tensor([[0.3], [0.7]]))
    parts = trainer._a2c(rollout, out, torch.tensor([True]))
    assert float(parts["return"]) == pytest.approx(expected)
