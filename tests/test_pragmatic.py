"""Pragmatic inference: the speaker reranks the follower's candidate routes (``agents/vln/pragmatic.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import evaluate_nav
import evaluate_vln
import pytest
import torch

from lodestar.agents.vln.evaluate import evaluate_follower, make_eval_env
from lodestar.agents.vln.follower import Follower, FollowerBundle, FollowerConfig
from lodestar.agents.vln.observations import step_inputs
from lodestar.agents.vln.pragmatic import (
    Candidates,
    SpeakerScorer,
    parse_weights,
    propose_routes,
    rerank,
    reranked_evaluation,
    select_weight,
)
from lodestar.agents.vln.trajectories import PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.eval.metrics import load_predictions
from tests.follower_fixtures import ANGLE_DIM, FEATURE_DIM, FEATURE_NAME, one_torch_thread  # noqa: F401
from tests.speaker_fixtures import tiny_bundle

SPLIT = "val_unseen"
K = 4
MAX_STEPS = 6  # short episodes: some routes stop, some are cut off


@pytest.fixture(scope="module")
def dataset(random_feature_world: Path) -> NavDataset:
    return NavDataset(random_feature_world)


@pytest.fixture(scope="module")
def follower(dataset: NavDataset) -> FollowerBundle:
    """An untrained tiny follower: its action distributions are spread, so samples differ from greedy."""
    torch.manual_seed(0)
    vocab = dataset.vocab()
    config = FollowerConfig(hidden_dim=32, num_heads=2, ffn_dim=64, dropout=0.1, feature_dropout=0.3)
    model = Follower(len(vocab), FEATURE_DIM, ANGLE_DIM, config, vocab.pad_id)
    model.train()  # propose_routes must run it in eval mode (no dropout) and leave it as it was
    return FollowerBundle(model, vocab, FEATURE_NAME, ANGLE_DIM, 80, {"iteration": 5})


@pytest.fixture(scope="module")
def candidates(follower: FollowerBundle, dataset: NavDataset) -> Candidates:
    proposed = propose_routes(follower, dataset, SPLIT, K, num_envs=7, max_steps=MAX_STEPS)
    SpeakerScorer(tiny_bundle(dataset.root), dataset, batch_size=16)(proposed)
    return proposed


def _viewpoints(route: list) -> list[str]:
    return [step[0] for step in route]


def test_candidates_start_with_the_greedy_route_and_add_distinct_samples(candidates, follower, dataset):
    assert follower.model.training  # restored after the passes
    env = make_eval_env(dataset, SPLIT, None, 5, FEATURE_NAME, ANGLE_DIM, 80, "cpu", MAX_STEPS)
    greedy = evaluate_follower(follower.model, env)
    assert candidates.instruction_ids == [r["instr_id"] for r in greedy.records]
    assert [routes[0] for routes in candidates.routes] == [r["trajectory"] for r in greedy.records]
    counts = candidates.valid.sum(1)
    assert int(counts.max()) <= K and bool((counts > 1).any())  # sampling found other routes
    for routes in candidates.routes:
        keys = [tuple(_viewpoints(route)) for route in routes]
        assert len(set(keys)) == len(keys)  # no route twice
    assert bool(torch.isfinite(candidates.follower_logp[candidates.valid]).all())
    assert bool((candidates.follower_logp[~candidates.valid] == float("-inf")).all())


def test_follower_log_prob_is_the_teacher_forced_log_prob_of_the_route(candidates, follower, dataset):
    """Checked against a second, independent computation: ``Follower.unroll`` along each route."""
    model = follower.model.eval()
    featurizer = PathFeaturizer.from_dataset(
        dataset, sorted(candidates.graphs), FEATURE_NAME, "cpu", ANGLE_DIM
    )
    rows = [(m, j) for m in range(0, len(candidates), 3) for j in range(len(candidates.routes[m]))]
    routes, texts = [], []
    for m, j in rows:
        episode, text = candidates.instruction(m)
        routes.append((episode.scan, _viewpoints(candidates.routes[m][j]), episode.heading))
        texts.append(text)
    traj = featurizer(featurizer.index_paths(routes), with_pano=True)
    steps = step_inputs(featurizer, traj)
    tokens, mask = follower.vocab.encode_batch(texts, 80)
    with torch.no_grad():
        logits, _ = model.unroll(tokens, mask, steps.cand_feats, steps.cand_mask, steps.pano_feats)
    model.train()
    taken = logits.log_softmax(-1).gather(2, traj.actions.clamp(min=0)[..., None]).squeeze(2)
    counted = traj.step_mask.clone()
    truncated = traj.lengths == MAX_STEPS + 1  # cut off after its last move: no STOP was chosen
    counted[truncated, traj.lengths[truncated] - 1] = False
    expected = (taken * counted).sum(1).double()
    got = torch.stack([candidates.follower_logp[m, j] for m, j in rows])
    assert bool(truncated.any()) and bool((~truncated).any())  # both kinds of route are covered
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_weight_zero_is_greedy_decoding(candidates, follower, dataset):
    env = make_eval_env(dataset, SPLIT, None, 16, FEATURE_NAME, ANGLE_DIM, 80, "cpu", MAX_STEPS)
    greedy = evaluate_follower(follower.model, env)
    # The most probable candidate under the follower is often not its greedy route...
    assert bool((candidates.follower_logp.argmax(1) != 0).any())
    # ...yet w = 0 leaves the speaker out: the follower's own decoding, route for route.
    reranked = reranked_evaluation(candidates, 0.0)
    assert reranked.records == greedy.records
    assert reranked.summary == greedy.summary and reranked.categories == greedy.categories


def test_a_speaker_that_prefers_the_reference_route_picks_it(candidates):
    """A stub speaker: log-likelihood 0 for the reference route, -5 for any other."""
    routes = []
    for m, own in enumerate(candidates.routes):
        episode, _ = candidates.instruction(m)
        reference = [[vp, episode.heading, 0.0] for vp in episode.path]
        others = [route for route in own if _viewpoints(route) != episode.path]
        routes.append([*others[:2], reference, *others[2:]])  # the reference among the candidates
    logp = torch.full((len(routes), max(map(len, routes))), float("-inf"), dtype=torch.float64)
    speaker = torch.full_like(logp, float("-inf"))
    for m, row in enumerate(routes):
        reference_path = candidates.instruction(m)[0].path
        logp[m, : len(row)] = -torch.arange(1.0, len(row) + 1)  # the follower prefers its first routes
        speaker[m, : len(row)] = torch.tensor(
            [0.0 if _viewpoints(r) == reference_path else -5.0 for r in row]
        )
    stub = Candidates(SPLIT, candidates.episodes, candidates.graphs, candidates.instruction_ids, routes, logp)
    stub.speaker_logp = speaker
    reference_slot = torch.tensor([min(len(row) - 1, 2) for row in routes])
    assert torch.equal(rerank(stub, 1.0), reference_slot)
    assert torch.equal(rerank(stub, 0.9), reference_slot)  # 5 nats of speaker outweigh 2 of follower
    result = reranked_evaluation(stub, 0.9)
    assert result.summary is not None and result.summary["sr"] == 1.0 and result.summary["spl"] == 1.0
    selection = select_weight(stub, parse_weights("0,0.2,0.9,1"))
    assert selection.weight == 0.9 and selection.scores[0.9]["sr"] == 1.0  # ties go to the smaller w
    assert selection.scores[0.0]["sr"] < 1.0


def test_speaker_score_is_its_per_token_log_likelihood(candidates, dataset):
    speaker = tiny_bundle(dataset.root)
    featurizer = PathFeaturizer.from_dataset(dataset, sorted(candidates.graphs), "rand", "cpu", 4)
    m, j = 1, len(candidates.routes[1]) - 1
    episode, text = candidates.instruction(m)
    paths = featurizer.index_paths([(episode.scan, _viewpoints(candidates.routes[m][j]), episode.heading)])
    tokens, _ = speaker.vocab.encode_batch([text], 80)
    speaker.model.eval()
    with torch.no_grad():
        loss = speaker.model.loss(
            speaker.model.encode(featurizer(paths)), tokens, torch.zeros(1, dtype=torch.int64)
        )
    assert float(candidates.speaker_logp[m, j]) == pytest.approx(-float(loss), abs=1e-5)
    assert bool((candidates.speaker_logp[~candidates.valid] == float("-inf")).all())


def test_the_weight_is_never_chosen_on_test(candidates, follower, dataset):
    on_test = propose_routes(follower, dataset, "test", 2, num_envs=16, max_steps=2)
    on_test.speaker_logp = torch.zeros_like(on_test.follower_logp)
    with pytest.raises(ValueError, match="never on 'test'"):
        select_weight(on_test)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        rerank(candidates, 1.5)
    with pytest.raises(ValueError, match="comma-separated numbers"):
        parse_weights("0,half")


# -- the command ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(follower: FollowerBundle, dataset: NavDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A follower ``<dir>/run/best.pt`` and a speaker ``<dir>/speaker/best.pt``, both untrained."""
    root = tmp_path_factory.mktemp("rerank")
    follower.save(root / "run" / "best.pt")
    tiny_bundle(dataset.root).save(root / "speaker" / "best.pt")
    return root


