"""The speaker: a seq2seq model with attention that writes an instruction for a trajectory.

Encoder (Speaker-Follower / EnvDrop style): an LSTM reads, step by step, the feature of the view the
agent took (visual + angle features; zeros for STOP); its output attends over that step's 36-view
panorama, and a second LSTM reads both, giving the context ``[B, T, H]`` and the initial decoder
state. Decoder: an LSTM over word embeddings, Luong attention over the context, ``tanh`` of the
concatenation, a projection to the vocabulary. Without input feeding the decoder runs over the whole
instruction in one LSTM call during teacher forcing; decoding runs the same code one token at a time.

Feature dropout zeroes visual channels (never the angle features) with one mask per trajectory,
shared by every step and view, so the model cannot lean on a few channels of one environment.

Decoding (batched, on the model's device) forbids ``<PAD>``, ``<UNK>``, ``<BOS>``, ``<MASK>`` and
``<CLS>`` (an unknown word is useless in a synthetic instruction and has no text form);
every returned sequence ends with ``<EOS>`` (forced at ``max_len``) and is ``<PAD>``-filled after it.
Beam search keeps finished hypotheses in their beam slot with a frozen score and ranks the final
beams by ``score / length ** length_penalty``; ``beam_size=1`` is exactly greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lodestar.agents.vln.trajectories import TrajectoryFeatures
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.runtime.checkpoint import CheckpointError, atomic_save, load_file, restore_module

DECODING_MODES = ("greedy", "sample", "beam")


@dataclass
class SpeakerConfig:
    """Sizes and regularization of the speaker network."""

    embed_dim: int = 128
    hidden_dim: int = 256
    dropout: float = 0.3
    feature_dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("embed_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "feature_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class EncodedTrajectory:
    """Encoder output: context ``[B, T, H]``, its step mask and the decoder's initial ``(h, c)``."""

    context: torch.Tensor
    mask: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor]  # each [1, B, H]

    def repeat(self, times: int) -> EncodedTrajectory:
        """Each trajectory ``times`` times in a row (row ``b * times + i``), for beams and samples."""
        return self.select(
            torch.arange(self.context.shape[0], device=self.context.device).repeat_interleave(times)
        )

    def select(self, rows: torch.Tensor) -> EncodedTrajectory:
        h, c = self.state
        return EncodedTrajectory(self.context[rows], self.mask[rows], (h[:, rows], c[:, rows]))


@dataclass
class Decoded:
    """Decoded instructions: ``tokens [N, L]`` (``<EOS>``-terminated, ``<PAD>`` after), lengths
    (including ``<EOS>``) and the sum of token log-probabilities under the model."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    log_prob: torch.Tensor


class SoftDotAttention(nn.Module):
    """Attention of a query over keys of another width: ``softmax((W q) . k)`` weighted sum of ``k``."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(query_dim, key_dim, bias=False)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``query [..., Q, Hq]``, ``keys [..., K, Hk]``, ``mask [..., K]`` -> ``[..., Q, Hk]``."""
        scores = self.project(query) @ keys.transpose(-1, -2)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        return scores.softmax(-1) @ keys


