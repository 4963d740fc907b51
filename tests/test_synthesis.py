"""Path sampling and speaker synthesis: R2R validity, sampling rules, trajectory store, resume, new houses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import synthesize as synthesize_script
import torch

from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import load_r2r
from lodestar.envs.nav.data.tokenizer import tokenize
from lodestar.envs.nav.world.episodes import PathConfig
from lodestar.pretrain.path_sampling import available_paths, check_path_rules, plan_paths, used_pairs
from lodestar.pretrain.synthesis import SynthesisConfig, store_files, synthesize, work_dir
from lodestar.replay.trajectory import TrajectoryStore
from tests.speaker_fixtures import FEATURES, add_random_features, copy_world, tiny_bundle

ROOT = Path(__file__).resolve().parent.parent
HUMAN_SPLITS = ("train", "val_seen", "val_unseen", "test")


@pytest.fixture(scope="module")
def pristine(random_feature_world: Path) -> Path:
    """The session's tiny world with random features (shared: tests write into copies of it)."""
    return random_feature_world


@pytest.fixture
def world(pristine: Path, tmp_path: Path) -> Path:
    return copy_world(pristine, tmp_path / "world")


@pytest.fixture(scope="module")
def speaker(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny speaker for the world."""
    path = tmp_path_factory.mktemp("synthesis") / "speaker.pt"
    tiny_bundle(pristine, seed=1).save(path)
    return path


def config(**overrides) -> SynthesisConfig:
    values = {"paths": 60, "max_len": 12, "batch_size": 16, "chunk_size": 16, "device": "cpu", **overrides}
    return SynthesisConfig(**values)


def human_episodes(dataset: NavDataset) -> list:
    return [ep for split in HUMAN_SPLITS for ep in dataset.episodes(split)]


# -- path sampling -------------------------------------------------------------------------------------


def test_planned_paths_follow_the_r2r_rules_and_avoid_human_pairs(world: Path) -> None:
    dataset = NavDataset(world)
    train_scans = sorted({ep.scan for ep in dataset.episodes("train")})
    graphs = [dataset.graph(s) for s in train_scans]
    human = used_pairs(human_episodes(dataset))
    plan = plan_paths(graphs, 100, seed=3, exclude=human)
    assert len(plan) == 100 and len({(p.scan, p.start, p.goal) for p in plan}) == 100
    for p in plan:
        graph = dataset.graph(p.scan)
        check_path_rules(graph, graph.shortest_path(p.start, p.goal))
        assert frozenset((p.start, p.goal)) not in human.get(p.scan, set())
        assert 0.0 <= p.heading < 2 * 3.1416
    # Houses are interleaved: the first paths visit every house.
    assert {p.scan for p in plan[: len(graphs)]} == set(train_scans)
    assert plan_paths(graphs, 100, seed=3, exclude=human) == plan
    assert plan_paths(graphs, 100, seed=4, exclude=human) != plan


def test_human_pairs_are_used_only_when_fresh_ones_run_out(world: Path) -> None:
    dataset = NavDataset(world)
    graph = dataset.graph(dataset.episodes("train")[0].scan)
    human = used_pairs(human_episodes(dataset))
    fresh, used = available_paths(graph, exclude=human[graph.scan])
    assert len(used) > 0
    everything = plan_paths([graph], len(fresh) + len(used), seed=0, exclude=human)
    taken = [frozenset((p.start, p.goal)) in human[graph.scan] for p in everything]
    first_human = taken.index(True)
    assert not any(taken[:first_human]) and all(taken[first_human:])
    with pytest.raises(ValueError, match="--new-houses"):
        plan_paths([graph], len(everything) + 1, seed=0, exclude=human)


def test_check_path_rules_rejects_bad_paths(world: Path) -> None:
    dataset = NavDataset(world)
    ep = dataset.episodes("train")[0]
    graph = dataset.graph(ep.scan)
    check_path_rules(graph, ep.path)
    with pytest.raises(ValueError, match="edges"):
        check_path_rules(graph, ep.path[:3])
    with pytest.raises(ValueError, match="m <"):
        check_path_rules(graph, ep.path, PathConfig(min_distance=1e6))


# -- synthesis -----------------------------------------------------------------------------------------


def read_outputs(world: Path, split: str = "synthetic") -> tuple[list, TrajectoryStore, dict]:
    store_path, meta_path = store_files(world, split)
    return (
        load_r2r(world / f"R2R_{split}.json"),
        TrajectoryStore.load(store_path),
        json.loads(meta_path.read_text()),
    )


def test_synthesized_split_is_valid_r2r_and_matches_the_store(world: Path, speaker: Path) -> None:
    report = synthesize(world, speaker, config(decoding="sample", decodes_per_path=2), show_progress=False)
    assert report.complete and report.paths == 60 and report.instructions == 120
    dataset = NavDataset(world)
    episodes = dataset.episodes("synthetic")  # loads and validates against the graphs
    assert len(episodes) == 60 and len({ep.path_id for ep in episodes}) == 60
    assert min(ep.path_id for ep in episodes) >= 10_000_000
    human_ids = {ep.path_id for ep in human_episodes(dataset)}
    assert not human_ids & {ep.path_id for ep in episodes}
    train_scans = {ep.scan for ep in dataset.episodes("train")}
    for ep in episodes:
        assert ep.scan in train_scans and len(ep.instructions) == 2
        check_path_rules(dataset.graph(ep.scan), ep.path)
        assert ep.distance == pytest.approx(
            dataset.graph(ep.scan).distance(ep.path[0], ep.path[-1]), abs=1e-3
        )

    _, store, meta = read_outputs(world)
    assert len(store) == 120 == len(meta["instr_ids"])
    assert meta["instr_ids"][:2] == [episodes[0].instr_id(0), episodes[0].instr_id(1)]
    featurizer = PathFeaturizer.from_dataset(dataset, meta["scans"], FEATURES)
    assert meta["stop_action"] == featurizer.max_degree
    vocab = dataset.vocab()
    batch = store.get(torch.arange(len(store)))
    for i, instr_id in enumerate(meta["instr_ids"]):
        path_id, k = instr_id.rsplit("_", 1)
        ep = episodes[(int(path_id) - 10_000_000)]
        n = int(batch.lengths[i])
        assert n == len(ep.path)
        ids = [featurizer.world.viewpoint_ids[v] for v in batch.viewpoints[i, :n].tolist()]
        assert ids == ep.path
        tokens = batch.instruction[i, : int(batch.instruction_lengths[i])].tolist()
        assert tokens[0] == vocab.bos_id and tokens[-1] == vocab.eos_id
        assert tokenize(vocab.decode(tokens[1:])) == tokenize(ep.instructions[int(k)])
        # Actions walk the path: candidate slot of the next viewpoint, then STOP.
        actions = batch.actions[i, :n].tolist()
        assert actions[-1] == meta["stop_action"]
        for t in range(n - 1):
            vp = int(batch.viewpoints[i, t])
            assert int(featurizer.world.neighbours[vp, actions[t]]) == int(batch.viewpoints[i, t + 1])
    assert not work_dir(world, "synthetic").exists()


@pytest.mark.parametrize("decoding", ["greedy", "beam"])
def test_interrupted_synthesis_resumes_without_duplicates_or_gaps(
    pristine: Path, tmp_path: Path, speaker: Path, decoding: str
) -> None:
    options = config(decoding=decoding, paths=70, chunk_size=16)
    straight = copy_world(pristine, tmp_path / "straight")
    synthesize(straight, speaker, options, show_progress=False)

    resumed = copy_world(pristine, tmp_path / "resumed")
    partial = synthesize(resumed, speaker, options, show_progress=False, max_chunks=2)
    assert not partial.complete and partial.chunks_done == 2 and partial.chunks_total == 5
    assert not (resumed / "R2R_synthetic.json").exists()
    # A half-written chunk (a temp file left by a kill) is ignored.
    (work_dir(resumed, "synthetic") / ".chunk_000002.pt.123.tmp").write_bytes(b"garbage")
    later = synthesize(resumed, speaker, options, show_progress=False)
    assert later.complete and later.instructions == 70 - 2 * 16

    a, store_a, meta_a = read_outputs(straight)
    b, store_b, meta_b = read_outputs(resumed)
    assert [ep.to_json() for ep in a] == [ep.to_json() for ep in b]
    assert len({ep.path_id for ep in b}) == 70
    assert meta_a["instr_ids"] == meta_b["instr_ids"]
    batch_a, batch_b = store_a.get(torch.arange(70)), store_b.get(torch.arange(70))
    assert torch.equal(batch_a.instruction, batch_b.instruction)
    assert torch.equal(batch_a.viewpoints, batch_b.viewpoints)


def test_existing_split_and_changed_options_are_refused(world: Path, speaker: Path) -> None:
    synthesize(world, speaker, config(), show_progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        synthesize(world, speaker, config(), show_progress=False)
    report = synthesize(world, speaker, config(paths=20), overwrite=True, show_progress=False)
    assert report.complete and len(load_r2r(world / "R2R_synthetic.json")) == 20

    synthesize(world, speaker, config(split_name="other"), show_progress=False, max_chunks=1)
    with pytest.raises(FileExistsError, match="other options"):
        synthesize(world, speaker, config(split_name="other", seed=5), show_progress=False)
    done = synthesize(world, speaker, config(split_name="other", seed=5), overwrite=True, show_progress=False)
    assert done.complete and done.instructions == 60


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="human split"):
        config(split_name="train")
    with pytest.raises(ValueError, match="greedy"):
        config(decoding="greedy", decodes_per_path=2)
    with pytest.raises(ValueError, match="beam_size"):
        config(decoding="beam", decodes_per_path=5, beam_size=4)


def test_feature_width_mismatch_is_reported(world: Path, tmp_path: Path) -> None:
    from tests.speaker_fixtures import TINY

    bundle = tiny_bundle(world)
    bundle.model = type(bundle.model)(bundle.vocab, 5, 4, TINY)
    bundle.save(tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="5-dimensional"):
        synthesize(world, tmp_path / "wrong.pt", config(), show_progress=False)


def test_new_houses_are_generated_featurized_and_used(world: Path, speaker: Path) -> None:
    before = NavDataset(world).scans
    built: list[str] = []

    def builder(root: Path, name: str) -> None:
        built.append(name)
        add_random_features(root, name)

    report = synthesize(
        world, speaker, config(new_houses=2, paths=200), show_progress=False, feature_builder=builder
    )
    assert built == [FEATURES] and len(report.new_scans) == 2
    dataset = NavDataset(world)
    assert dataset.scans == before + report.new_scans
    for scan in report.new_scans:
        assert (world / "houses" / f"{scan}.json").is_file()
    episodes = dataset.episodes("synthetic")
    assert {ep.scan for ep in episodes} >= set(report.new_scans)
    for ep in episodes:
        check_path_rules(dataset.graph(ep.scan), ep.path)
    # The same house seed regenerates the same houses: nothing new is added.
    again = synthesize(
        world,
        speaker,
        config(new_houses=2, paths=200, split_name="again"),
        show_progress=False,
        feature_builder=builder,
    )
    assert again.new_scans == report.new_scans and NavDataset(world).scans == dataset.scans


def test_new_houses_need_a_generated_world(world: Path, speaker: Path) -> None:
    (world / "summary.json").unlink()
    with pytest.raises(ValueError, match="build_nav_world"):
        synthesize(world, speaker, config(new_houses=1), show_progress=False)


def test_synthesize_script(world: Path, speaker: Path, run_script) -> None:
    args = [
        "--config", ROOT / "configs" / "vln_synthesize.yaml", "--data", world, "--speaker", speaker,
        "--paths", "30", "--decoding", "sample", "--decodes-per-path", "3", "--split-name", "syn_cli",
        "max_len=10", "device=cpu",
    ]  # fmt: skip
    done = run_script(synthesize_script.main, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "synthesized 30 paths x 3 instructions" in done.stdout
    assert len(NavDataset(world).episodes("syn_cli")) == 30
    again = run_script(synthesize_script.main, *args)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def _smoke_args(fixture, work: Path) -> list[object]:
    world = copy_world(fixture("random_feature_world"), work / "world")
    tiny_bundle(world, seed=1).save(work / "speaker.pt")
    return ["--data", world, "--speaker", work / "speaker.pt", "--paths", "4", "max_len=5", "device=cpu"]


@pytest.mark.script_run("synthesize.py", _smoke_args)
def test_synthesize_script_smoke(script_run) -> None:
    """The one command-line run of ``scripts/synthesize.py`` (in the background: tests/script_runs.py)."""
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert "synthesized 4 paths x 1 instructions" in script_run.stdout
    assert len(NavDataset(script_run.work / "world").episodes("synthetic")) == 4
