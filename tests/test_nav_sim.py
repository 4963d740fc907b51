"""NavVecEnv: equivalence with a per-episode reference simulator, teacher/random agents, protocol details,
and the index observation mode with its feature table."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.nav_reference import ReferenceNavSim
from benchmarks.nav_sim import random_actions
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.features import load_features_hdf5
from lodestar.envs.nav.eval.metrics import episode_metrics, evaluate_split
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.envs.nav.sim.feature_table import VIEW_ELEVATIONS, VIEW_HEADINGS, FeatureTable, angle_features
from lodestar.envs.nav.sim.packing import nearest_view
from tests.nav_fixtures import FEATURE_DIM


@pytest.fixture(scope="module")
def data_dir(grid_dataset: Path) -> Path:
    return grid_dataset


@pytest.fixture(scope="module")
def dataset(data_dir: Path) -> NavDataset:
    return NavDataset(data_dir)


def make_env(dataset: NavDataset, split: str = "train", num_envs: int = 4, **kwargs) -> NavVecEnv:
    kwargs.setdefault("features", "random")
    return NavVecEnv(dataset, split, num_envs, device="cpu", **kwargs)


def make_reference(dataset: NavDataset, env: NavVecEnv, split: str, **kwargs) -> ReferenceNavSim:
    episodes = dataset.episodes(split)
    scans = sorted({ep.scan for ep in episodes})
    keys = NavDataset.viewpoint_keys(dataset.graph(s) for s in scans)
    features = {
        k: v.astype(np.float32) for k, v in load_features_hdf5(dataset.feature_path("random"), keys).items()
    }
    return ReferenceNavSim(
        {s: dataset.graph(s) for s in scans}, features, episodes, dataset.vocab(), env.num_envs,
        max_steps=env.max_steps, max_degree=env.world.max_degree, **kwargs,
    )  # fmt: skip


def assert_obs_equal(
    vec: dict[str, torch.Tensor], ref: dict[str, np.ndarray], rows: np.ndarray, where: str
) -> None:
    assert set(vec) == set(ref), where
    for key in ref:
        got, want = vec[key].numpy()[rows], ref[key][rows]
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{where}: {key}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{where}: {key}")


def assert_candidates_match(
    obs: dict[str, torch.Tensor], ref: list, rows: np.ndarray, where: str, env: NavVecEnv
) -> None:
    """Index observations name the reference's viewpoint, candidate views and angles directly."""
    ids = env.world.viewpoint_ids
    for row in rows.tolist():
        ob, cand_view = ref[row], obs["cand_view"][row].tolist()
        count = len(ob["candidate"])
        assert ids[int(obs["pano_index"][row])] == ob["viewpoint"], where
        assert [ids[v // 36] for v in cand_view[:count]] == [ob["viewpoint"]] * count, where
        assert [v % 36 for v in cand_view[:count]] == [c[4] for c in ob["candidate"]], where
        assert cand_view[count:] == [-1] * (len(cand_view) - count), where
        np.testing.assert_allclose(obs["cand_angles"][row, :count].numpy(), ob["cand_angles"], atol=1e-5)
        h = ob["heading"]
        np.testing.assert_allclose(obs["heading"][row].numpy(), [math.sin(h), math.cos(h)], atol=1e-6)


def assert_matches_reference(
    obs: dict[str, torch.Tensor], ref_obs: dict | list, rows: np.ndarray, where: str, env: NavVecEnv,
    ref: ReferenceNavSim,
) -> None:  # fmt: skip
    """Compare an observation with the reference's; index observations also in the features layout."""
    if isinstance(ref_obs, list):
        assert_candidates_match(obs, ref_obs, rows, where, env)
        obs, ref_obs = env.feature_table.materialise(obs), ref.batch(ref_obs)
    assert_obs_equal(obs, ref_obs, rows, where)


@pytest.mark.parametrize("observation", ["features", "indices"])
@pytest.mark.parametrize(
    ("split", "num_envs", "sequential", "max_steps"),
    [("train", 5, False, 6), ("val_unseen", 3, True, 4), ("train", 8, True, 15)],
)
def test_matches_reference_simulator(
    dataset: NavDataset, split: str, num_envs: int, sequential: bool, max_steps: int, observation: str
) -> None:
    env = make_env(
        dataset, split, num_envs, sequential=sequential, max_steps=max_steps, record_trajectories=True,
        observation=observation, oracle=True,
    )  # fmt: skip
    ref = make_reference(dataset, env, split, sequential=sequential, observation=observation)
    generator = torch.Generator().manual_seed(3)
    obs, ref_obs = env.reset(seed=11), ref.reset(seed=11)
    all_rows = np.arange(num_envs)
    assert_matches_reference(obs, ref_obs, all_rows, "reset", env, ref)
    for t in range(60):
        actions = random_actions(obs["cand_mask"], generator, stop_prob=0.2)
        obs, reward, terminated, truncated, info = env.step(actions)
        ref_obs, ref_reward, ref_term, ref_trunc, ref_info = ref.step(actions.tolist())
        active = np.array([s["active"] for s in ref.envs])
        np.testing.assert_array_equal(info["active"].numpy(), active)
        np.testing.assert_allclose(reward.numpy(), ref_reward, atol=1e-5, err_msg=f"step {t}")
        np.testing.assert_array_equal(terminated.numpy(), ref_term)
        np.testing.assert_array_equal(truncated.numpy(), ref_trunc)
        assert_matches_reference(obs, ref_obs, all_rows[active], f"step {t}", env, ref)
        final_rows, final = all_rows[(ref_term | ref_trunc) | active], info["final_obs"]
        assert_matches_reference(final, ref_info["final_obs"], final_rows, f"final step {t}", env, ref)
        if env.all_done:
            break
    got, want = env.trajectories(), ref.finished
    assert [r["instr_id"] for r in got] == [r["instr_id"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert [p[0] for p in a["trajectory"]] == [p[0] for p in b["trajectory"]]
        np.testing.assert_allclose(
            [p[1] for p in a["trajectory"]], [p[1] for p in b["trajectory"]], atol=1e-5
        )
    if sequential:
        assert env.all_done and sorted(r["instr_id"] for r in got) == sorted(env.instruction_ids)


def run_policy(env: NavVecEnv, policy, seed: int = 0) -> list[dict]:
    obs = env.reset(seed=seed)
    while not env.all_done:
        obs = env.step(policy(obs))[0]
    return env.trajectories()


@pytest.mark.parametrize("split", ["val_seen", "val_unseen"])
def test_teacher_is_perfect(dataset: NavDataset, split: str) -> None:
    """Following the teacher reaches every goal by a shortest path, moving only along graph edges.

    Its path need not be the reference path: some real R2R reference paths are not shortest paths.
    """
    env = make_env(dataset, split, num_envs=3, sequential=True, oracle=True)
    records = run_policy(env, lambda obs: obs["teacher_action"])
    assert sorted(r["instr_id"] for r in records) == sorted(env.instruction_ids)  # each exactly once
    predictions = {r["instr_id"]: [p[0] for p in r["trajectory"]] for r in records}
    summary, _ = evaluate_split(dataset, split, predictions)
    assert summary["sr"] == summary["spl"] == 1.0 and summary["ne"] == 0.0
    scans = {ep.instr_id(k): ep.scan for ep in dataset.episodes(split) for k in range(len(ep.instructions))}
    for iid, path in predictions.items():
        graph = dataset.graph(scans[iid])
        assert len(path) >= 2 and all(
            graph.adjacency[graph.index[a], graph.index[b]] for a, b in pairwise(path)
        )


def test_random_agent_is_poor(dataset: NavDataset) -> None:
    env = make_env(dataset, "train", num_envs=4, sequential=True)
    generator = torch.Generator().manual_seed(0)
    records = run_policy(env, lambda obs: random_actions(obs["cand_mask"], generator, stop_prob=0.3))
    predictions = {r["instr_id"]: [p[0] for p in r["trajectory"]] for r in records}
    summary, _ = evaluate_split(dataset, "train", predictions)
    assert summary["sr"] < 0.5 and summary["ndtw"] < 0.8


def test_episode_info_matches_metrics(dataset: NavDataset) -> None:
    env = make_env(dataset, "train", num_envs=4, sequential=True, max_steps=5, oracle=True)
    generator = torch.Generator().manual_seed(1)
    obs, returns = env.reset(seed=0), torch.zeros(4)
    finished = []
    while not env.all_done:
        obs, reward, terminated, truncated, info = env.step(random_actions(obs["cand_mask"], generator))
        returns += reward
        done = terminated | truncated
        for row in torch.nonzero(done).flatten().tolist():
            finished.append(
                {key: info[key][row].item() for key in info if key not in ("final_obs", "active")}
            )
            assert info["episode_return"][row].item() == pytest.approx(returns[row].item(), abs=1e-5)
            assert info["nav_error"][row] == pytest.approx(info["final_obs"]["distance"][row].item())
            assert info["episode_length"][row] == info["final_obs"]["step"][row]
        returns[done] = 0.0
    graphs = dataset.graphs()
    paths = {ep.instr_id(k): (ep.scan, ep.path) for ep in dataset.episodes("train") for k in range(3)}
    for record, info_row in zip(env.trajectories(), finished, strict=True):
        assert env.instruction_ids[info_row["instruction_index"]] == record["instr_id"]
        scan, ref_path = paths[record["instr_id"]]
        m = episode_metrics(graphs[scan], [p[0] for p in record["trajectory"]], ref_path)
        assert info_row["nav_error"] == pytest.approx(m["ne"], abs=1e-4)
        assert info_row["success"] == bool(m["sr"]) and info_row["oracle_success"] == bool(m["osr"])
        assert info_row["path_length"] == pytest.approx(m["tl"], abs=1e-4)
        assert info_row["spl"] == pytest.approx(m["spl"], abs=1e-4)


def test_truncation_and_rewards(dataset: NavDataset) -> None:
    env = make_env(dataset, "train", num_envs=2, max_steps=3, seed=5, oracle=True)
    obs = env.reset()
    assert obs["distance"].shape == (2, 1)
    start_distance = obs["distance"][:, 0].clone()
    total = torch.zeros(2)
    for t in range(3):
        # Always move (first navigable candidate), never STOP.
        obs, reward, terminated, truncated, info = env.step(torch.zeros(2, dtype=torch.int64))
        total += reward
        assert not terminated.any()
        assert bool(truncated.all()) == (t == 2)
    final = info["final_obs"]
    assert final["step"].tolist() == [3, 3] and obs["step"].tolist() == [0, 0]
    # Shaped move rewards telescope to the total reduction of the distance to the goal.
    torch.testing.assert_close(total, start_distance - final["distance"][:, 0], atol=1e-5, rtol=0)
    assert info["episode_length"].tolist() == [3, 3]
    # STOP: +2 within 3 m, -2 otherwise; sign rewards are +-1 per move.
    env = make_env(dataset, "train", num_envs=4, seed=5, move_reward="sign", oracle=True)
    obs = env.reset()
    _, reward, terminated, _, _ = env.step(torch.full((4,), env.world.max_degree))
    assert terminated.all()
    expected = torch.where(obs["distance"][:, 0] < 3.0, 2.0, -2.0)
    torch.testing.assert_close(reward, expected)
    _, reward, _, _, _ = env.step(torch.zeros(4, dtype=torch.int64))
    assert set(reward.tolist()) <= {-1.0, 0.0, 1.0}


def test_invalid_actions(dataset: NavDataset) -> None:
    env = make_env(dataset, "train", num_envs=3, seed=0)
    obs = env.reset()
    k = env.world.max_degree
    bad = torch.tensor([k, k + 1, -1])
    with pytest.raises(ValueError, match=r"2 invalid navigation actions: env 1: action .*env 2: action -1"):
        env.step(bad)
    masked = int(torch.nonzero(~obs["cand_mask"][0]).flatten()[0]) if not obs["cand_mask"][0].all() else None
    with pytest.raises(ValueError, match="expected 3 actions"):
        env.step(torch.zeros(2, dtype=torch.int64))
    lenient = make_env(dataset, "train", num_envs=3, seed=0, validate_actions=False)
    lenient.reset()
    _, _, terminated, _, _ = lenient.step(bad)
    assert terminated.tolist() == [True, True, True]  # invalid actions count as STOP
    if masked is not None:
        with pytest.raises(ValueError, match="env 0"):
            env.step(torch.tensor([masked, k, k]))


def test_step_before_reset(dataset: NavDataset) -> None:
    with pytest.raises(RuntimeError, match="reset"):
        make_env(dataset).step(torch.zeros(4, dtype=torch.int64))


def test_seeded_episode_order(dataset: NavDataset) -> None:
    def first_episodes(seed: int) -> list[int]:
        env = make_env(dataset, "train", num_envs=2, seed=seed)
        env.reset()
        order = []
        for _ in range(12):
            order += env._episode.tolist()
            env.step(torch.full((2,), env.world.max_degree))
        return order

    assert first_episodes(1) == first_episodes(1)
    assert first_episodes(1) != first_episodes(2)
    # The shuffled stream cycles over every instruction before repeating one.
    env = make_env(dataset, "train", num_envs=1, seed=4)
    env.reset()
    seen = [int(env._episode)]
    for _ in range(env.num_episodes - 1):
        env.step(torch.tensor([env.world.max_degree]))
        seen.append(int(env._episode))
    assert sorted(seen) == list(range(env.num_episodes))


def test_observation_content(dataset: NavDataset, data_dir: Path) -> None:
    env = make_env(dataset, "train", num_envs=4, seed=2, angle_feature_size=8)
    obs = env.reset()
    k, d = env.world.max_degree, FEATURE_DIM
    assert obs["cand_feats"].shape == (4, k + 1, d + 8) and obs["pano_feats"].shape == (4, 36, d + 8)
    assert all(v.device.type == "cpu" for v in obs.values())
    assert obs["cand_feats"].dtype == torch.float32 and obs["instr_ids"].dtype == torch.int64
    for key, space in env.single_observation_space.spaces.items():
        assert space.contains(obs[key][0].numpy()), key
    assert env.single_action_space.n == k + 1
    features = load_features_hdf5(data_dir / "features" / "random.hdf5")
    vocab = dataset.vocab()
    row = 1
    vp_global, heading = int(env._vp[row]), float(env._heading[row])
    graph, vp_id = _locate(env, vp_global)
    raw = features[f"{graph.scan}_{vp_id}"].astype(np.float32)
    ep = env._episode[row]
    text = next(
        e.instructions[int(i.split("_")[-1])]
        for e in env.episodes
        for i in [env.instruction_ids[ep]]
        if str(e.path_id) == i.rsplit("_", 1)[0]
    )
    assert obs["instr_ids"][row][: obs["instr_mask"][row].sum()].tolist() == vocab.encode(text, 80)
    np.testing.assert_allclose(obs["pano_feats"][row, :, :d].numpy(), raw, atol=1e-3)
    np.testing.assert_allclose(obs["pano_feats"][row, 0, d:].numpy(), [
        math.sin(-heading), math.cos(-heading), math.sin(-math.pi / 6), math.cos(-math.pi / 6)] * 2, atol=1e-5)  # fmt: skip
    neighbours = graph.neighbours(graph.index[vp_id])
    assert obs["cand_mask"][row].tolist() == [True] * len(neighbours) + [False] * (k - len(neighbours)) + [
        True
    ]
    for c, j in enumerate(neighbours):
        delta = graph.positions[j] - graph.positions[graph.index[vp_id]]
        h, e = math.atan2(delta[0], delta[1]), math.atan2(delta[2], math.hypot(delta[0], delta[1]))
        np.testing.assert_allclose(obs["cand_feats"][row, c, :d].numpy(), raw[nearest_view(h, e)], atol=1e-3)
        np.testing.assert_allclose(
            obs["cand_feats"][row, c, d : d + 4].numpy(),
            [math.sin(h - heading), math.cos(h - heading), math.sin(e), math.cos(e)],
            atol=1e-5,
        )
    assert not obs["cand_feats"][row, len(neighbours) :].any()  # padding and STOP are zero
    # After moving along candidate 0 the agent faces the edge: going back is straight behind it.
    obs, *_ = env.step(torch.zeros(4, dtype=torch.int64))
    back = graph.neighbours(neighbours[0]).index(graph.index[vp_id])
    np.testing.assert_allclose(obs["cand_feats"][row, back, d : d + 2].numpy(), [0.0, -1.0], atol=1e-5)


def _locate(env: NavVecEnv, vp_global: int):
    for s, scan in enumerate(env.world.scans):
        lo, hi = env.world.scan_offset[s], env.world.scan_offset[s + 1]
        if lo <= vp_global < hi:
            graph = env.graphs[scan]
            return graph, graph.viewpoints[vp_global - lo]
    raise AssertionError(vp_global)


def test_teacher_action_follows_shortest_path(dataset: NavDataset) -> None:
    env = make_env(dataset, "val_seen", num_envs=2, seed=0, oracle=True)
    obs = env.reset()
    for _ in range(20):
        for row in range(2):
            graph, vp = _locate(env, int(env._vp[row]))
            _, goal = _locate(env, int(env._goal[row]))
            if vp == goal:
                assert obs["teacher_action"][row] == env.world.max_degree
            else:
                nxt = graph.shortest_path(vp, goal)[1]
                assert graph.neighbours(graph.index[vp])[int(obs["teacher_action"][row])] == graph.index[nxt]
            assert obs["distance"][row].item() == pytest.approx(graph.distance(vp, goal), abs=1e-5)
        obs = env.step(obs["teacher_action"])[0]


def test_feature_sources(dataset: NavDataset, data_dir: Path) -> None:
    by_name = make_env(dataset, "val_unseen", features="random")
    keys = NavDataset.viewpoint_keys(by_name.graphs.values())
    table = load_features_hdf5(data_dir / "features" / "random.hdf5", keys)
    by_map = make_env(dataset, "val_unseen", features=table)
    by_tensor = make_env(dataset, "val_unseen", features=torch.from_numpy(np.stack([table[k] for k in keys])))
    half = make_env(dataset, "val_unseen", features="random", feature_dtype=torch.float16)
    reference = by_name.reset(seed=0)
    for env in (by_map, by_tensor, half):
        obs = env.reset(seed=0)
        torch.testing.assert_close(obs["pano_feats"], reference["pano_feats"], atol=1e-3, rtol=0)
    with pytest.raises(NavDataError, match=r"expected shape \[\d+, 36, D\]"):
        make_env(dataset, "val_unseen", features=torch.zeros(3, 36, 4))
    del table[keys[2]]
    with pytest.raises(NavDataError, match=keys[2]):
        make_env(dataset, "val_unseen", features=table)


def test_constructor_errors(dataset: NavDataset) -> None:
    with pytest.raises(ValueError, match="angle_feature_size"):
        make_env(dataset, angle_feature_size=6)
    with pytest.raises(ValueError, match="max_degree"):
        make_env(dataset, max_degree=1)
    with pytest.raises(ValueError, match="move_reward"):
        make_env(dataset, move_reward="dense")
    with pytest.raises(ValueError, match="observation must be one of"):
        make_env(dataset, observation="pixels")
    with (
        pytest.raises(ValueError, match="CUDA is not available") if not torch.cuda.is_available() else _noop()
    ):
        NavVecEnv(dataset, "train", 2, features="random", device="cuda")
    with pytest.raises(FileNotFoundError, match="split 'test'"):
        make_env(dataset, "test")
    env = make_env(dataset, "train", num_envs=2, max_degree=12)
    assert env.reset()["cand_mask"].shape == (2, 13)


def _noop():
    import contextlib

    return contextlib.nullcontext()


def test_episode_list_split_and_trajectory_format(dataset: NavDataset) -> None:
    episodes = dataset.episodes("val_seen")[:1]
    env = NavVecEnv(dataset, episodes, 2, features="random", device="cpu", sequential=True, oracle=True)
    records = run_policy(env, lambda obs: obs["teacher_action"])
    assert len(records) == len(episodes[0].instructions)
    first = records[0]["trajectory"][0]
    assert (
        first[0] == episodes[0].path[0] and first[1] == pytest.approx(episodes[0].heading) and first[2] == 0.0
    )
    with pytest.raises(RuntimeError, match="record_trajectories"):
        make_env(dataset, "train").trajectories()


def test_rows_without_an_episode_from_reset_stay_idle(dataset: NavDataset) -> None:
    episodes = dataset.episodes("val_seen")[:1]
    count = len(episodes[0].instructions)
    env = NavVecEnv(dataset, episodes, count + 2, features="random", device="cpu", sequential=True)
    env.reset()
    assert env.active.tolist() == [True] * count + [False, False]
    stop = torch.full((env.num_envs,), env.world.max_degree)
    _, _, terminated, truncated, _ = env.step(stop)  # validates actions: idle rows must not count
    assert terminated.tolist() == [True] * count + [False, False] and not truncated.any()
    assert sorted(r["instr_id"] for r in env.trajectories()) == sorted(env.instruction_ids)


def test_world_builder_tiny_preset(tiny_world: Path) -> None:
    dataset = NavDataset(tiny_world)
    episodes = dataset.episodes("val_seen")
    scans = sorted({ep.scan for ep in episodes})
    count = sum(dataset.graph(s).num_viewpoints for s in scans)
    env = NavVecEnv(
        dataset,
        "val_seen",
        4,
        features=torch.randn(count, 36, 16),
        device="cpu",
        sequential=True,
        oracle=True,
    )
    records = run_policy(env, lambda obs: obs["teacher_action"])
    predictions = {r["instr_id"]: [p[0] for p in r["trajectory"]] for r in records}
    summary, _ = evaluate_split(dataset, "val_seen", predictions)
    assert summary["sr"] == summary["spl"] == summary["ndtw"] == 1.0


# -- index observations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "num_envs", "sequential", "options"),
    [
        ("train", 6, False, {}),
        ("train", 4, False, {"angle_feature_size": 8, "feature_dtype": torch.float16, "move_reward": "sign"}),
        ("val_unseen", 5, True, {"observe_pano": False, "max_steps": 4}),
        ("val_seen", 3, True, {"validate_actions": False}),
    ],
)
def test_indices_mode_reproduces_features_mode(
    dataset: NavDataset, split: str, num_envs: int, sequential: bool, options: dict
) -> None:
    """Gathering from index observations gives the features observations bit for bit, final ones too."""
    features, indices = (
        make_env(dataset, split, num_envs, sequential=sequential, observation=mode, seed=4, **options)
        for mode in ("features", "indices")
    )
    obs, index_obs = features.reset(), indices.reset()
    assert set(index_obs) - set(obs) == (
        {"cand_view", "cand_angles", "pano_index", "heading"}
        if features.observe_pano
        else {"cand_view", "cand_angles"}
    )
    assert_identical(obs, indices.feature_table.materialise(index_obs), "reset")
    generator = torch.Generator().manual_seed(5)
    finished = 0
    for t in range(40):
        actions = random_actions(obs["cand_mask"], generator, stop_prob=0.25)
        if options.get("validate_actions") is False and t % 3 == 0:
            actions[0] = features.world.max_degree + 3  # invalid: counts as STOP in both
        obs, reward, terminated, truncated, info = features.step(actions)
        index_obs, *rest, index_info = indices.step(actions)
        torch.testing.assert_close(list(rest), [reward, terminated, truncated], rtol=0, atol=0)
        assert_identical(obs, indices.feature_table.materialise(index_obs), f"step {t}")
        assert_identical(
            info.pop("final_obs"),
            indices.feature_table.materialise(index_info.pop("final_obs")),
            f"final {t}",
        )
        assert_identical(info, index_info, f"info {t}")
        finished += int((terminated | truncated).sum())
        if features.all_done:
            break
    assert finished > num_envs  # episodes ended and restarted along the way


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], where: str) -> None:
    assert a.keys() == b.keys(), where
    for key, value in a.items():
        assert value.dtype == b[key].dtype and torch.equal(value, b[key]), f"{where}: {key}"


def test_index_observation_content(dataset: NavDataset) -> None:
    env = make_env(dataset, "train", num_envs=5, seed=2, observation="indices")
    obs = env.reset()
    for _ in range(3):
        for key, space in env.single_observation_space.spaces.items():
            assert all(space.contains(obs[key][row].numpy()) for row in range(5)), key
        assert all(value.is_contiguous() for value in obs.values())
        vp = obs["pano_index"]
        torch.testing.assert_close(vp, env._vp)
        torch.testing.assert_close(obs["heading"], torch.stack([env._heading.sin(), env._heading.cos()], 1))
        masked = ~obs["cand_mask"]
        masked[:, -1] = True  # STOP has no view either
        assert (obs["cand_view"][masked] == -1).all() and not obs["cand_angles"][masked].any()
        views = obs["cand_view"][~masked]
        assert (views // 36 == vp[:, None].expand_as(masked)[~masked]).all()
        assert (views % 36 == env.world.edge_view[vp][~masked[:, :-1]]).all()
        obs = env.step(random_actions(obs["cand_mask"], torch.Generator().manual_seed(1), stop_prob=0.0))[0]


def test_feature_table() -> None:
    features = torch.randn(3, 36, 5)
    table = FeatureTable(features, angle_feature_size=8, dtype=torch.float16)
    assert table.num_viewpoints == 3 and table.table.dtype == torch.float16
    assert not table.state_dict()  # the table is not part of a policy checkpoint
    rows = torch.tensor([[0, 37, -1], [107, -1, 5]])
    gathered = table.gather(rows)
    assert gathered.shape == (2, 3, 13) and gathered.dtype == torch.float32
    assert not gathered[..., 5:].any() and not gathered[0, 2].any() and not gathered[1, 1].any()
    torch.testing.assert_close(table.visual(rows)[1, 0], features[2, 35].half().float())
    heading = torch.tensor([0.3, -2.0])
    sincos = torch.stack([heading.sin(), heading.cos()], 1)
    rel = torch.tensor(VIEW_HEADINGS, dtype=torch.float32) - heading[:, None]
    expected = angle_features(rel, torch.tensor(VIEW_ELEVATIONS, dtype=torch.float32).expand_as(rel), 8)
    torch.testing.assert_close(table.pano_angles(sincos), expected, atol=1e-6, rtol=0)
    pano = table.pano_feats(torch.tensor([2, 0]), sincos)
    torch.testing.assert_close(pano[0, :, :5], features[2].half().float())
    torch.testing.assert_close(pano[:, :, 5:], table.pano_angles(sincos))
    with pytest.raises(KeyError, match="cand_angles"):
        table.materialise({"cand_view": rows})
    with pytest.raises(ValueError, match=r"\[V, 36, D\]"):
        FeatureTable(torch.zeros(3, 12, 5))


def test_trajectories_are_cleared_incrementally(dataset: NavDataset) -> None:
    env = make_env(dataset, "train", num_envs=3, seed=1, record_trajectories=True, observation="indices")
    obs, generator, seen = env.reset(), torch.Generator().manual_seed(2), []
    for t in range(30):
        obs = env.step(random_actions(obs["cand_mask"], generator, stop_prob=0.3))[0]
        if t % 7 == 6:
            seen += env.trajectories(clear=True)
    assert env.trajectories(clear=False) == env.trajectories()  # nothing is lost without clearing
    seen += env.trajectories(clear=True)
    assert env.trajectories() == [] and len(seen) >= 6
    starts = {ep.instr_id(k): ep.path[0] for ep in env.episodes for k in range(len(ep.instructions))}
    assert all(r["trajectory"][0][0] == starts[r["instr_id"]] for r in seen)
