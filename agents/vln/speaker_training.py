"""Speaker training, readable top to bottom: batch, teacher-forced loss, step, evaluate, checkpoint.

A batch is ``batch_size`` training paths with *all* their instructions: each trajectory is encoded
once and decoded against each of its (usually three) instructions. Evaluation decodes every path of
the evaluation splits greedily and scores corpus BLEU-1..4 against the path's human-style
instructions.

Checkpoint selection: the best checkpoint (``<run>/best.pt``, a self-contained speaker file for
synthesis) is the one with the highest BLEU-4 on ``select_split`` (default ``val_unseen``): synthesis
writes instructions for paths the speaker has not been trained on, including in new houses, and the
unseen houses measure exactly that generalization. Periodic checkpoints (``<run>/checkpoints/``)
hold everything to resume exactly: model, optimizer, data order, RNG states, best score.

The loop around the update (periodic log, evaluation and checkpoint; Ctrl-C) is the one every
trainer shares, :class:`lodestar.runtime.training.IterationTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from lodestar.agents.vln.bleu import BleuScore, References
from lodestar.agents.vln.speaker import Speaker, SpeakerBundle, SpeakerConfig
from lodestar.agents.vln.trajectories import InstructionSet, PathFeaturizer
from lodestar.envs.nav.data.dataset import NavDataset
from lodestar.envs.nav.data.tokenizer import Vocab, tokenize
from lodestar.runtime.checkpoint import restore_module
from lodestar.runtime.config import to_dict
from lodestar.runtime.logger import RunLogger
from lodestar.runtime.protocol import check_selection_splits
from lodestar.runtime.seeding import rng_state, set_rng_state
from lodestar.runtime.training import IterationTrainer, RunResult, Span
from lodestar.runtime.training import TrainingDiverged as TrainingDiverged  # callers catch it from here


@dataclass
class SpeakerDataConfig:
    """Which data the speaker reads and how it is featurized."""

    # <data>/features/<name>.hdf5 (or .tsv); "auto": the only features file there (NavDataset.resolve_features)
    features: str = "auto"
    angle_feature_size: int = 32  # [sin h, cos h, sin e, cos e] repeated: weight of geometry vs pixels
    max_instruction_len: int = 80  # tokens including <BOS>/<EOS>; longer instructions are cut
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["val_seen", "val_unseen"])
    feature_dtype: Literal["float32", "float16"] = "float32"


@dataclass
class SpeakerTrainConfig:
    """The typed schema of ``configs/vln_speaker.yaml``."""

    name: str | None = None
    data_dir: str = ""  # dataset directory; ``--data`` sets it
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 0
    runs_dir: str = "runs"
    iterations: int = 3000
    batch_size: int = 32  # paths per batch (each with all its instructions)
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    log_every: int = 50
    eval_every: int = 500
    eval_batch_size: int = 256
    eval_max_paths: int = 0  # 0: every path of each evaluation split
    decode_max_len: int = 80
    select_split: str = "val_unseen"
    text_samples: int = 3
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    data: SpeakerDataConfig = field(default_factory=SpeakerDataConfig)
    model: SpeakerConfig = field(default_factory=SpeakerConfig)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "eval_batch_size", "decode_max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.select_split not in self.data.eval_splits:
            raise ValueError(
                f"select_split {self.select_split!r} must be one of data.eval_splits {self.data.eval_splits}"
            )
        check_selection_splits(self.select_split, self.data.eval_splits, owner="speaker config")


# Keys that shape the network or its inputs; a resumed run must agree on them.
ARCHITECTURE_KEYS = [
    "data.features",
    "data.angle_feature_size",
    "data.max_instruction_len",
    "model.embed_dim",
    "model.hidden_dim",
]


@dataclass
class SpeakerEvaluation:
    """Greedy decodes of one split and their corpus BLEU."""

    split: str
    bleu: BleuScore
    hypotheses: list[str]  # one per path, in split order
    episodes: list[Any]


def decode_texts(
    model: Speaker,
    featurizer: PathFeaturizer,
    data: InstructionSet,
    vocab: Vocab,
    batch_size: int,
    max_len: int,
    mode: str = "greedy",
    **decode_kwargs: Any,
) -> list[str]:
    """One decoded instruction per path of ``data`` (in order), batched on the model's device."""
    texts: list[str] = []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)), device=featurizer.device)
        decoded = model.generate(featurizer(data.paths.select(index)), mode, max_len=max_len, **decode_kwargs)
        texts.extend(vocab.decode(row) for row in decoded.tokens.tolist())
    return texts


