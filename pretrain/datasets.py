"""Image-text-action triplets for PREVALENT-style pretraining, batched on the device.

A triplet is one instruction, the route it describes and the action taken at every step of that
route. Triplets come from the human ``train`` split and from any number of speaker-synthesized R2R
files (``R2R_synthetic.json`` written by ``scripts/synthesize.py``); routes are featurized by
:class:`lodestar.agents.vln.trajectories.PathFeaturizer` and candidates are built as the simulator builds
them (:mod:`lodestar.agents.vln.observations`), so what pretraining sees is what fine-tuning sees.

A batch carries the inputs of both objectives:

- masked language modelling: 15% of the real words of each instruction (never ``<PAD>``, ``<BOS>``,
  ``<EOS>``, ``<UNK>``, ``<MASK>`` or ``<CLS>``; at least one when the instruction has a word) are
  chosen; 80% become ``<MASK>``, 10% a random word, 10% stay; labels are ``-100`` elsewhere;
- action prediction: the candidate slot taken at every step (STOP = last slot), ``-100`` on padding.

The random draws of sample ``i`` in epoch ``e`` come from a generator seeded by ``(seed, e, i)``, so
masks do not depend on how samples are spread over batches or data-parallel ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lodestar.agents.vln.observations import StepInputs, step_inputs
from lodestar.agents.vln.trajectories import InstructionSet, PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.errors import NavDataError
from lodestar.envs.nav.data.r2r import Episode, load_r2r, validate_episodes
from lodestar.envs.nav.data.tokenizer import SPECIAL_TOKENS, Vocab

IGNORE_INDEX = -100


@dataclass
class MaskingConfig:
    """BERT-style masking probabilities."""

    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"masking probability must be in (0, 1], got {self.probability}")
        if (
            self.mask_fraction < 0
            or self.random_fraction < 0
            or self.mask_fraction + self.random_fraction > 1
        ):
            raise ValueError("mask_fraction and random_fraction must be >= 0 and sum to at most 1")


def mask_tokens(
    tokens: torch.Tensor, uniforms: torch.Tensor, vocab_size: int, config: MaskingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``tokens [B, L]`` for MLM given ``uniforms [B, 3, L]`` in ``[0, 1)``.

    Draw 0 selects positions, draw 1 picks mask / random / keep, draw 2 picks the random word.
    Returns ``(inputs, labels)``; labels hold the original id on selected positions, ``-100`` elsewhere.
    """
    special = len(SPECIAL_TOKENS)  # special tokens are the first ids of every vocabulary
    if vocab_size <= special:
        raise ValueError(f"a vocabulary of {vocab_size} tokens has no words to mask")
    eligible = tokens >= special
    select_draw, kind_draw, word_draw = uniforms.unbind(1)
    selected = eligible & (select_draw < config.probability)
    # Every instruction with a word gets at least one: its eligible position with the smallest draw.
    masked_draw = select_draw.masked_fill(~eligible, 2.0)
    first = torch.zeros_like(selected).scatter_(1, masked_draw.argmin(1, keepdim=True), True)
    selected |= first & eligible & ~selected.any(1, keepdim=True)
    labels = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    to_mask = selected & (kind_draw < config.mask_fraction)
    to_random = selected & ~to_mask & (kind_draw < config.mask_fraction + config.random_fraction)
    random_words = special + (word_draw * (vocab_size - special)).long().clamp(max=vocab_size - special - 1)
    inputs = torch.where(to_mask, torch.full_like(tokens, SPECIAL_TOKENS.index("<MASK>")), tokens)
    inputs = torch.where(to_random, random_words, inputs)
    return inputs, labels


