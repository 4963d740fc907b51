"""Filtered synthesis: the follower's walk of each synthetic instruction decides whether the pair is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.sim.env import NavVecEnv
from lodestar.pretrain.synthesis import SynthesisConfig, store_files, synthesize
from lodestar.pretrain.synthesis_filter import SCORE_FIELD, filter_split, load_scores, walk_split
from lodestar.replay.trajectory import TrajectoryStore
from tests.follower_fixtures import ANGLE_DIM, FEATURE_NAME, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.speaker_fixtures import copy_world, tiny_bundle

SPLIT = "synthetic"


@pytest.fixture(scope="module")
def labelled(random_feature_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny world with a synthetic split of 12 paths x 2 sampled instructions."""
    root = copy_world(random_feature_world, tmp_path_factory.mktemp("filter") / "world")
    speaker = root.parent / "speaker.pt"
    tiny_bundle(root, seed=1).save(speaker)
    config = SynthesisConfig(
        paths=12, decodes_per_path=2, max_len=12, batch_size=16, chunk_size=8, device="cpu"
    )
    synthesize(root, speaker, config, show_progress=False)
    return root


@pytest.fixture
def world(labelled: Path, tmp_path: Path) -> Path:
    return copy_world(labelled, tmp_path / "world")


def follower(root: Path) -> FollowerBundle:
    """An untrained small follower reading the world's ``random`` features."""
    vocab = NavDataset(root).vocab()
    torch.manual_seed(0)
    model = Follower(
        len(vocab), 16, ANGLE_DIM, FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64), vocab.pad_id
    )
    return FollowerBundle(model, vocab, FEATURE_NAME, ANGLE_DIM, 80, {"iteration": 0})


def two_paths_far_apart(episodes: list[Episode], dataset: NavDataset) -> tuple[Episode, Episode]:
    """Two episodes of one scan whose goals are the farthest apart."""
    best: tuple[float, Episode, Episode] | None = None
    for a in episodes:
        for b in episodes:
            if a is not b and a.scan == b.scan:
                graph = dataset.graph(a.scan)
                d = float(graph.distances[graph.index[a.path[-1]], graph.index[b.path[-1]]])
                if best is None or d > best[0]:
                    best = (d, a, b)
    assert best is not None and best[0] > 6.0, "the tiny world should have two far-apart synthetic goals"
    return best[1], best[2]


class ReadingWalker:
    """A follower stub that understands instructions perfectly: it walks, from the episode's start, the
    shortest path to the goal of the path the instruction describes. ``owner`` maps an instruction id
    to the path its instruction really belongs to (by default its own)."""

    __name__ = "reading"

    def __init__(self, dataset: NavDataset, owner: dict[str, Episode] | None = None) -> None:
        self.dataset, self.owner, self.walked = dataset, owner or {}, 0

    def __call__(self, env: NavVecEnv) -> list[dict[str, Any]]:
        records = []
        for ep in env.episodes:
            for k in range(len(ep.instructions)):
                iid = ep.instr_id(k)
                goal = self.owner.get(iid, ep).path[-1]
                route = self.dataset.graph(ep.scan).shortest_path(ep.path[0], goal)
                records.append({"instr_id": iid, "trajectory": [[vp, 0.0, 0.0] for vp in route]})
        self.walked += len(records)
        return records


def test_keeps_a_pair_walked_exactly_and_drops_an_instruction_of_another_path(world: Path) -> None:
    dataset = NavDataset(world)
    episodes = dataset.episodes(SPLIT)
    mine, other = two_paths_far_apart(episodes, dataset)
    foreign = mine.instr_id(1)  # its instruction describes `other`: the reader walks to other's goal
    walker = ReadingWalker(dataset, {foreign: other})

    report = filter_split(world, SPLIT, "kept", follower(world), 0.5, walker=walker)

    assert report.scores[mine.instr_id(0)] == pytest.approx(1.0)  # walked exactly
    assert report.scores[foreign] < 0.5
    assert report.pairs == 2 * len(episodes) and report.kept.pairs == report.pairs - 1
    assert report.kept_fraction == pytest.approx((report.pairs - 1) / report.pairs)
    assert report.dropped.pairs == 1 and report.dropped.ndtw == pytest.approx(report.scores[foreign])
    kept = {str(ep.path_id): ep for ep in NavDataset(world).episodes("kept")}
    assert kept[str(mine.path_id)].instructions == [mine.instructions[0]]  # the foreign one is gone
    assert len(kept) == len(episodes)
    assert "dropped" in report.table() and "kept" in report.table()