def evaluate_speaker(
    model: Speaker,
    featurizer: PathFeaturizer,
    data: InstructionSet,
    vocab: Vocab,
    split: str,
    batch_size: int = 256,
    max_len: int = 80,
    references: References | None = None,
) -> SpeakerEvaluation:
    """Greedy-decode every path of ``data`` and score BLEU against all its instructions."""
    hypotheses = decode_texts(model, featurizer, data, vocab, batch_size, max_len)
    if references is None:
        references = reference_set(data)
    bleu = references.score([tokenize(h) for h in hypotheses])
    return SpeakerEvaluation(split, bleu, hypotheses, data.episodes)


def reference_set(data: InstructionSet) -> References:
    return References([[tokenize(text) for text in ep.instructions] for ep in data.episodes])


@dataclass(kw_only=True)
class TrainResult(RunResult):
    best_score: float
    best_iteration: int
    last_scores: dict[str, float]


class SpeakerTrainer(IterationTrainer[SpeakerTrainConfig, TrainResult]):
    """Owns one speaker run: data, model, optimizer, logger and checkpoints under ``run_dir``."""

    progress_label = "speaker"

    def __init__(self, config: SpeakerTrainConfig, run_dir: str | Path) -> None:
        super().__init__(config, run_dir)
        c = config
        self.dataset = NavDataset(c.data_dir)
        # "auto" becomes the file it stands for, so the saved config and the speaker file name it.
        c.data.features = self.dataset.resolve_features(c.data.features)
        self.vocab = self.dataset.vocab()
        splits = [c.data.train_split, *c.data.eval_splits]
        episodes = {split: self.dataset.episodes(split) for split in splits}
        for split, eps in episodes.items():
            if not eps:
                raise ValueError(f"split {split!r} of {self.dataset.root} has no episodes")
        if c.eval_max_paths > 0:
            episodes.update({s: episodes[s][: c.eval_max_paths] for s in c.data.eval_splits})
        scans = sorted({ep.scan for eps in episodes.values() for ep in eps})
        dtype = getattr(torch, c.data.feature_dtype)
        self.featurizer = PathFeaturizer.from_dataset(
            self.dataset, scans, c.data.features, self.device, c.data.angle_feature_size, dtype
        )

        def build(split: str) -> InstructionSet:
            return InstructionSet.build(
                episodes[split], self.featurizer, self.vocab, c.data.max_instruction_len
            )

        self.train_data = build(c.data.train_split)
        self.eval_data = {split: build(split) for split in c.data.eval_splits}
        self.references = {split: reference_set(data) for split, data in self.eval_data.items()}
        self.model = Speaker(self.vocab, self.featurizer.visual_dim, c.data.angle_feature_size, c.model)
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.order = torch.randperm(len(self.train_data), generator=self.generator)
        self.cursor = 0
        self.best_score, self.best_iteration = -1.0, -1
        self.last_scores: dict[str, float] = {}

    # -- data ---------------------------------------------------------------------------------------
    def _next_batch(self) -> torch.Tensor:
        """Indices of the next ``batch_size`` training paths; reshuffled at every epoch."""
        size = min(self.config.batch_size, len(self.train_data))
        if self.cursor + size > len(self.order):
            self.order = torch.randperm(len(self.train_data), generator=self.generator)
            self.cursor = 0
        index = self.order[self.cursor : self.cursor + size]
        self.cursor += size
        return index.to(self.device)

    # -- one update ---------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        data, pad = self.train_data, self.vocab.pad_id
        index = self._next_batch()
        traj = self.featurizer(data.paths.select(index))
        rows, owner = data.instruction_rows(index)
        tokens = data.tokens[rows]
        tokens = tokens[:, : int((tokens != pad).sum(1).max())]  # drop all-padding columns
        self.model.train()
        loss = self.model.loss(self.model.encode(traj), tokens, owner)
        value = float(loss.detach())
        self.check_finite("speaker loss", value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.iteration += 1
        return {"loss": value}

    # -- what the shared loop calls (runtime.training) -----------------------------------------------
    def log_progress(self, logger: RunLogger | None, span: Span) -> None:
        if logger is not None:
            rate = span.per_second(span.iterations)
            logger.scalars(
                {"train/loss": span.means["loss"], "perf/iterations_per_second": rate}, self.iteration
            )

    def scheduled_evaluation(self, logger: RunLogger | None) -> None:
        self.evaluate(logger)

    def make_result(self, loop: Span) -> TrainResult:
        return TrainResult(
            run_dir=self.run_dir,
            iterations=self.iteration,
            best_score=self.best_score,
            best_iteration=self.best_iteration,
            last_scores=dict(self.last_scores),
            interrupted=self.stop_requested,
        )

    def evaluate(self, logger: RunLogger | None = None) -> dict[str, float]:
        """BLEU-1..4 on every evaluation split; saves ``best.pt`` when ``select_split`` BLEU-4 improves."""
        c, scores = self.config, {}
        for split, data in self.eval_data.items():
            result = evaluate_speaker(
                self.model,
                self.featurizer,
                data,
                self.vocab,
                split,
                c.eval_batch_size,
                c.decode_max_len,
                self.references[split],
            )
            scores.update({f"{split}/{k}": v for k, v in result.bleu.as_dict().items()})
            if logger is not None:
                logger.scalars(result.bleu.as_dict(f"eval/{split}/bleu"), self.iteration)
                logger.text(f"eval/{split}/samples", self._samples_markdown(result), self.iteration)
        self.last_scores = scores
        score = scores[f"{c.select_split}/bleu4"]
        if score > self.best_score:
            self.best_score, self.best_iteration = score, self.iteration
            self.bundle().save(self.run_dir / "best.pt")
        if logger is not None:
            logger.scalar(f"eval/{c.select_split}/best_bleu4", self.best_score, self.iteration)
            logger.flush()
        return scores

    def _samples_markdown(self, result: SpeakerEvaluation) -> str:
        lines = []
        for ep, hyp in list(zip(result.episodes, result.hypotheses, strict=True))[: self.config.text_samples]:
            lines.append(f"**path {ep.path_id}** (scan {ep.scan}, {len(ep.path) - 1} edges)  ")
            lines.append(f"*speaker:* {hyp}  ")
            lines.extend(f"*reference {k}:* {text}  " for k, text in enumerate(ep.instructions))
            lines.append("")
        return "\n".join(lines)

    def bundle(self) -> SpeakerBundle:
        d = self.config.data
        info = {
            "iteration": self.iteration,
            "scores": dict(self.last_scores),
            "select": f"{self.config.select_split}/bleu4",
            "config": to_dict(self.config),
        }
        return SpeakerBundle(
            self.model, self.vocab, d.features, d.angle_feature_size, d.max_instruction_len, info
        )

    # -- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "order": self.order.clone(),
            "cursor": self.cursor,
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "best_score": self.best_score,
            "best_iteration": self.best_iteration,
            "last_scores": dict(self.last_scores),
        }
        return self.write_checkpoint(state)

    def restore(self, checkpoint: str | Path | None = None) -> None:
        """Continue from the newest (or given) checkpoint of this run."""
        state, source = self.load_checkpoint(checkpoint, ARCHITECTURE_KEYS)
        restore_module(self.model, state["model"], "model", source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.order, self.cursor = state["order"], int(state["cursor"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.best_score, self.best_iteration = float(state["best_score"]), int(state["best_iteration"])
        self.last_scores = dict(state["last_scores"])