class Speaker(nn.Module):
    """Trajectory -> instruction model (see the module docstring)."""

    banned: torch.Tensor  # buffer registered in __init__

    def __init__(self, vocab: Vocab, visual_dim: int, angle_dim: int, config: SpeakerConfig) -> None:
        super().__init__()
        self.config = config
        self.visual_dim, self.angle_dim = visual_dim, angle_dim
        self.vocab_size = len(vocab)
        self.pad_id, self.bos_id, self.eos_id = vocab.pad_id, vocab.bos_id, vocab.eos_id
        feat, h, e = visual_dim + angle_dim, config.hidden_dim, config.embed_dim
        self.drop = nn.Dropout(config.dropout)
        self.action_lstm = nn.LSTM(feat, h, batch_first=True)
        self.pano_attention = SoftDotAttention(h, feat)
        self.context_lstm = nn.LSTM(h + feat, h, batch_first=True)
        self.embedding = nn.Embedding(self.vocab_size, e, padding_idx=vocab.pad_id)
        self.decoder_lstm = nn.LSTM(e, h, batch_first=True)
        self.word_attention = SoftDotAttention(h, h)
        self.combine = nn.Linear(2 * h, h)
        self.out = nn.Linear(h, self.vocab_size)
        banned = torch.zeros(self.vocab_size, dtype=torch.bool)
        banned[[vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.mask_id, vocab.cls_id]] = True
        self.register_buffer("banned", banned, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.out.weight.device

    # -- encoder ------------------------------------------------------------------------------------

    def _feature_dropout(self, action: torch.Tensor, pano: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.config.feature_dropout
        if not self.training or p == 0.0:
            return action, pano
        b = action.shape[0]
        keep = torch.ones(b, action.shape[-1], device=action.device)
        keep[:, : self.visual_dim] = F.dropout(keep[:, : self.visual_dim], p, training=True)
        return action * keep[:, None, :], pano * keep[:, None, None, :]

    def encode(self, traj: TrajectoryFeatures) -> EncodedTrajectory:
        """Encode a batch of trajectories (``traj.pano_feats`` is required)."""
        if traj.pano_feats is None:
            raise ValueError("the speaker attends over the panorama: featurize with with_pano=True")
        if traj.feature_dim != self.visual_dim + self.angle_dim:
            raise ValueError(
                f"trajectory features are {traj.feature_dim} wide but the speaker expects "
                f"{self.visual_dim} visual + {self.angle_dim} angle features"
            )
        action, pano = self._feature_dropout(traj.action_feats, traj.pano_feats)
        lengths = traj.lengths.cpu()
        steps, _ = self._run_lstm(self.action_lstm, action, lengths)
        steps = self.drop(steps)
        attended = self.pano_attention(steps.unsqueeze(-2), pano).squeeze(-2)  # [B, T, D + A]
        context, state = self._run_lstm(
            self.context_lstm, self.drop(torch.cat([steps, attended], -1)), lengths
        )
        return EncodedTrajectory(self.drop(context), traj.step_mask, state)

    @staticmethod
    def _run_lstm(
        lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        # Packing makes the final state that of each sequence's last real step, not of its padding.
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state

    # -- decoder ------------------------------------------------------------------------------------

    def _readout_inputs(self, out: torch.Tensor, enc: EncodedTrajectory) -> torch.Tensor:
        """Decoder outputs ``[N, L, H]`` -> ``[N, L, 2H]``: attended context next to the output."""
        out = self.drop(out)
        return torch.cat([self.word_attention(out, enc.context, enc.mask), out], -1)

    def _readout(self, mixed: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.combine(mixed))))

    def _decode_steps(
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], enc: EncodedTrajectory
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits ``[N, L, V]`` for input ``tokens [N, L]`` from ``state``; rows match ``enc``'s rows."""
        out, state = self.decoder_lstm(self.drop(self.embedding(tokens)), state)
        return self._readout(self._readout_inputs(out, enc)), state

    def _teacher_forced(
        self, enc: EncodedTrajectory, tokens: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout inputs ``[N, L - 1, 2H]`` and the targets ``tokens[:, 1:]``."""
        enc = enc.select(rows)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        # No packing: on CPU a packed LSTM is slower than running over the padding.
        out, _ = self.decoder_lstm(self.drop(self.embedding(inputs)), enc.state)
        return self._readout_inputs(out, enc), targets

    def forward(self, enc: EncodedTrajectory, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[N, L - 1, V]`` predicting ``tokens[:, 1:]`` from ``tokens[:, :-1]``.

        ``rows [N]`` says which encoded trajectory each instruction describes.
        """
        mixed, _ = self._teacher_forced(enc, tokens, rows)
        return self._readout(mixed)

    def loss(self, enc: EncodedTrajectory, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per target token, ``<PAD>`` ignored."""
        mixed, targets = self._teacher_forced(enc, tokens, rows)
        real = targets != self.pad_id
        return F.cross_entropy(self._readout(mixed[real]), targets[real])

    # -- decoding -----------------------------------------------------------------------------------

    def _next_log_probs(
        self,
        token: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        enc: EncodedTrajectory,
        last: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Float64 log-probabilities ``[N, V]`` of the next token; only ``<EOS>`` at the last position."""
        logits, state = self._decode_steps(token[:, None], state, enc)
        logits = logits[:, 0].masked_fill(self.banned, float("-inf"))
        if last:
            only_eos = torch.full_like(logits, float("-inf"))
            only_eos[:, self.eos_id] = 0.0
            logits = logits + only_eos
        # float64 so that adding a beam score never merges distinct float32 log-probabilities,
        # which keeps beam search with one beam identical to greedy decoding.
        return logits.log_softmax(-1).double(), state

    @torch.no_grad()
    def generate(self, traj: TrajectoryFeatures, mode: str = "greedy", **kwargs: Any) -> Decoded:
        """Encode and decode in evaluation mode (no dropout); ``kwargs`` go to :meth:`decode`."""
        was_training = self.training
        self.eval()
        try:
            return self.decode(self.encode(traj), mode, **kwargs)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def decode(
        self,
        enc: EncodedTrajectory,
        mode: str = "greedy",
        max_len: int = 80,
        num_return: int = 1,
        temperature: float = 1.0,
        beam_size: int = 4,
        length_penalty: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Decoded:
        """Instructions for every encoded trajectory: ``num_return`` per trajectory, in row order
        ``b * num_return + i`` (the ``num_return`` best beams, or independent samples).

        Dropout is whatever mode the module is in: call ``eval()`` first (or use :meth:`generate`).
        """
        if mode not in DECODING_MODES:
            raise ValueError(f"unknown decoding mode {mode!r}; choose from {DECODING_MODES}")
        if max_len < 1 or num_return < 1:
            raise ValueError(f"max_len ({max_len}) and num_return ({num_return}) must be >= 1")
        if mode == "beam":
            if num_return > beam_size:
                raise ValueError(f"cannot return {num_return} beams from a beam of {beam_size}")
            return self._beam_search(enc, max_len, beam_size, num_return, length_penalty)
        if mode == "greedy":
            if num_return > 1:
                raise ValueError(
                    "greedy decoding is deterministic: use 'sample' or 'beam' for several decodes"
                )
            return self._token_by_token(enc, max_len, lambda logp: logp.topk(1, dim=-1).indices[:, 0])
        if temperature <= 0:
            raise ValueError(f"sampling temperature must be > 0, got {temperature}")

        def sample(logp: torch.Tensor) -> torch.Tensor:
            probs = (logp / temperature).softmax(-1).float()
            return torch.multinomial(probs, 1, generator=generator)[:, 0]

        return self._token_by_token(enc.repeat(num_return) if num_return > 1 else enc, max_len, sample)

    def _token_by_token(
        self, enc: EncodedTrajectory, max_len: int, choose: Callable[[torch.Tensor], torch.Tensor]
    ) -> Decoded:
        n, device = enc.context.shape[0], enc.context.device
        tokens = torch.full((n, max_len), self.pad_id, dtype=torch.int64, device=device)
        log_prob = torch.zeros(n, dtype=torch.float64, device=device)
        alive = torch.arange(n, device=device)  # rows still writing, in their original order
        token, state = torch.full((n,), self.bos_id, dtype=torch.int64, device=device), enc.state
        for t in range(max_len):
            logp, state = self._next_log_probs(token, state, enc, last=t == max_len - 1)
            token = choose(logp)
            tokens[alive, t] = token
            log_prob[alive] += logp.gather(1, token[:, None])[:, 0]
            done = token == self.eos_id
            if bool(done.all()):
                break
            if bool(done.any()):
                # Finished rows leave the batch: the remaining steps only compute what is still needed.
                keep = ~done
                alive, token, enc = alive[keep], token[keep], enc.select(keep)
                state = (state[0][:, keep], state[1][:, keep])
        lengths = (tokens != self.pad_id).sum(1)
        return Decoded(tokens, lengths, log_prob)

    def _beam_search(
        self, enc: EncodedTrajectory, max_len: int, width: int, num_return: int, length_penalty: float
    ) -> Decoded:
        b, device, v = enc.context.shape[0], enc.context.device, self.vocab_size
        enc = enc.repeat(width)
        scores = torch.zeros(b, width, dtype=torch.float64, device=device)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        tokens = torch.full((b, width, max_len), self.pad_id, dtype=torch.int64, device=device)
        finished = torch.zeros(b, width, dtype=torch.bool, device=device)
        finished_row = torch.full((v,), float("-inf"), dtype=torch.float64, device=device)
        finished_row[self.pad_id] = 0.0  # a finished beam continues with <PAD> at no cost
        beams = torch.arange(width, device=device)
        alive = torch.arange(b, device=device)  # trajectories with an unfinished beam
        token, state = torch.full((b * width,), self.bos_id, dtype=torch.int64, device=device), enc.state
        for t in range(max_len):
            a = alive.numel()
            logp, state = self._next_log_probs(token, state, enc, last=t == max_len - 1)
            logp = torch.where(finished[alive, :, None], finished_row, logp.view(a, width, v))
            top, index = (scores[alive, :, None] + logp).view(a, width * v).topk(width, dim=-1)
            parent, token = index // v, index % v
            flat = (torch.arange(a, device=device)[:, None] * width + parent).view(-1)
            state = (state[0][:, flat], state[1][:, flat])
            kept = tokens[alive].gather(1, parent[..., None].expand(a, width, max_len))
            kept[:, :, t] = token
            done_beams = finished[alive].gather(1, parent) | (token == self.eos_id)
            tokens[alive], finished[alive], scores[alive] = kept, done_beams, top
            done = done_beams.all(1)
            if bool(done.all()):
                break
            token = token.view(-1)
            if bool(done.any()):
                # Trajectories whose beams are all finished leave the batch (as rows do in greedy).
                keep = ~done
                rows = (torch.nonzero(keep)[:, 0, None] * width + beams).view(-1)
                alive, token, enc = alive[keep], token[rows], enc.select(rows)
                state = (state[0][:, rows], state[1][:, rows])
        lengths = (tokens != self.pad_id).sum(-1)
        ranked = (scores / lengths.double().pow(length_penalty)).argsort(dim=-1, descending=True, stable=True)
        keep = ranked[:, :num_return]
        # With very short max_len there may be fewer complete hypotheses than asked: repeat the best.
        keep = torch.where(torch.isfinite(scores.gather(1, keep)), keep, keep[:, :1])
        pick = (torch.arange(b, device=device)[:, None] * width + keep).view(-1)
        return Decoded(tokens.view(b * width, max_len)[pick], lengths.view(-1)[pick], scores.view(-1)[pick])


# -- packaging: one file holds everything synthesis needs -----------------------------------------

SPEAKER_FORMAT = "lodestar.speaker/1"


@dataclass
class SpeakerBundle:
    """A trained speaker with what it was trained on: vocabulary and feature conventions."""

    model: Speaker
    vocab: Vocab
    features: str  # feature file name in the dataset's features/ folder
    angle_feature_size: int
    max_instruction_len: int
    info: dict[str, Any]  # iteration, scores, the training config

    def state(self) -> dict[str, Any]:
        return {
            "format": SPEAKER_FORMAT,
            "model": self.model.state_dict(),
            "model_config": asdict(self.model.config),
            "visual_dim": self.model.visual_dim,
            "vocab": list(self.vocab.tokens),
            "features": self.features,
            "angle_feature_size": self.angle_feature_size,
            "max_instruction_len": self.max_instruction_len,
            "info": self.info,
        }

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file + rename)."""
        atomic_save(self.state(), path)


def load_speaker(path: str | Path, device: torch.device | str = "cpu") -> SpeakerBundle:
    """Load a speaker file, or the ``best.pt`` of a speaker run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"speaker checkpoint not found: {path}")
    state = load_file(path, device)
    if not isinstance(state, dict) or state.get("format") != SPEAKER_FORMAT:
        raise CheckpointError(f"{path} is not a speaker file (format {SPEAKER_FORMAT!r})")
    vocab = Vocab(state["vocab"])
    model = Speaker(
        vocab, state["visual_dim"], state["angle_feature_size"], SpeakerConfig(**state["model_config"])
    )
    restore_module(model, state["model"], "speaker", path)
    model.to(device).eval()
    return SpeakerBundle(
        model,
        vocab,
        state["features"],
        state["angle_feature_size"],
        state["max_instruction_len"],
        state["info"],
    )