def sample_uniforms(seed: int, epoch: int, indices: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, 3, width]`` uniforms; row ``b`` depends only on ``(seed, epoch, indices[b])``."""
    rows = []
    for index in indices.tolist():
        generator = torch.Generator().manual_seed(
            ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % 2**63
        )
        rows.append(torch.rand(3, width, generator=generator))
    return torch.stack(rows)


@dataclass
class PretrainBatch:
    """One batch of triplets (see the module docstring)."""

    indices: torch.Tensor  # [B] triplet indices
    tokens: torch.Tensor  # [B, L] clean instruction
    token_mask: torch.Tensor  # [B, L] bool
    mlm_inputs: torch.Tensor  # [B, L] corrupted instruction
    mlm_labels: torch.Tensor  # [B, L] original ids on masked positions, -100 elsewhere
    steps: StepInputs  # candidates and panoramas [B, T, ...]
    actions: torch.Tensor  # [B, T] candidate slot taken (STOP last), -100 on padding
    route_feats: torch.Tensor  # [B, T, D + A] feature of the view taken at each step (zeros for STOP)

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])


class TripletDataset:
    """Instructions with their routes, indexed ``0 .. len - 1`` (human first, then each synthetic file)."""

    def __init__(
        self,
        featurizer: PathFeaturizer,
        episodes: Sequence[Episode],
        vocab: Vocab,
        max_instruction_len: int,
        masking: MaskingConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not episodes:
            raise ValueError("no pretraining episodes")
        self.featurizer, self.vocab, self.seed = featurizer, vocab, seed
        self.masking = masking or MaskingConfig()
        self.data = InstructionSet.build(episodes, featurizer, vocab, max_instruction_len)
        if self.data.num_instructions == 0:
            raise ValueError("the pretraining episodes hold no instructions")

    def __len__(self) -> int:
        return self.data.num_instructions

    @property
    def num_paths(self) -> int:
        return len(self.data)

    def batch(self, indices: torch.Tensor, epoch: int = 0) -> PretrainBatch:
        """The triplets at ``indices`` with this epoch's MLM corruption."""
        device = self.featurizer.device
        indices = indices.to(device=device, dtype=torch.int64)
        tokens = self.data.tokens[indices]
        token_mask = tokens != self.vocab.pad_id
        width = max(int(token_mask.sum(1).max()), 1)
        tokens, token_mask = tokens[:, :width], token_mask[:, :width]
        # Drawn at the full instruction length so that a sample's draws do not depend on its batch.
        uniforms = sample_uniforms(self.seed, epoch, indices.cpu(), self.data.tokens.shape[1])
        uniforms = uniforms[..., :width].to(device)
        mlm_inputs, mlm_labels = mask_tokens(tokens, uniforms, len(self.vocab), self.masking)
        paths = self.data.paths.select(self.data.instr_episode[indices])
        traj = self.featurizer(paths, with_pano=True)
        actions = traj.actions.masked_fill(~traj.step_mask, IGNORE_INDEX)
        return PretrainBatch(
            indices,
            tokens,
            token_mask,
            mlm_inputs,
            mlm_labels,
            step_inputs(self.featurizer, traj),
            actions,
            traj.action_feats,
        )


def load_episode_sources(dataset: NavDataset, sources: Sequence[str]) -> dict[str, list[Episode]]:
    """Episodes of each source: a split name of ``dataset`` (``train``, ``synthetic``) or an R2R JSON path.

    Files are checked against the dataset's graphs; a missing source is a ``FileNotFoundError``.
    """
    out: dict[str, list[Episode]] = {}
    for source in sources:
        path = Path(source)
        if path.suffix == ".json":
            if not path.is_file():
                raise FileNotFoundError(f"pretraining data file not found: {path}")
            episodes = load_r2r(path)
            scans = sorted({ep.scan for ep in episodes})
            try:
                graphs = dataset.graphs(scans)
            except NavDataError as exc:
                raise NavDataError(f"{path}: {exc}") from None
            validate_episodes(episodes, graphs, str(path))
        else:
            episodes = dataset.episodes(source)
        if not episodes:
            raise ValueError(f"pretraining source {source!r} holds no episodes")
        out[source] = episodes
    return out
