"""The ``nav-throughput`` benchmark: the per-episode reference behind the trainer's env interface gives
the trainer and the evaluator the same numbers as ``NavVecEnv``, and the benchmark reports both rows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import benchmark
import pytest
import torch

from benchmarks import nav_throughput
from benchmarks.nav_reference_env import ReferenceVecEnv
from benchmarks.nav_sim import random_actions
from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.finetune import make_train_env
from lodestar.agents.vln.finetune_config import FinetuneConfig
from lodestar.agents.vln.follower import Follower
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.runtime.config import load_config
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, TINY_MODEL, one_torch_thread  # noqa: F401 (autouse fixture)

# Config overrides of a trainer small enough for a test (dropout on: the benchmark must keep each
# trainer's random streams apart when it alternates them).
SMALL = [
    f"data.angle_feature_size={ANGLE_DIM}",
    "device=cpu",
    "eval_num_envs=4",
    "learn.teacher_envs=2",
    "learn.learner_envs=3",
    "learn.rollout_steps=6",
    "dagger.min_episodes=2",
    "dagger.batch_size=4",
    "env.max_steps=6",
    *TINY_MODEL,
    "model.dropout=0.1",
    "model.feature_dropout=0.2",
]


def as_options(overrides: list[str]) -> dict[str, str]:
    """Config overrides as benchmark options (top-level config keys as ``config.<key>``)."""
    pairs = (o.split("=", 1) for o in overrides)
    return {(key if "." in key else f"config.{key}"): value for key, value in pairs}


@pytest.fixture(scope="module")
def dataset(random_feature_world: Path) -> NavDataset:
    return NavDataset(random_feature_world)


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], where: str) -> None:
    """Same keys, dtypes, shapes and devices; equal values (floats within the last bits of float32)."""
    assert got.keys() == want.keys(), where
    for key, value in want.items():
        other = got[key]
        assert (other.dtype, other.shape, other.device) == (value.dtype, value.shape, value.device), (
            where,
            key,
        )
        if value.is_floating_point():
            torch.testing.assert_close(other, value, rtol=0, atol=1e-5, msg=f"{where}: {key}")
        else:
            assert torch.equal(other, value), (where, key)


def step_both(envs: list[Any], obs: dict[str, torch.Tensor], generator: torch.Generator, where: str) -> Any:
    """One random valid step of both envs; checks that they return the same everything."""
    actions = random_actions(obs["cand_mask"], generator)
    (ours, theirs) = (env.step(actions) for env in envs)
    assert_same_tensors(theirs[0], ours[0], f"{where} obs")
    assert_same_tensors(
        dict(zip("rtu", theirs[1:4], strict=True)), dict(zip("rtu", ours[1:4], strict=True)), where
    )
    info, ref_info = ours[4], theirs[4]
    assert ref_info.keys() == info.keys(), where
    assert_same_tensors(ref_info["final_obs"], info["final_obs"], f"{where} final_obs")
    assert_same_tensors(
        {k: v for k, v in ref_info.items() if k != "final_obs"},
        {k: v for k, v in info.items() if k != "final_obs"},
        f"{where} info",
    )
    return ours


@pytest.mark.parametrize("pano", [True, False])
def test_reference_env_presents_the_trainer_env(dataset: NavDataset, pano: bool) -> None:
    config = load_config(FinetuneConfig, None, [*SMALL, f"model.pano={'mean' if pano else 'none'}"])
    ours = make_train_env(dataset, "train", 5, config, "cpu", 3, features=FEATURE_NAME)
    theirs = make_train_env(
        dataset, "train", 5, config, "cpu", 3, features=FEATURE_NAME, env_factory=ReferenceVecEnv
    )
    assert isinstance(theirs, ReferenceVecEnv) and theirs.observe_pano == pano and theirs.oracle
    assert theirs.single_observation_space == ours.single_observation_space
    assert theirs.single_action_space == ours.single_action_space
    assert theirs.instruction_ids == ours.instruction_ids and theirs.num_episodes == ours.num_episodes
    assert torch.equal(theirs.feature_table.table, ours.feature_table.table)
    obs = ours.reset()
    assert_same_tensors(theirs.reset(), obs, "reset")
    generator, ends = torch.Generator().manual_seed(0), 0
    for t in range(40):
        obs, _, terminated, truncated, _ = step_both([ours, theirs], obs, generator, f"step {t}")
        ends += int((terminated | truncated).sum())
    assert ends > 10, "the test needs many episode ends (restarts from the shuffled stream)"


def test_reference_env_refuses_what_it_cannot_present(dataset: NavDataset) -> None:
    with pytest.raises(ValueError, match="index observations only"):
        ReferenceVecEnv(dataset, "train", 2, features=FEATURE_NAME, observation="features")
    with pytest.raises(ValueError, match="one row per instruction"):
        ReferenceVecEnv(dataset, "val_unseen", 10_000, features=FEATURE_NAME, sequential=True)
    env = ReferenceVecEnv(dataset, "train", 2, features=FEATURE_NAME)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(2, dtype=torch.int64))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid navigation actions"):
        env.step(torch.full((2,), env.max_degree + 1))


def test_sequential_evaluation_is_the_same_on_both_simulators(dataset: NavDataset) -> None:
    args = (dataset, "val_unseen", None, 4, FEATURE_NAME, ANGLE_DIM, 80, "cpu")
    ours, theirs = make_eval_env(*args), make_eval_env(*args, env_factory=ReferenceVecEnv)
    obs = ours.reset(seed=0)
    assert_same_tensors(theirs.reset(seed=0), obs, "reset")
    generator, t = torch.Generator().manual_seed(1), 0
    while not ours.all_done:
        assert not theirs.all_done
        obs = step_both([ours, theirs], obs, generator, f"step {t}")[0]
        t += 1
    assert theirs.all_done
    walks = [
        [(r["instr_id"], [p[0] for p in r["trajectory"]]) for r in env.trajectories()]
        for env in (ours, theirs)
    ]
    assert walks[0] == walks[1] and len(walks[0]) == ours.num_episodes

    vocab = dataset.vocab()
    config = load_config(FinetuneConfig, None, SMALL).model
    torch.manual_seed(0)
    model = Follower(len(vocab), ours.feature_dim, ANGLE_DIM, config, vocab.pad_id)
    got, want = evaluate_follower(model, theirs), evaluate_follower(model, ours)
    assert [r["instr_id"] for r in got.records] == [r["instr_id"] for r in want.records]
    assert [[p[0] for p in r["trajectory"]] for r in got.records] == [
        [p[0] for p in r["trajectory"]] for r in want.records
    ]
    assert got.summary is not None and want.summary is not None
    for key, value in want.summary.items():
        assert math.isclose(got.summary[key], value, rel_tol=1e-9), key


def test_trainer_losses_and_validation_agree_on_both_simulators(dataset: NavDataset, tmp_path: Path) -> None:
    """The same seeds give the same losses, episodes and validation scores: the benchmark compares
    the same work. The trainers alternate, as the benchmark runs them."""
    options = {"features": FEATURE_NAME, **as_options(SMALL)}
    setting = nav_throughput.parse_options(True, options)
    turns, trainers = nav_throughput.Turns(), {}
    for name, factory in (("ours", NavVecEnv), ("reference", ReferenceVecEnv)):
        trainers[name] = nav_throughput.make_trainer(dataset.root, setting, options, tmp_path / name, factory)
        turns.keep(name)
    assert all(isinstance(r.env, ReferenceVecEnv) for r in trainers["reference"].runners.values())
    assert isinstance(trainers["reference"].eval_envs["val_unseen"], ReferenceVecEnv)
    metrics: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
    for _ in range(4):
        for name, trainer in trainers.items():
            with turns.turn(name):
                metrics[name].append(trainer.train_step())
    assert "dagger" in metrics["ours"][-1], "the test needs the DAgger replay loss too"
    for ours, theirs in zip(metrics["ours"], metrics["reference"], strict=True):
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            assert math.isclose(theirs[key], value, rel_tol=1e-4, abs_tol=1e-5), key
    assert trainers["ours"].episodes_done == trainers["reference"].episodes_done > 0
    scores = {name: trainer.validate() for name, trainer in trainers.items()}
    assert scores["ours"] and scores["ours"].keys() == scores["reference"].keys()
    for key, value in scores["ours"].items():
        assert math.isclose(scores["reference"][key], value, rel_tol=1e-6), key


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        nav_throughput.parse_options(True, {"iteration": "3"})
    with pytest.raises(ValueError, match=">= 1"):
        nav_throughput.parse_options(True, {"iterations": "0"})
    setting = nav_throughput.parse_options(False, {"learn.learner_envs": "64", "config.device": "cpu"})
    assert setting.overrides == ["learn.learner_envs=64", "device=cpu"] and setting.iterations == 30


def test_quick_benchmark_reports_both_rows(
    random_feature_world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = [f"{key}={value}" for key, value in as_options(SMALL).items()]
    argv = ["nav-throughput", "--quick", f"data={random_feature_world}", f"features={FEATURE_NAME}", *small]
    assert benchmark.main(argv) == 0
    records = [
        json.loads(line[6:]) for line in capsys.readouterr().out.splitlines() if line.startswith("BENCH ")
    ]
    assert [r["metric"].split(" (")[0] for r in records] == [
        "fine-tuning episodes/s",
        "evaluation episodes/s",
    ]
    for record in records:
        assert record["benchmark"] == "nav-throughput" and record["reference"] == nav_throughput.REFERENCE
        assert record["value"] > 0 and record["reference_value"] > 0 and record["ratio"] > 0
        assert record["target"] is None