def test_scores_round_trip_through_the_split_and_the_trajectory_store(world: Path) -> None:
    dataset = NavDataset(world)
    episodes = dataset.episodes(SPLIT)
    a, b = two_paths_far_apart(episodes, dataset)
    # Both instructions of `a` describe `b`: the whole path leaves the kept split.
    walker = ReadingWalker(dataset, {a.instr_id(0): b, a.instr_id(1): b})
    report = filter_split(world, SPLIT, "kept", follower(world), 0.5, walker=walker)

    stored = load_scores(world, "kept")
    assert str(a.path_id) not in stored and len(stored) == len(episodes) - 1
    for ep in NavDataset(world).episodes("kept"):
        assert len(stored[str(ep.path_id)]) == len(ep.instructions)
        source = next(s for s in episodes if s.path_id == ep.path_id)
        assert stored[str(ep.path_id)] == [
            report.scores[source.instr_id(k)] for k in range(len(ep.instructions))
        ]

    store_path, meta_path = store_files(world, "kept")
    meta = json.loads(meta_path.read_text())
    store, source_store = TrajectoryStore.load(store_path), TrajectoryStore.load(store_files(world, SPLIT)[0])
    source_meta = json.loads(store_files(world, SPLIT)[1].read_text())
    assert len(store) == len(meta["instr_ids"]) == report.kept.pairs == meta["instructions"]
    assert set(meta["filter"]["scores"]) == set(report.scores)  # every source pair, kept or dropped
    rows = [source_meta["instr_ids"].index(iid) for iid in meta["source_instr_ids"]]
    kept, original = store.get(list(range(len(store)))), source_store.get(rows)
    assert torch.equal(kept.instruction, original.instruction) and torch.equal(
        kept.viewpoints, original.viewpoints
    )
    assert torch.equal(kept.actions, original.actions)
    scores = torch.tensor([report.scores[iid] for iid in meta["source_instr_ids"]])
    per_step = kept.extras[SCORE_FIELD]
    assert torch.allclose(per_step[kept.step_mask], scores.unsqueeze(1).expand_as(per_step)[kept.step_mask])


def test_a_finished_filter_is_reused_and_a_different_one_is_refused(world: Path) -> None:
    dataset = NavDataset(world)
    bundle = follower(world)
    walker = ReadingWalker(dataset)
    first = filter_split(world, SPLIT, "kept", bundle, 0.5, walker=walker)
    walked = walker.walked
    again = filter_split(world, SPLIT, "kept", bundle, 0.5, walker=walker)
    assert walker.walked == walked and again.scores == first.scores and again.kept == first.kept
    with pytest.raises(FileExistsError, match="threshold 0.5"):
        filter_split(world, SPLIT, "kept", bundle, 0.7, walker=walker)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        filter_split(world, SPLIT, "other", bundle, 1.5, walker=walker)
    with pytest.raises(ValueError, match="its own name"):
        filter_split(world, SPLIT, SPLIT, bundle, 0.5, walker=walker)


def test_the_follower_walks_every_pair_from_its_start_and_scores_match_evaluation(world: Path) -> None:
    dataset = NavDataset(world)
    bundle = follower(world)
    walks = walk_split(dataset, SPLIT, bundle, num_envs=5)
    episodes = dataset.episodes(SPLIT)
    assert set(walks) == {ep.instr_id(k) for ep in episodes for k in range(len(ep.instructions))}
    for ep in episodes:
        assert all(walks[ep.instr_id(k)][0] == ep.path[0] for k in range(len(ep.instructions)))

    report = filter_split(world, SPLIT, "kept", bundle, 0.3, num_envs=5)
    env = make_eval_env(dataset, SPLIT, None, 7, FEATURE_NAME, ANGLE_DIM, 80, "cpu")
    evaluation = evaluate_follower(bundle.model, env)
    assert report.scores == pytest.approx({iid: m["ndtw"] for iid, m in evaluation.per_instruction.items()})
    assert report.kept.pairs == sum(s >= 0.3 for s in report.scores.values())