QUIET = ["--log-episodes", "0", "--log-failures", "0", "--num-envs", "16", "--max-steps", str(MAX_STEPS)]


def test_command_reranks_every_split_with_the_weight_chosen_on_validation(
    saved, dataset, tmp_path, run_script, monkeypatch
):
    common = ["--checkpoint", saved / "run", "--data", dataset.root, "--out-dir", tmp_path, *QUIET]
    rerank_args = ["--rerank", str(K), "--speaker", saved / "speaker", "--rerank-weights", "0,0.5,1"]
    done = run_script(
        evaluate_vln.main, *common, *rerank_args, "--split", "test", "--split", "val_seen", "--json"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    report = out["rerank"]
    assert report["k"] == K and report["selected_on"] == "val_unseen" and report["metric"] == "sr"
    assert set(report["grid"]) == {"0", "0.5", "1"} and report["weight"] in (0.0, 0.5, 1.0)
    best = max(scores["sr"] for scores in report["grid"].values())
    assert report["grid"][f"{report['weight']:g}"]["sr"] == best
    assert report["grid"]["0"]["sr"] == pytest.approx(run_greedy_sr(saved, dataset))
    for split in ("test", "val_seen"):
        submission = tmp_path / f"submit_{split}_rerank.json"
        assert len(load_predictions(submission)) == sum(
            len(ep.instructions) for ep in dataset.episodes(split)
        )
        scored = run_script(evaluate_nav.main, "--data", dataset.root, "--split", split, "--predictions",
                            submission, "--json")  # fmt: skip
        assert json.loads(scored.stdout.strip().splitlines()[-1]) == report["splits"][split]

    # Tables for people, with a progress bar over the candidates and the speaker's scoring.
    monkeypatch.setenv("LODESTAR_NO_PROGRESS", "0")
    text = run_script(evaluate_vln.main, *common, *rerank_args, "--split", "val_unseen")
    assert text.returncode == 0, text.stderr[-3000:]
    assert "speaker weight w on val_unseen (chosen by SR)" in text.stdout and "<- chosen" in text.stdout
    assert "val_unseen   reranked" in text.stdout and "change" in text.stdout
    assert "chosen on val_unseen, the headline split" in text.stdout  # flagged: optimistic
    assert "candidates val_unseen (greedy): 100%" in text.stderr and "speaker val_unseen: 100%" in text.stderr


def run_greedy_sr(saved: Path, dataset: NavDataset) -> float:
    """SR of greedy decoding on val_unseen, through the plain evaluation."""
    from lodestar.agents.vln.follower import load_follower

    env = make_eval_env(dataset, SPLIT, None, 16, FEATURE_NAME, ANGLE_DIM, 80, "cpu", MAX_STEPS)
    summary = evaluate_follower(load_follower(saved / "run").model, env).summary
    assert summary is not None
    return summary["sr"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rerank", "3"], "--rerank needs --speaker"),
        (["--rerank", "1", "--speaker", "S"], "K >= 2"),
        (["--rerank", "3", "--speaker", "S", "--rerank-select", "test"], "never on 'test'"),
        (["--rerank", "3", "--speaker", "S", "--rerank-weights", "0,2"], r"in [0, 1]"),
        (["--speaker", "S"], "only takes effect with --rerank"),
    ],
)
def test_command_refuses_bad_rerank_options_before_running(saved, dataset, run_script, extra, message):
    argv = [a if a != "S" else saved / "speaker" for a in extra]
    done = run_script(evaluate_vln.main, "--checkpoint", saved / "run", "--data", dataset.root, *QUIET, *argv)
    assert done.returncode == 2 and message in done.stderr and "evaluate" not in done.stdout
