"""Trajectory featurization (against the simulator), the speaker network, decoding and overfitting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lodestar.agents.vln.bleu import corpus_bleu
from lodestar.agents.vln.speaker import Speaker, SpeakerConfig, load_speaker
from lodestar.agents.vln.speaker_training import decode_texts, evaluate_speaker
from lodestar.agents.vln.trajectories import InstructionSet, PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.data.tokenizer import tokenize
from lodestar.envs.nav.sim.env import NavVecEnv
from tests.speaker_fixtures import ANGLE_SIZE, FEATURE_DIM, FEATURES, TINY, tiny_bundle


@pytest.fixture(scope="module")
def world(random_feature_world: Path) -> Path:
    return random_feature_world


@pytest.fixture(scope="module")
def dataset(world: Path) -> NavDataset:
    return NavDataset(world)


@pytest.fixture(scope="module")
def featurizer(dataset: NavDataset) -> PathFeaturizer:
    scans = sorted({ep.scan for split in ("train", "val_unseen") for ep in dataset.episodes(split)})
    return PathFeaturizer.from_dataset(dataset, scans, FEATURES, "cpu", ANGLE_SIZE)


@pytest.fixture(scope="module")
def val_data(dataset: NavDataset, featurizer: PathFeaturizer) -> InstructionSet:
    return InstructionSet.build(dataset.episodes("val_unseen"), featurizer, dataset.vocab(), 80)


def test_featurizer_matches_the_simulator_along_teacher_paths(
    dataset: NavDataset, featurizer: PathFeaturizer
) -> None:
    episodes = dataset.episodes("train")[:6]
    traj = featurizer(featurizer.index_episodes(episodes))
    for b, ep in enumerate(episodes):
        single = [Episode(ep.path_id, ep.scan, ep.heading, ep.path, ep.instructions[:1], ep.distance)]
        env = NavVecEnv(
            dataset,
            single,
            1,
            features=FEATURES,
            device="cpu",
            angle_feature_size=ANGLE_SIZE,
            sequential=True,
            oracle=True,
        )
        obs = env.reset(seed=0)
        assert int(traj.lengths[b]) == len(ep.path)
        for t in range(len(ep.path)):
            action = int(obs["teacher_action"][0])
            assert int(traj.actions[b, t]) == action, (b, t)
            torch.testing.assert_close(
                traj.action_feats[b, t], obs["cand_feats"][0, action], atol=2e-3, rtol=0
            )
            torch.testing.assert_close(traj.pano_feats[b, t], obs["pano_feats"][0], atol=2e-3, rtol=0)
            obs, *_ = env.step(torch.tensor([action]))
        # The last step is STOP: zero features, like the simulator's STOP candidate.
        assert int(traj.actions[b, len(ep.path) - 1]) == featurizer.max_degree
        assert not traj.action_feats[b, len(ep.path) - 1].any()
    padded = ~traj.step_mask
    assert (traj.actions[padded] == -1).all() and not traj.pano_feats[padded].any()


def test_featurizer_rejects_bad_paths(dataset: NavDataset, featurizer: PathFeaturizer) -> None:
    ep = dataset.episodes("train")[0]
    with pytest.raises(NavDataError, match="not an edge"):
        featurizer(featurizer.index_paths([(ep.scan, [ep.path[0], ep.path[2]], 0.0)]))
    with pytest.raises(KeyError, match="not in scan"):
        featurizer.index_paths([(ep.scan, [ep.path[0], "nowhere"], 0.0)])
    with pytest.raises(KeyError, match="not among"):
        featurizer.index_paths([("no_such_scan", ep.path, 0.0)])
    with pytest.raises(NavDataError, match="expected shape"):
        PathFeaturizer([dataset.graph(ep.scan)], torch.zeros(3, 36, 4))


def test_instruction_rows(dataset: NavDataset, val_data: InstructionSet) -> None:
    index = torch.tensor([3, 0, 5])
    rows, owner = val_data.instruction_rows(index)
    assert owner.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert val_data.instr_episode[rows].tolist() == [3] * 3 + [0] * 3 + [5] * 3
    vocab = dataset.vocab()
    for row, (e, k) in zip(rows.tolist(), [(e, k) for e in (3, 0, 5) for k in range(3)], strict=True):
        expected = vocab.encode(val_data.episodes[e].instructions[k], 80)
        assert val_data.tokens[row, : len(expected)].tolist() == expected
        assert (val_data.tokens[row, len(expected) :] == vocab.pad_id).all()


def _model(dataset: NavDataset, seed: int = 0, config: SpeakerConfig = TINY) -> Speaker:
    torch.manual_seed(seed)
    return Speaker(dataset.vocab(), FEATURE_DIM, ANGLE_SIZE, config).eval()


def _assert_valid(tokens: torch.Tensor, lengths: torch.Tensor, speaker: Speaker) -> None:
    for row, length in zip(tokens.tolist(), lengths.tolist(), strict=True):
        eos = row.index(speaker.eos_id)
        assert eos == length - 1, row
        assert all(t == speaker.pad_id for t in row[eos + 1 :]), row
        assert not any(speaker.banned[t] for t in row[:eos]), row


@pytest.mark.parametrize("max_len", [1, 5, 30])
def test_decoding_modes_produce_eos_terminated_sequences(
    dataset: NavDataset, featurizer: PathFeaturizer, val_data: InstructionSet, max_len: int
) -> None:
    speaker = _model(dataset)
    enc = speaker.encode(featurizer(val_data.paths))
    n = len(val_data)
    greedy = speaker.decode(enc, "greedy", max_len=max_len)
    sample = speaker.decode(
        enc, "sample", max_len=max_len, num_return=3, generator=torch.Generator().manual_seed(0)
    )
    beam = speaker.decode(enc, "beam", max_len=max_len, beam_size=3, num_return=2)
    assert greedy.tokens.shape == (n, max_len) and sample.tokens.shape == (3 * n, max_len)
    assert beam.tokens.shape == (2 * n, max_len)
    for out in (greedy, sample, beam):
        _assert_valid(out.tokens, out.lengths, speaker)
        assert torch.isfinite(out.log_prob).all()
    # Beams come best first (by length-normalized score).
    norm = beam.log_prob / beam.lengths.double()
    assert (norm.view(n, 2)[:, 0] >= norm.view(n, 2)[:, 1]).all()


def test_beam_width_one_equals_greedy(
    dataset: NavDataset, featurizer: PathFeaturizer, val_data: InstructionSet
):
    for seed in range(3):
        speaker = _model(dataset, seed)
        enc = speaker.encode(featurizer(val_data.paths))
        greedy = speaker.decode(enc, "greedy", max_len=40)
        beam = speaker.decode(enc, "beam", max_len=40, beam_size=1)
        assert torch.equal(greedy.tokens, beam.tokens)
        assert torch.equal(greedy.lengths, beam.lengths)
        torch.testing.assert_close(greedy.log_prob, beam.log_prob, rtol=0, atol=0)


def test_beam_scores_are_the_model_log_probabilities(
    dataset: NavDataset, featurizer: PathFeaturizer, val_data: InstructionSet
) -> None:
    speaker = _model(dataset, 1)
    traj = featurizer(val_data.paths)
    enc = speaker.encode(traj)
    beam = speaker.decode(enc, "beam", max_len=12, beam_size=4)
    # Re-score the beams with teacher forcing: same log-probabilities (special tokens masked alike).
    tokens = torch.cat([torch.full((len(val_data), 1), speaker.bos_id), beam.tokens], dim=1)
    logits = speaker(enc, tokens, torch.arange(len(val_data))).masked_fill(speaker.banned, float("-inf"))
    last = torch.arange(12) == 11
    logits[:, last] = torch.where(torch.arange(logits.shape[-1]) == speaker.eos_id, 0.0, float("-inf"))
    logp = logits.log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]
    rescored = torch.where(tokens[:, 1:] != speaker.pad_id, logp, 0.0).sum(1).double()
    torch.testing.assert_close(rescored, beam.log_prob, atol=1e-4, rtol=0)


def test_sampling_is_reproducible_and_temperature_matters(
    dataset: NavDataset, featurizer: PathFeaturizer, val_data: InstructionSet
) -> None:
    speaker = _model(dataset)
    enc = speaker.encode(featurizer(val_data.paths))

    def sample(seed: int, temperature: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return speaker.decode(enc, "sample", max_len=20, temperature=temperature, generator=gen).tokens

    assert torch.equal(sample(0, 1.0), sample(0, 1.0))
    assert not torch.equal(sample(0, 1.0), sample(1, 1.0))
    greedy = speaker.decode(enc, "greedy", max_len=20)
    cold = sample(0, 1e-6)
    assert (cold == greedy.tokens).all(1).float().mean() > 0.8  # near-ties may still differ


def test_decode_rejects_bad_requests(
    dataset: NavDataset, featurizer: PathFeaturizer, val_data: InstructionSet
):
    speaker = _model(dataset)
    enc = speaker.encode(featurizer(val_data.paths.select(torch.tensor([0]))))
    with pytest.raises(ValueError, match="unknown decoding mode"):
        speaker.decode(enc, "topk")
    with pytest.raises(ValueError, match="deterministic"):
        speaker.decode(enc, "greedy", num_return=2)
    with pytest.raises(ValueError, match="beam of 2"):
        speaker.decode(enc, "beam", beam_size=2, num_return=3)
    with pytest.raises(ValueError, match="temperature"):
        speaker.decode(enc, "sample", temperature=0.0)
    wrong = featurizer(val_data.paths.select(torch.tensor([0])))
    wrong.action_feats = wrong.action_feats[..., :-1]
    with pytest.raises(ValueError, match="wide"):
        speaker.encode(wrong)


def test_loss_ignores_padding(dataset: NavDataset, featurizer: PathFeaturizer, val_data: InstructionSet):
    speaker = _model(dataset)
    index = torch.tensor([0, 1])
    enc = speaker.encode(featurizer(val_data.paths.select(index)))
    rows, owner = val_data.instruction_rows(index)
    tokens = val_data.tokens[rows]
    trimmed = tokens[:, : int((tokens != speaker.pad_id).sum(1).max())]
    torch.testing.assert_close(speaker.loss(enc, tokens, owner), speaker.loss(enc, trimmed, owner))


def test_feature_dropout_spares_angle_features(dataset: NavDataset, featurizer: PathFeaturizer, val_data):
    config = SpeakerConfig(embed_dim=8, hidden_dim=8, dropout=0.0, feature_dropout=0.5)
    speaker = _model(dataset, config=config).train()
    traj = featurizer(val_data.paths.select(torch.arange(4)))
    action, pano = speaker._feature_dropout(traj.action_feats, traj.pano_feats)
    assert torch.equal(action[..., FEATURE_DIM:], traj.action_feats[..., FEATURE_DIM:])
    assert torch.equal(pano[..., FEATURE_DIM:], traj.pano_feats[..., FEATURE_DIM:])
    dropped = (action[..., :FEATURE_DIM] == 0) & (traj.action_feats[..., :FEATURE_DIM] != 0)
    assert dropped.any()
    # One mask per trajectory: a dropped channel is dropped at every step and view.
    zero_channels = (pano[..., :FEATURE_DIM] == 0).all(dim=(1, 2))
    assert zero_channels.any() and zero_channels.float().mean() < 1


def test_tiny_speaker_overfits_a_handful_of_trajectories(dataset: NavDataset, featurizer: PathFeaturizer):
    torch.manual_seed(0)
    vocab = dataset.vocab()
    # Words outside the tiny vocabulary are <UNK>, which decoding never emits: keep the known words.
    episodes = [
        Episode(ep.path_id, ep.scan, ep.heading, ep.path, [vocab.decode(vocab.encode(ep.instructions[0]))])
        for ep in dataset.episodes("train")[:5]
    ]
    data = InstructionSet.build(episodes, featurizer, dataset.vocab(), 80)
    speaker = Speaker(dataset.vocab(), FEATURE_DIM, ANGLE_SIZE, SpeakerConfig(32, 64, 0.0, 0.0))
    optimizer = torch.optim.Adam(speaker.parameters(), lr=1e-2)
    traj = featurizer(data.paths)
    rows, owner = data.instruction_rows(torch.arange(len(data)))
    for _ in range(150):  # until the teacher-forced loss is near zero (about 60 updates)
        loss = speaker.loss(speaker.encode(traj), data.tokens[rows], owner)
        if loss.item() < 0.02:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02
    result = evaluate_speaker(speaker, featurizer, data, dataset.vocab(), "overfit")
    assert result.bleu.bleu[3] > 0.95, (float(loss.detach()), result.hypotheses)
    assert result.bleu.bleu[0] > 0.95
    hyps = decode_texts(speaker, featurizer, data, dataset.vocab(), 2, 80, "beam", beam_size=3)
    assert (
        corpus_bleu([tokenize(h) for h in hyps], [[tokenize(ep.instructions[0])] for ep in episodes]).bleu[3]
        > 0.9
    )


def test_bundle_round_trip(tmp_path: Path, world: Path, featurizer: PathFeaturizer, val_data: InstructionSet):
    bundle = tiny_bundle(world, seed=4)
    bundle.save(tmp_path / "speaker.pt")
    loaded = load_speaker(tmp_path / "speaker.pt")
    assert loaded.vocab == bundle.vocab and loaded.features == bundle.features
    traj = featurizer(val_data.paths)
    assert torch.equal(
        bundle.model.generate(traj, max_len=15).tokens, loaded.model.generate(traj, max_len=15).tokens
    )
    assert not loaded.model.training
    (tmp_path / "run").mkdir()
    bundle.save(tmp_path / "run" / "best.pt")
    assert load_speaker(tmp_path / "run").angle_feature_size == ANGLE_SIZE
    with pytest.raises(FileNotFoundError):
        load_speaker(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(Exception, match="not a speaker file"):
        load_speaker(tmp_path / "other.pt")
