"""``speaker-quality``: corpus BLEU of the speaker on test (headline), val_seen and val_unseen, next to
two same-run baselines.

- **speaker**: greedy decodes (``decoding=beam`` for beam search) of a speaker trained in this run
  with ``configs/vln_speaker.yaml`` (``iterations=<n>`` and any ``cfg.<key>=<value>`` override it), or
  a given one (``speaker=<run dir or .pt>``);
- **retrieval** (the reference): each evaluation path gets the first instruction of the training path
  whose trajectory is most similar: cosine similarity of the mean of the view features taken along the
  path (visual and angle parts each L2-normalized, then concatenated);
- **most common**: one instruction for every path, the training instruction that scores the highest
  corpus BLEU-4 against the training references (chosen among ``candidates`` training instructions on
  ``candidates`` training paths; selection never sees the evaluation splits).

Every hypothesis is scored against all (three) instructions of its path. Protocol (DESIGN.md section
9): the headline is ``test`` (held-out houses), with val_seen / val_unseen beside it; no choice sees
``test``: the trained speaker keeps its ``best.pt`` by val_unseen BLEU-4 (``select_split``, passed
explicitly; ``cfg.select_split=val_seen`` picks the other validation split, ``test`` is refused) and
never evaluates ``test`` while it trains, a given speaker selected on or scored on ``test`` is
refused, and both baselines are built from the ``train`` split alone. Target: the speaker beats
retrieval on test BLEU-4 (ratio > 1).

Options: ``data=<dir>`` (default ``data/nav/benchmark``), ``features=cnn``, ``speaker=<path>``,
``iterations=<n>``, ``decoding=greedy|beam``, ``candidates=300``, ``threads=1``, ``run_dir=<dir>``
(where a trained speaker is kept; default a temporary directory).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.speaker_common import benchmark_data, speaker_selection, train_speaker
from lodestar.agents.vln.bleu import BleuScore, References
from lodestar.agents.vln.speaker import load_speaker
from lodestar.agents.vln.speaker_training import decode_texts, reference_set
from lodestar.agents.vln.trajectories import InstructionSet, PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.r2r import Episode
from lodestar.envs.nav.data.tokenizer import tokenize
from lodestar.runtime.bench import Figure, report
from lodestar.runtime.protocol import HELD_OUT_SPLIT

BENCHMARK = "speaker-quality"
HEADLINE = HELD_OUT_SPLIT  # held-out houses: no choice of this benchmark or of the speaker saw them
SPLITS = (HEADLINE, "val_seen", "val_unseen")


def trajectory_descriptors(
    featurizer: PathFeaturizer, data: InstructionSet, batch: int = 512
) -> torch.Tensor:
    """``[E, D + A]``: mean taken-view feature of each path, visual and angle parts L2-normalized."""
    out = []
    visual = featurizer.visual_dim
    for start in range(0, len(data), batch):
        index = torch.arange(start, min(start + batch, len(data)), device=featurizer.device)
        traj = featurizer(data.paths.select(index), with_pano=False)
        moving = (traj.actions >= 0) & (traj.actions < featurizer.max_degree)
        weights = moving.float() / moving.sum(1, keepdim=True).clamp(min=1)
        mean = (traj.action_feats * weights[..., None]).sum(1)
        parts = [mean[:, :visual], mean[:, visual:]]
        out.append(torch.cat([torch.nn.functional.normalize(p, dim=-1) for p in parts], dim=-1))
    return torch.cat(out)


def retrieval_hypotheses(
    train_desc: torch.Tensor, train_episodes: list[Episode], eval_desc: torch.Tensor
) -> list[str]:
    """First instruction of the most similar training path, for every evaluation path."""
    similarity = (
        torch.nn.functional.normalize(eval_desc, dim=-1) @ torch.nn.functional.normalize(train_desc, dim=-1).T
    )
    return [train_episodes[i].instructions[0] for i in similarity.argmax(1).tolist()]


def most_common_instruction(train_episodes: list[Episode], candidates: int, seed: int = 0) -> str:
    """The training instruction with the best corpus BLEU-4 (then BLEU-1) against training references."""
    rng = np.random.default_rng(seed)
    texts = [text for ep in train_episodes for text in ep.instructions]
    pool = [texts[i] for i in rng.choice(len(texts), size=min(candidates, len(texts)), replace=False)]
    scoring = [
        train_episodes[i]
        for i in rng.choice(len(train_episodes), size=min(candidates, len(train_episodes)), replace=False)
    ]
    references = References([[tokenize(t) for t in ep.instructions] for ep in scoring])

    def score(text: str) -> tuple[float, float]:
        bleu = references.score([tokenize(text)] * len(scoring)).bleu
        return bleu[3], bleu[0]

    return max(pool, key=score)


def run(quick: bool, options: dict[str, str]) -> list[Figure]:
    threads = int(options.get("threads", 1))
    torch.set_num_threads(threads)
    candidates = int(options.get("candidates", 60 if quick else 300))
    with tempfile.TemporaryDirectory() as tmp:
        root, features, label = benchmark_data(quick, options, Path(tmp))
        started = time.perf_counter()
        if "speaker" in options:
            speaker_path = Path(options["speaker"])
            trained = "given"
        else:
            run_dir = Path(options.get("run_dir", Path(tmp) / "speaker"))
            overrides = [f"{k[4:]}={v}" for k, v in options.items() if k.startswith("cfg.")]
            if "iterations" in options:
                overrides.append(f"iterations={options['iterations']}")
            speaker_path, config = train_speaker(root, features, run_dir, overrides, quick)
            trained = f"trained {config.iterations} it in {time.perf_counter() - started:.0f} s"
        bundle = load_speaker(speaker_path)
        selected_on = speaker_selection(bundle.info, speaker_path)  # trained or given: checked alike
        dataset = NavDataset(root)
        episodes = {split: dataset.episodes(split) for split in ("train", *SPLITS)}
        scans = sorted({ep.scan for eps in episodes.values() for ep in eps})
        featurizer = PathFeaturizer.from_dataset(
            dataset, scans, bundle.features, "cpu", bundle.angle_feature_size
        )
        data = {
            split: InstructionSet.build(eps, featurizer, bundle.vocab, bundle.max_instruction_len)
            for split, eps in episodes.items()
        }
        train_desc = trajectory_descriptors(featurizer, data["train"])
        constant = most_common_instruction(episodes["train"], candidates)
        decoding = options.get("decoding", "greedy")
        scores: dict[str, dict[str, BleuScore]] = {}
        for split in SPLITS:
            refs = reference_set(data[split])
            speaker_texts = decode_texts(
                bundle.model, featurizer, data[split], bundle.vocab, 256, 80, decoding
            )
            retrieved = retrieval_hypotheses(
                train_desc, episodes["train"], trajectory_descriptors(featurizer, data[split])
            )
            scores[split] = {
                "speaker": refs.score([tokenize(t) for t in speaker_texts]),
                "retrieval": refs.score([tokenize(t) for t in retrieved]),
                "most common": refs.score([tokenize(constant)] * len(data[split])),
            }
            print(
                f"[{split}] speaker: {speaker_texts[0]}\n[{split}] reference: {episodes[split][0].instructions[0]}"
            )
    print(
        f"speaker {speaker_path.name} ({trained}; best.pt chosen on {selected_on} BLEU-4; {decoding} decoding)"
        f" on {label}; headline: {HEADLINE} (held-out houses, seen by no choice)"
    )
    print(f"most common instruction: {constant!r}")
    figures = []
    for split in SPLITS:
        for n in (4, 1):
            speaker = scores[split]["speaker"].bleu[n - 1]
            for baseline in ("retrieval", "most common"):
                target = 1.0 if (split, n, baseline) == (HEADLINE, 4, "retrieval") else None
                figures.append(
                    Figure(
                        BENCHMARK,
                        f"{split} BLEU-{n}: speaker vs {baseline}",
                        round(speaker, 4),
                        "BLEU",
                        reference=f"{baseline} baseline",
                        reference_value=round(scores[split][baseline].bleu[n - 1], 4),
                        target=target,
                    )
                )
    report(figures, f"speaker-quality ({label})")
    return figures
