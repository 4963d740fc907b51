"""The follower: inputs identical to the simulator's, masked scoring, memory bookkeeping, overfitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lodestar.agents.rollout import RolloutCollector
from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.follower import (
    NEG_INF,
    Follower,
    FollowerBundle,
    FollowerConfig,
    FollowerPolicy,
    load_follower,
)
from lodestar.agents.vln.observations import step_inputs
from lodestar.agents.vln.rollout_replay import replay_rollout
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.runtime.checkpoint import CheckpointError
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, one_torch_thread  # noqa: F401 (autouse fixture)

TINY = FollowerConfig(
    hidden_dim=32, num_heads=2, ffn_dim=64, text_layers=1, cross_layers=1, dropout=0.0, feature_dropout=0.0
)


@pytest.fixture(scope="module")
def dataset(random_feature_world: Path) -> NavDataset:
    return NavDataset(random_feature_world)


def make_env(dataset: NavDataset, split: str = "train", num_envs: int = 4, **kwargs) -> NavVecEnv:
    return NavVecEnv(
        dataset, split, num_envs, features=FEATURE_NAME, angle_feature_size=ANGLE_DIM, device="cpu", **kwargs
    )


def make_model(dataset: NavDataset, config: FollowerConfig = TINY, seed: int = 0) -> Follower:
    torch.manual_seed(seed)
    vocab = dataset.vocab()
    return Follower(len(vocab), 16, ANGLE_DIM, config, vocab.pad_id)


def test_path_inputs_match_the_simulator_along_reference_paths(dataset):
    env = make_env(dataset, sequential=True, num_envs=3, oracle=True)
    episodes = dataset.episodes("train")
    featurizer = PathFeaturizer.from_dataset(
        dataset, sorted({ep.scan for ep in episodes}), FEATURE_NAME, "cpu", ANGLE_DIM
    )
    assert featurizer.world.viewpoint_ids == env.world.viewpoint_ids
    traj = featurizer(featurizer.index_episodes(episodes[:1]))
    inputs = step_inputs(featurizer, traj)
    obs = env.reset()  # rows 0-2: the three instructions of episode 0
    for t in range(len(episodes[0].path)):
        torch.testing.assert_close(obs["cand_feats"][0], inputs.cand_feats[0, t], atol=1e-5, rtol=0)
        torch.testing.assert_close(obs["pano_feats"][0], inputs.pano_feats[0, t], atol=1e-5, rtol=0)
        assert torch.equal(obs["cand_mask"][0], inputs.cand_mask[0, t])
        assert int(obs["teacher_action"][0]) == int(traj.actions[0, t])
        obs, *_ = env.step(obs["teacher_action"])


@pytest.mark.parametrize("pano", ["mean", "heading", "full", "none"])
def test_logits_are_masked_and_policy_actions_valid(dataset, pano):
    env = make_env(dataset, num_envs=6, seed=1, oracle=True)
    model = make_model(dataset, FollowerConfig(**{**TINY.__dict__, "pano": pano}))
    obs = env.reset()
    out, memory = model.observe(None, obs)
    assert out.logits.shape == obs["cand_mask"].shape
    assert bool((out.logits[~obs["cand_mask"]] == NEG_INF).all())
    assert bool((out.logits[obs["cand_mask"]] > NEG_INF / 2).all())
    assert memory.state.shape == (6, TINY.hidden_dim) and out.value.shape == (6,)
    policy = FollowerPolicy(model, 6, "sample", generator=torch.Generator().manual_seed(0))
    collector = RolloutCollector(env, policy, on_episode_end=policy.on_episode_end)
    collector.reset(seed=1)
    for _ in range(20):  # the env raises on an invalid action
        transition = collector.step()
        assert transition.extras["teacher_action"].shape == (6,)


def test_teacher_rows_and_dagger_mixture_execute_the_teacher(dataset):
    env = make_env(dataset, num_envs=4, seed=2, oracle=True)
    model = make_model(dataset)
    teacher_rows = torch.tensor([True, False, True, False])
    policy = FollowerPolicy(model, 4, "sample", teacher_rows, generator=torch.Generator().manual_seed(0))
    obs = env.reset()
    action, extras = policy(obs)
    assert torch.equal(action[teacher_rows], obs["teacher_action"][teacher_rows])
    assert torch.equal(action[~teacher_rows], extras["learner_action"][~teacher_rows])
    always = FollowerPolicy(model, 4, "sample", teacher_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(always(obs)[0], obs["teacher_action"])
    with pytest.raises(ValueError, match="teacher_prob"):
        FollowerPolicy(model, 4, teacher_prob=1.5)
    # Without the oracle option the env has no teacher: the learner acts, teacher forcing is an error.
    plain = make_env(dataset, num_envs=4, seed=2).reset()
    action, extras = FollowerPolicy(model, 4, "greedy")(plain)
    assert torch.equal(action, extras["learner_action"]) and "teacher_action" not in extras
    with pytest.raises(ValueError, match="oracle=True"):
        FollowerPolicy(model, 4, "sample", teacher_rows)(plain)


def test_learner_replay_reproduces_the_collected_logits(dataset):
    """Memory restarts at episode ends and carries across rollouts exactly as during collection."""
    env = make_env(dataset, num_envs=5, seed=3, max_steps=4)  # short episodes: many boundaries
    model = make_model(dataset).eval()
    policy = FollowerPolicy(model, 5, "sample", generator=torch.Generator().manual_seed(1))
    seen_logits = []
    original = model.observe

    def recording_observe(*args, **kwargs):
        out, memory = original(*args, **kwargs)
        seen_logits.append(out.logits)
        return out, memory

    collector = RolloutCollector(env, policy, on_episode_end=policy.on_episode_end)
    collector.reset(seed=3)
    collector.collect(3)  # the second rollout starts mid-episode for some rows
    seen_logits.clear()
    start_memory, start_fresh = policy.memory.detach(), policy.fresh.clone()
    model.observe = recording_observe
    rollout = collector.collect(6, keep=True)
    model.observe = original
    done = rollout.terminated | rollout.truncated
    assert bool(done[:-1].any()), "the test needs episode ends inside the rollout"
    with torch.no_grad():
        replayed = replay_rollout(model, rollout, start_memory, start_fresh)
    torch.testing.assert_close(replayed.logits, torch.stack(seen_logits), atol=1e-5, rtol=1e-5)
    # After a termination the next value is 0; after a plain step it is the next step's value.
    following = (~done[:-1]).nonzero()
    t, n = following[0].tolist()
    assert replayed.next_values[t, n] == pytest.approx(float(replayed.values[t + 1, n]), abs=1e-6)
    assert bool((replayed.next_values[rollout.terminated] == 0).all())


def test_tiny_follower_overfits_a_handful_of_episodes_under_teacher_forcing(dataset):
    episodes = dataset.episodes("train")[:3]
    episodes = [type(ep)(**{**ep.__dict__, "instructions": ep.instructions[:1]}) for ep in episodes]
    featurizer = PathFeaturizer.from_dataset(
        dataset, sorted({ep.scan for ep in episodes}), FEATURE_NAME, "cpu", ANGLE_DIM
    )
    traj = featurizer(featurizer.index_episodes(episodes))
    inputs = step_inputs(featurizer, traj)
    vocab = dataset.vocab()
    tokens, mask = vocab.encode_batch([ep.instructions[0] for ep in episodes], 80)
    targets = traj.actions.masked_fill(~traj.step_mask, -100)
    model = make_model(dataset)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):  # until the teacher-forced loss is near zero (about 25 updates)
        logits, _ = model.unroll(tokens, mask, inputs.cand_feats, inputs.cand_mask, inputs.pano_feats)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if loss.item() < 0.01:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.01
    env = make_eval_env(dataset, "train", episodes, 3, FEATURE_NAME, ANGLE_DIM, 80, "cpu")
    result = evaluate_follower(model, env)
    assert result.summary["sr"] == 1.0
    assert result.summary["spl"] == pytest.approx(1.0)


def test_bundle_round_trip_and_clear_errors(dataset, tmp_path):
    model = make_model(dataset)
    bundle = FollowerBundle(model, dataset.vocab(), FEATURE_NAME, ANGLE_DIM, 80, {"iteration": 3})
    bundle.save(tmp_path / "best.pt")
    loaded = load_follower(tmp_path)  # a run directory resolves to best.pt
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert loaded.info == {"iteration": 3} and loaded.vocab == dataset.vocab()
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="neither best.pt"):
        load_follower(tmp_path / "empty-run")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_follower(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not hold a follower"):
        load_follower(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="divisible"):
        FollowerConfig(hidden_dim=30, num_heads=4)
