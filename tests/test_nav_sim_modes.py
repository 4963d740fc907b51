"""The simulator in the modes it is run in: trainers step index observations and the follower gathers
what it reads (the same numbers as materialised features); the features mode reuses output buffers
but never overwrites an observation someone holds; features load straight into their table."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import nav_sim
from benchmarks.nav_sim import random_actions
from lodestar.agents.rollout import Rollout, RolloutCollector
from lodestar.agents.vln.finetune import FinetuneTrainer, make_train_env, train_env_options
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.agents.vln.follower import Follower, FollowerPolicy
from lodestar.agents.vln.observations import view_features
from lodestar.agents.vln.rollout_replay import replay_rollout
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import load_features_hdf5, write_features_tsv
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.envs.nav.sim.feature_table import FeatureTable
from lodestar.envs.nav.sim.packing import load_feature_table
from lodestar.runtime.config import load_config
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, TINY_MODEL, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.nav_fixtures import make_dataset

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
    "learn.rollout_steps=4",
    "dagger.min_episodes=2",
    "dagger.batch_size=2",
    "env.max_steps=5",
    *TINY_MODEL,
]


def finetune_config(data_dir: Path, runs: Path, *extra: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, None, [*SMALL, f"data_dir={data_dir}", f"runs_dir={runs}", *extra])


@pytest.fixture(scope="module")
def follower_dataset(random_feature_world: Path) -> NavDataset:
    return NavDataset(random_feature_world)


# -- the trainer's path: index observations, the follower gathers ------------------------------------


def _collect(env: NavVecEnv, model: Follower, features: FeatureTable | None, steps: int):
    """A sampled rollout (some rows teacher-forced), the logits the policy saw, and the replayed pass."""
    rows = torch.arange(env.num_envs) < 2
    policy = FollowerPolicy(
        model, env.num_envs, "sample", rows, 0.3, torch.Generator().manual_seed(1), features
    )
    seen: list[torch.Tensor] = []
    original = model.observe

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out[0].logits)
        return out

    collector = RolloutCollector(env, policy, on_episode_end=policy.on_episode_end)
    collector.reset(seed=3)
    model.observe = recording  # type: ignore[method-assign]
    try:
        rollout: Rollout = collector.collect(steps, keep=True)
    finally:
        model.observe = original  # type: ignore[method-assign]
    replayed = replay_rollout(model, rollout, None, torch.ones(env.num_envs, dtype=torch.bool), features)
    return rollout, torch.stack(seen), replayed


@pytest.mark.parametrize("pano", ["mean", "full", "none"])
def test_trainer_index_path_gives_the_follower_the_features_mode_numbers(
    follower_dataset: NavDataset, tmp_path: Path, pano: str
) -> None:
    """Actions, the logits the policy acted on and the learner's replayed logits/values are identical
    (bit for bit) whether the env materialises features or the follower gathers them from indices."""
    config = finetune_config(follower_dataset.root, tmp_path, f"model.pano={pano}")
    trainer_env = make_train_env(follower_dataset, "train", 5, config, "cpu", seed=7)
    options = {**train_env_options(config, "cpu", seed=7), "observation": "features"}
    features_env = NavVecEnv(follower_dataset, "train", 5, **options)
    assert trainer_env.observation == "indices" and trainer_env.oracle
    assert trainer_env.observe_pano == (pano != "none")
    torch.manual_seed(0)
    vocab = follower_dataset.vocab()
    model = Follower(len(vocab), 16, ANGLE_DIM, config.model, vocab.pad_id).eval()

    got = _collect(trainer_env, model, trainer_env.feature_table, steps=12)
    want = _collect(features_env, model, None, steps=12)
    rollout, logits, replayed = got
    assert "cand_feats" not in rollout.obs and "cand_view" in rollout.obs  # the rollout holds indices
    assert bool((rollout.terminated | rollout.truncated).any()), "the test needs episode ends"
    assert torch.equal(rollout.action, want[0].action)
    assert torch.equal(logits, want[1])
    for name in ("logits", "values", "next_values"):
        assert torch.equal(getattr(replayed, name), getattr(want[2], name)), name


def test_finetuning_and_evaluation_step_index_observations(
    follower_dataset: NavDataset, tmp_path: Path
) -> None:
    config = finetune_config(follower_dataset.root, tmp_path, "iterations=1", "eval_every=1")
    trainer = FinetuneTrainer(config, tmp_path / "run")
    envs = [runner.env for runner in trainer.runners.values()] + list(trainer.eval_envs.values())
    assert trainer.eval_envs and all(env.observation == "indices" for env in envs)
    metrics = trainer.train_step()  # collect, replay with gathered features, update
    assert np.isfinite(metrics["loss"])
    scores = trainer.validate()
    assert any(key.endswith("/spl") for key in scores)


def test_view_features_needs_the_table_for_index_observations(follower_dataset: NavDataset) -> None:
    env = NavVecEnv(follower_dataset, "train", 2, features=FEATURE_NAME, device="cpu", observation="indices")
    obs = env.reset(seed=0)
    with pytest.raises(ValueError, match="feature_table"):
        view_features(obs, None)
    cand, pano = view_features(obs, env.feature_table, with_pano=False)
    assert pano is None and torch.equal(cand, env.feature_table.materialise(obs)["cand_feats"])
    with pytest.raises(KeyError, match="cand_view"):
        view_features({"cand_mask": obs["cand_mask"]}, env.feature_table)


# -- the features mode: reused output buffers -------------------------------------------------------


@pytest.fixture(scope="module")
def grid(grid_dataset: Path) -> NavDataset:
    return NavDataset(grid_dataset)


def test_a_stepping_loop_reuses_the_features_buffers(grid: NavDataset) -> None:
    env = NavVecEnv(grid, "train", 6, features="random", device="cpu", seed=1)
    obs, generator = env.reset(), torch.Generator().manual_seed(0)
    ptrs = set()
    for _ in range(40):
        obs, *_, _info = env.step(random_actions(obs["cand_mask"], generator, stop_prob=0.4))
        ptrs.add(obs["pano_feats"].data_ptr())
    # The loop holds the last observation (and final observation) while stepping: the pool of four
    # sets covers it, so nothing is allocated after the first steps.
    assert env._outputs.allocated <= 4 and len(ptrs) <= 4


def test_held_observations_are_never_overwritten(grid: NavDataset) -> None:
    env = NavVecEnv(grid, "train", 6, features="random", device="cpu", seed=1)
    obs, generator = env.reset(), torch.Generator().manual_seed(0)
    held: list[tuple[torch.Tensor | np.ndarray, torch.Tensor]] = []  # (what is held, its value then)
    for t in range(30):
        obs, *_, info = env.step(random_actions(obs["cand_mask"], generator, stop_prob=0.4))
        final = info["final_obs"]
        if t % 3 == 0:  # the dicts themselves
            held += [
                (obs["pano_feats"], obs["pano_feats"].clone()),
                (final["cand_feats"], final["cand_feats"].clone()),
            ]
        elif t % 3 == 1:  # a numpy array on the memory only (SB3's last observation)
            held.append((obs["pano_feats"].numpy(), obs["pano_feats"].clone()))
        else:  # a torch view only
            held.append((final["pano_feats"][1:4], final["pano_feats"][1:4].clone()))
        del final
    for t, (kept, value) in enumerate(held):
        assert torch.equal(torch.as_tensor(kept), value), f"held observation {t} was overwritten"
    assert env._outputs.allocated > 4  # held sets left the pool and new ones were made
    del held, obs, info
    before = env._outputs.allocated
    obs = env.reset()
    for _ in range(10):  # nothing held any more: the pool is reused again
        obs = env.step(random_actions(obs["cand_mask"], generator, stop_prob=0.4))[0]
    assert env._outputs.allocated - before <= 4


# -- loading features straight into their table ----------------------------------------------------


@pytest.fixture(scope="module")
def wide_features(tmp_path_factory: pytest.TempPathFactory) -> NavDataset:
    """A small dataset with wide features (float16 on disk), a TSV copy of them as ``old``."""
    root = make_dataset(tmp_path_factory.mktemp("wide"), viewpoints_per_scan=40, feature_dim=1024)
    dataset = NavDataset(root)
    write_features_tsv(root / "features" / "old.tsv", load_features_hdf5(root / "features" / "random.hdf5"))
    return dataset


@pytest.mark.parametrize(("name", "tsv_dim"), [("random", 2048), ("old", 1024)])
def test_dataset_features_load_into_one_array(wide_features: NavDataset, name: str, tsv_dim: int) -> None:
    """Reading peaks at the array plus one feature (gathering a dict and stacking it took twice that)."""
    dataset, scans = wide_features, wide_features.scans
    expected = np.stack(list(load_features_hdf5(dataset.feature_path("random")).values()))
    keys = NavDataset.viewpoint_keys(dataset.graph(s) for s in scans)
    tracemalloc.start()
    try:
        table = dataset.load_features(name, scans, tsv_dim=tsv_dim)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert table.shape == (len(keys), 36, 1024)
    assert peak <= 1.3 * table.nbytes, f"loading peaked at {peak / table.nbytes:.2f}x the array"
    order = {k: i for i, k in enumerate(load_features_hdf5(dataset.feature_path("random")))}
    np.testing.assert_array_equal(table, expected[[order[k] for k in keys]].astype(table.dtype))


def _resident_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM"))  # type: ignore[union-attr, return-value]


def test_env_feature_table_loads_at_about_its_own_size(wide_features: NavDataset) -> None:
    """The peak resident memory of building the env's table stays near the table (the old path
    stacked, converted and copied: about 3x)."""
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident set size")
    dataset = wide_features
    graphs = [dataset.graph(s) for s in dataset.scans]
    load_feature_table("random", dataset, graphs[:1], torch.float32)  # h5py's own first-use allocations
    rss, _ = _resident_kib()
    clear_refs.write_text("5")  # the peak (VmHWM) restarts from the current resident size
    table = load_feature_table("random", dataset, graphs, torch.float32)
    _, peak = _resident_kib()
    size = table.table.numel() * table.table.element_size() / 1024
    assert (peak - rss) <= 1.3 * size, f"loading peaked at {(peak - rss) / size:.2f}x the table"
    keys = NavDataset.viewpoint_keys(graphs)
    raw = load_features_hdf5(dataset.feature_path("random"), keys[7:8])[keys[7]]
    assert torch.equal(table.view_features[7], torch.from_numpy(raw).float())
    assert not table.table[:, 1024:].any() and not table.table[-1].any()  # angle columns, the -1 row


def test_feature_map_entries_are_checked(grid: NavDataset) -> None:
    graphs = [grid.graph(s) for s in grid.scans[:1]]
    keys = NavDataset.viewpoint_keys(graphs)
    features = {key: np.zeros((36, 5), np.float32) for key in keys}
    table = load_feature_table(features, grid, graphs, torch.float16, angle_feature_size=8)
    assert table.table.shape == (len(keys) * 36 + 1, 13) and table.table.dtype == torch.float16
    features[keys[3]] = np.zeros((36, 6), np.float32)
    with pytest.raises(NavDataError, match=re.escape(f"{keys[3]!r} has shape [36, 6], expected [36, 5]")):
        load_feature_table(features, grid, graphs, torch.float32)


# -- the benchmark ------------------------------------------------------------------------------------


def test_nav_sim_benchmark_smoke(grid_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tiny sizes: the trainer row is the trainer's env, the features rows carry a 1x target, and both
    simulators were checked to agree (the run raises otherwise)."""
    options = {"data": str(grid_dataset), "batches": "3,8", "steps": "12", "repeats": "1", "feature_dim": "8"}
    figures = nav_sim.run(quick=True, options=options)
    rows = {f.metric: f for f in figures}
    trainer = [f for name, f in rows.items() if "trainer" in name]
    features = [f for name, f in rows.items() if "materialised features" in name]
    assert len(trainer) == 2 and len(features) == 2
    assert all(f.target == 1.0 for f in features) and all(f.target is None for f in trainer)  # 50x at 1024
    assert "BENCH " in capsys.readouterr().out
