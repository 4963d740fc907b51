"""The follower: a cross-modal transformer with a recurrent state token (recurrent VLN-BERT style).

Per episode the instruction is encoded once by a transformer text encoder (word + position
embeddings; the ``<BOS>`` output acts as ``[CLS]`` and initializes the *state token*). At every step
the state token, the navigable candidates (visual feature of the view facing each neighbour + angle
features; the last slot is STOP and gets a learned embedding) and the 36-view panorama form one
visual sequence. Each cross-modal layer runs self-attention over that sequence and cross-attention
from it to the (fixed) instruction encoding. The state output scores every candidate (masked
logits), feeds the value head used by A2C, and, combined with the candidates weighted by the
action distribution, becomes the next state token: the agent's memory of its history.

Feature dropout (EnvDrop) zeroes visual channels, never angle features, with one mask per sample
shared by its candidates and panorama views.

:class:`FollowerMemory` holds the per-env text encoding and state token of running episodes;
:meth:`Follower.observe` refreshes the rows whose episode just started and takes one step.
:class:`FollowerPolicy` wraps that for :class:`lodestar.agents.rollout.RolloutCollector` (greedy, sampling or
teacher-forced rows, with a DAgger mixing probability).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from lodestar.agents.vln.observations import view_features
from lodestar.envs.base import Observation, dict_observation
from lodestar.envs.nav.data.tokenizer import Vocab
from lodestar.envs.nav.sim.feature_table import FeatureTable
from lodestar.runtime.checkpoint import CheckpointError, atomic_save, load_file, restore_module

PANO_MODES = ("mean", "heading", "full", "none")
NEG_INF = -1e9  # masked logits: finite, so that 0 * log p stays 0 in entropies


@dataclass
class FollowerConfig:
    """Sizes and regularization of the follower network."""

    hidden_dim: int = 128
    num_heads: int = 4
    ffn_dim: int = 256
    text_layers: int = 2
    cross_layers: int = 2
    dropout: float = 0.1
    feature_dropout: float = 0.3
    # Panorama tokens: "mean" is one token averaging the 36 views (where am I), "heading" pools the
    # three elevations of each of the 12 headings, "full" keeps all 36 views, "none" leaves it out.
    pano: Literal["mean", "heading", "full", "none"] = "mean"
    max_instruction_len: int = 80

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_heads", "ffn_dim", "cross_layers", "max_instruction_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.text_layers < 0:
            raise ValueError(f"text_layers must be >= 0, got {self.text_layers}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        for name in ("dropout", "feature_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.pano not in PANO_MODES:
            raise ValueError(f"pano must be one of {PANO_MODES}, got {self.pano!r}")


# Keys of FollowerConfig that shape parameters: a checkpoint loaded into a model must agree on them.
ARCHITECTURE_FIELDS = (
    "hidden_dim",
    "num_heads",
    "ffn_dim",
    "text_layers",
    "cross_layers",
    "pano",
    "max_instruction_len",
)


@dataclass
class TextEncoding:
    """Encoded instructions: ``feats [B, L, H]`` and the mask of real tokens ``[B, L]``."""

    feats: torch.Tensor
    mask: torch.Tensor


@dataclass
class FollowerMemory:
    """What the follower carries across the steps of ``N`` running episodes.

    ``text_kv`` holds the instruction's keys and values of every cross-modal layer
    (``[N, 2 * layers, heads, L, H / heads]``): the instruction is fixed during an episode, so they are
    projected once per episode instead of once per step.
    """

    text_kv: torch.Tensor
    text_mask: torch.Tensor  # [N, L] bool
    state: torch.Tensor  # [N, H]

    def detach(self) -> FollowerMemory:
        return FollowerMemory(self.text_kv.detach(), self.text_mask, self.state.detach())

    def select(self, rows: torch.Tensor) -> FollowerMemory:
        return FollowerMemory(self.text_kv[rows], self.text_mask[rows], self.state[rows])

    def trimmed(self) -> FollowerMemory:
        """Without the trailing token columns that are padding in every row."""
        width = max(int(self.text_mask.sum(1).max()), 1)
        return FollowerMemory(self.text_kv[:, :, :, :width], self.text_mask[:, :width], self.state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"text_kv": self.text_kv.cpu(), "text_mask": self.text_mask.cpu(), "state": self.state.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device: torch.device) -> FollowerMemory:
        return cls(state["text_kv"].to(device), state["text_mask"].to(device), state["state"].to(device))


@dataclass
class StepOutput:
    """One step: masked candidate ``logits [B, C]`` (STOP last), ``value [B]``, next ``state [B, H]``."""

    logits: torch.Tensor
    value: torch.Tensor
    state: torch.Tensor
    cand_out: torch.Tensor  # [B, C, H] contextualized candidates


class Attention(nn.Module):
    """Multi-head attention whose keys/values can be projected once and reused (see ``kv``)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.value, self.out = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        # No key bias: it adds the same logit to every key of a query, which softmax ignores.
        self.key = nn.Linear(dim, dim, bias=False)

    def kv(self, context: torch.Tensor) -> torch.Tensor:
        """Keys and values of ``context [B, L, H]`` as ``[B, 2, heads, L, H / heads]``."""
        b, length, dim = context.shape
        kv = torch.stack([self.key(context), self.value(context)], dim=1)
        return kv.view(b, 2, length, self.heads, dim // self.heads).transpose(2, 3)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Attend from ``x [B, S, H]`` to projected ``kv``; ``valid [B, L]`` is True on keys to use."""
        b, length, dim = x.shape
        q = self.query(x).view(b, length, self.heads, dim // self.heads).transpose(1, 2)
        mask = None if valid is None else valid[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, kv[:, 0], kv[:, 1], attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(out.transpose(1, 2).reshape(b, length, dim))


class TextLayer(nn.Module):
    """Pre-norm transformer encoder block over the instruction."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_attn, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.norm_attn(x)
        x = x + self.dropout(self.attn(h, self.attn.kv(h), valid))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class CrossModalLayer(nn.Module):
    """Pre-norm block: self-attention over ``x``, cross-attention from ``x`` to a context, FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ffn = (
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
        )
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def context(self, context: torch.Tensor) -> torch.Tensor:
        """The context's keys/values for this layer (reusable while the context does not change)."""
        return self.cross_attn.kv(context)

    def forward(
        self,
        x: torch.Tensor,
        x_valid: torch.Tensor | None,
        context_kv: torch.Tensor,
        context_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """``x [B, S, H]``; masks are True on positions that take part."""
        h = self.norm_self(x)
        x = x + self.dropout(self.self_attn(h, self.self_attn.kv(h), x_valid))
        x = x + self.dropout(self.cross_attn(self.norm_cross(x), context_kv, context_valid))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class Follower(nn.Module):
    """The navigation policy (see the module docstring)."""

    def __init__(
        self, vocab_size: int, visual_dim: int, angle_dim: int, config: FollowerConfig, pad_id: int = 0
    ) -> None:
        super().__init__()
        self.config, self.visual_dim, self.angle_dim = config, visual_dim, angle_dim
        self.vocab_size, self.pad_id = vocab_size, pad_id
        h = config.hidden_dim
        self.word_embedding = nn.Embedding(vocab_size, h, padding_idx=pad_id)
        self.position_embedding = nn.Embedding(config.max_instruction_len, h)
        self.text_norm = nn.LayerNorm(h)
        self.text_layers = nn.ModuleList(
            TextLayer(h, config.num_heads, config.ffn_dim, config.dropout) for _ in range(config.text_layers)
        )
        self.visual_proj = nn.Linear(visual_dim, h)
        self.angle_proj = nn.Linear(angle_dim, h)
        self.view_norm = nn.LayerNorm(h)
        # Token types: 0 state, 1 candidate, 2 panorama view.
        self.type_embedding = nn.Embedding(3, h)
        self.stop_embedding = nn.Parameter(torch.zeros(h))
        self.state_init = nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h))
        self.layers = nn.ModuleList(
            CrossModalLayer(h, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.cross_layers)
        )
        self.out_norm = nn.LayerNorm(h)
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h, bias=False)  # a key bias would shift every candidate's logit alike
        self.state_update = nn.Sequential(nn.Linear(2 * h, h), nn.LayerNorm(h))
        self.value_head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))
        self.feature_drop = config.feature_dropout
        self.dropout = nn.Dropout(config.dropout)
        # BERT-style small embeddings: the MLM decoder is tied to the word embeddings, and N(0, 1)
        # rows would start it with logits of size sqrt(hidden_dim).
        for embedding in (self.word_embedding, self.position_embedding, self.type_embedding):
            nn.init.normal_(embedding.weight, std=0.02)
        with torch.no_grad():
            self.word_embedding.weight[pad_id].zero_()
        nn.init.normal_(self.stop_embedding, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.word_embedding.weight.device

    # -- language ---------------------------------------------------------------------------------
    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Word + position embeddings ``[B, L, H]`` (shared with the MLM head's tied decoder)."""
        if tokens.shape[1] > self.config.max_instruction_len:
            raise ValueError(
                f"instructions of {tokens.shape[1]} tokens exceed max_instruction_len "
                f"({self.config.max_instruction_len})"
            )
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.dropout(self.text_norm(self.word_embedding(tokens) + self.position_embedding(positions)))

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> TextEncoding:
        """Encode ``tokens [B, L]`` (``mask`` True on real tokens); trailing all-pad columns are cut."""
        width = max(int(mask.sum(1).max()), 1)
        tokens, mask = tokens[:, :width], mask[:, :width]
        x = self.embed_text(tokens)
        for layer in self.text_layers:
            x = layer(x, mask)
        return TextEncoding(x, mask)

    def start(self, tokens: torch.Tensor, mask: torch.Tensor, length: int | None = None) -> FollowerMemory:
        """Memory of new episodes: the instruction's keys/values per layer and the first state token.

        The state token comes from the ``<BOS>`` output (the ``[CLS]`` of the instruction). ``length``
        pads the token dimension (to stack with other episodes' memory).
        """
        text = self.encode_text(tokens, mask)
        # self.layers holds CrossModalLayer modules only (see __init__); ModuleList yields plain Modules.
        kv = torch.cat([cast(CrossModalLayer, layer).context(text.feats) for layer in self.layers], dim=1)
        token_mask = text.mask
        if length is not None and length > kv.shape[3]:
            kv = F.pad(kv, (0, 0, 0, length - kv.shape[3]))
            token_mask = F.pad(token_mask, (0, length - token_mask.shape[1]), value=False)
        return FollowerMemory(kv, token_mask, self.state_init(text.feats[:, 0]))

    # -- vision -----------------------------------------------------------------------------------
    def embed_views(self, feats: torch.Tensor, drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Project ``[..., D + A]`` view features to ``[..., H]``; ``drop_mask`` scales visual channels."""
        visual, angle = feats[..., : self.visual_dim], feats[..., self.visual_dim :]
        if angle.shape[-1] != self.angle_dim:
            raise ValueError(
                f"view features have {feats.shape[-1]} channels, expected visual {self.visual_dim} + "
                f"angle {self.angle_dim}"
            )
        if drop_mask is not None:
            visual = visual * drop_mask
        return self.view_norm(self.visual_proj(visual) + self.angle_proj(angle))

    def _feature_drop_mask(self, batch: int, device: torch.device) -> torch.Tensor | None:
        if not self.training or self.feature_drop == 0.0:
            return None
        keep = torch.rand(batch, 1, self.visual_dim, device=device) >= self.feature_drop
        return keep.to(torch.float32) / (1.0 - self.feature_drop)

    def _pano_tokens(self, pano_feats: torch.Tensor | None) -> torch.Tensor | None:
        mode = self.config.pano
        if mode == "none":
            return None
        if pano_feats is None:
            raise ValueError(f"this follower reads the panorama (pano={mode!r}) but got no pano_feats")
        if mode == "heading":  # views ix, ix + 12, ix + 24 share a heading
            return pano_feats.view(pano_feats.shape[0], 3, 12, -1).mean(1)
        if mode == "mean":
            return pano_feats.mean(1, keepdim=True)
        return pano_feats

    # -- one navigation step ----------------------------------------------------------------------
    def step(
        self,
        memory: FollowerMemory,
        cand_feats: torch.Tensor,
        cand_mask: torch.Tensor,
        pano_feats: torch.Tensor | None = None,
    ) -> StepOutput:
        """Score ``cand_feats [B, C, D + A]`` (STOP in the last slot, always valid) given the memory."""
        b, c = cand_feats.shape[:2]
        memory = memory.trimmed()
        drop = self._feature_drop_mask(b, cand_feats.device)
        types = self.type_embedding.weight
        cands = self.embed_views(cand_feats[:, :-1], drop)
        cands = torch.cat([cands, self.stop_embedding.expand(b, 1, -1)], dim=1) + types[1]
        parts = [(memory.state + types[0]).unsqueeze(1), cands]
        valid = [cand_mask.new_ones(b, 1), cand_mask]
        pano = self._pano_tokens(pano_feats)
        if pano is not None:
            parts.append(self.embed_views(pano, drop) + types[2])
            valid.append(cand_mask.new_ones(b, pano.shape[1]))
        x = self.dropout(torch.cat(parts, dim=1))
        x_valid = torch.cat(valid, dim=1)
        kv = memory.text_kv
        for i, layer in enumerate(self.layers):
            x = layer(x, x_valid, kv[:, 2 * i : 2 * i + 2], memory.text_mask)
        x = self.out_norm(x)
        state_out, cand_out = x[:, 0], x[:, 1 : 1 + c]
        logits = (self.query(state_out).unsqueeze(1) * self.key(cand_out)).sum(-1) / math.sqrt(x.shape[-1])
        logits = logits.masked_fill(~cand_mask, NEG_INF)
        summary = (logits.softmax(-1).unsqueeze(-1) * cand_out).sum(1)
        new_state = self.state_update(torch.cat([state_out, summary], dim=-1))
        value = self.value_head(state_out).squeeze(-1)
        return StepOutput(logits, value, new_state, cand_out)

    def observe(
        self,
        memory: FollowerMemory | None,
        obs: dict[str, torch.Tensor],
        fresh_text: torch.Tensor | None = None,
        fresh_state: torch.Tensor | None = None,
        features: FeatureTable | None = None,
    ) -> tuple[StepOutput, FollowerMemory]:
        """One step on a :class:`~lodestar.envs.nav.sim.env.NavVecEnv` observation batch.

        Rows in ``fresh_text`` re-encode their instruction, rows in ``fresh_state`` restart their state
        token (new episodes need both); with ``memory=None`` every row starts fresh. Index observations
        gather their views from ``features`` (the env's ``feature_table``; see ``view_features``).
        """
        tokens, token_mask = obs["instr_ids"], obs["instr_mask"]
        full = tokens.shape[1]
        if memory is None:
            memory = self.start(tokens, token_mask, full)
        else:
            rows_text = None if fresh_text is None else torch.nonzero(fresh_text).flatten()
            rows_state = None if fresh_state is None else torch.nonzero(fresh_state).flatten()
            if rows_text is not None and rows_text.numel():
                new = self.start(tokens[rows_text], token_mask[rows_text], full)
                memory = FollowerMemory(
                    memory.text_kv.index_copy(0, rows_text, new.text_kv),
                    memory.text_mask.index_copy(0, rows_text, new.text_mask),
                    memory.state,
                )
                # New episodes restart their state from their own instruction.
                if rows_state is not None and rows_state.numel():
                    position = torch.full((len(tokens),), -1, dtype=torch.int64, device=tokens.device)
                    position[rows_text] = torch.arange(len(rows_text), device=tokens.device)
                    source = position[rows_state]
                    if bool((source < 0).any()):
                        raise ValueError("rows restarting their state must also re-encode their instruction")
                    memory.state = memory.state.index_copy(0, rows_state, new.state[source])
            elif rows_state is not None and rows_state.numel():
                raise ValueError("rows restarting their state must also re-encode their instruction")
        cand_feats, pano_feats = view_features(obs, features, self.config.pano != "none")
        out = self.step(memory, cand_feats, obs["cand_mask"], pano_feats)
        return out, FollowerMemory(memory.text_kv, memory.text_mask, out.state)

    def unroll(
        self,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        cand_feats: torch.Tensor,
        cand_mask: torch.Tensor,
        pano_feats: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced pass along given steps: ``[B, T, C, ...]`` inputs -> logits ``[B, T, C]``, values ``[B, T]``.

        The state token is carried from step to step; padded steps only cost compute (their
        ``cand_mask`` must still allow STOP), callers mask their losses.
        """
        memory = self.start(tokens, token_mask)
        logits, values = [], []
        for t in range(cand_feats.shape[1]):
            pano = None if pano_feats is None else pano_feats[:, t]
            out = self.step(memory, cand_feats[:, t], cand_mask[:, t], pano)
            logits.append(out.logits)
            values.append(out.value)
            memory = FollowerMemory(memory.text_kv, memory.text_mask, out.state)
        return torch.stack(logits, 1), torch.stack(values, 1)


# -- acting in a vector env ------------------------------------------------------------------------


class FollowerPolicy:
    """A :class:`~lodestar.agents.rollout.RolloutCollector` policy over ``num_envs`` running episodes.

    ``mode`` picks the learner's action: ``"greedy"`` (argmax) or ``"sample"``. Rows in
    ``teacher_rows`` execute the teacher action (teacher forcing); other rows execute the teacher
    action with probability ``teacher_prob`` (DAgger's mixture policy) and the learner's otherwise.
    Pass :meth:`on_episode_end` to the collector so finished rows restart their memory, and
    ``features=env.feature_table`` for an env with index observations.
    Extras returned per step: ``learner_action``, and ``teacher_action`` when the env observes it
    (``NavVecEnv(oracle=True)``; teacher forcing and DAgger need it, greedy evaluation does not).
    """

    def __init__(
        self,
        model: Follower,
        num_envs: int,
        mode: str = "greedy",
        teacher_rows: torch.Tensor | None = None,
        teacher_prob: float = 0.0,
        generator: torch.Generator | None = None,
        features: FeatureTable | None = None,
    ) -> None:
        if mode not in ("greedy", "sample"):
            raise ValueError(f"policy mode must be 'greedy' or 'sample', got {mode!r}")
        if not 0.0 <= teacher_prob <= 1.0:
            raise ValueError(f"teacher_prob must be in [0, 1], got {teacher_prob}")
        self.model, self.num_envs, self.mode = model, num_envs, mode
        device = model.device
        self.teacher_rows = (
            torch.zeros(num_envs, dtype=torch.bool, device=device)
            if teacher_rows is None
            else teacher_rows.to(device=device, dtype=torch.bool)
        )
        self.teacher_prob = teacher_prob
        self.generator, self.features = generator, features
        self.memory: FollowerMemory | None = None
        self.fresh = torch.ones(num_envs, dtype=torch.bool, device=device)

    def reset(self) -> None:
        self.memory = None
        self.fresh.fill_(True)

    def on_episode_end(self, done: torch.Tensor) -> None:
        self.fresh |= done.to(self.fresh.device)

    def learner_step(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance the memory by one observation; the action logits and the learner's action."""
        with torch.no_grad():
            out, self.memory = self.model.observe(self.memory, obs, self.fresh, self.fresh, self.features)
        self.fresh, logits = torch.zeros_like(self.fresh), out.logits
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError("the follower produced non-finite action logits (diverged parameters?)")
        if self.mode == "greedy":
            return logits, logits.argmax(-1)
        return logits, torch.multinomial(logits.softmax(-1), 1, generator=self.generator).squeeze(-1)

    def __call__(self, obs: Observation) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obs = dict_observation(obs)
        logits, learner = self.learner_step(obs)
        teacher = obs.get("teacher_action")
        if teacher is None:
            if self.teacher_prob > 0.0 or bool(self.teacher_rows.any()):
                raise ValueError("teacher forcing needs the teacher action: build the env with oracle=True")
            return learner, {"learner_action": learner}
        use_teacher = self.teacher_rows.clone()
        if self.teacher_prob > 0.0:
            coin = torch.rand(self.num_envs, device=logits.device, generator=self.generator)
            use_teacher |= coin < self.teacher_prob
        action = torch.where(use_teacher, teacher, learner)
        return action, {"learner_action": learner, "teacher_action": teacher}

    # -- checkpointing of the running episodes' memory -------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": None if self.memory is None else self.memory.state_dict(),
            "fresh": self.fresh.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.model.device
        self.memory = (
            None if state["memory"] is None else FollowerMemory.from_state_dict(state["memory"], device)
        )
        self.fresh = state["fresh"].to(device)


# -- packaging: one self-contained follower file ---------------------------------------------------

FOLLOWER_FORMAT = "lodestar.follower/1"


@dataclass
class FollowerBundle:
    """A follower with the data conventions it was trained with (vocabulary, features, angles)."""

    model: Follower
    vocab: Vocab
    features: str
    angle_feature_size: int
    max_instruction_len: int
    info: dict[str, Any]

    def state(self) -> dict[str, Any]:
        return {
            "format": FOLLOWER_FORMAT,
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
        atomic_save(self.state(), path)


def bundle_from_state(
    state: dict[str, Any], source: str, device: torch.device | str = "cpu"
) -> FollowerBundle:
    """Rebuild a :class:`FollowerBundle` from :meth:`FollowerBundle.state` output."""
    if not isinstance(state, dict) or state.get("format") != FOLLOWER_FORMAT:
        raise CheckpointError(f"{source} does not hold a follower (format {FOLLOWER_FORMAT!r})")
    vocab = Vocab(state["vocab"])
    try:
        config = FollowerConfig(**state["model_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{source}: the follower's model config does not fit this version ({exc})"
        ) from None
    model = Follower(
        len(vocab), int(state["visual_dim"]), int(state["angle_feature_size"]), config, vocab.pad_id
    )
    restore_module(model, state["model"], "follower", source)
    model.to(device)
    return FollowerBundle(
        model,
        vocab,
        state["features"],
        int(state["angle_feature_size"]),
        int(state["max_instruction_len"]),
        dict(state["info"]),
    )


def load_follower(path: str | Path, device: torch.device | str = "cpu") -> FollowerBundle:
    """Load a follower from a ``best.pt`` file, a run checkpoint (``ckpt_*.pt``) or a run directory.

    A run directory resolves to its ``best.pt`` when present, else to its newest checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        best = path / "best.pt"
        if best.is_file():
            path = best
        else:
            checkpoints = sorted((path / "checkpoints").glob("ckpt_*.pt"))
            if not checkpoints:
                raise FileNotFoundError(f"{path} holds neither best.pt nor checkpoints/ckpt_*.pt")
            path = checkpoints[-1]
    if not path.is_file():
        raise FileNotFoundError(f"follower checkpoint not found: {path}")
    state = load_file(path, device)
    if isinstance(state, dict) and "follower" in state:
        state = state["follower"]
    return bundle_from_state(state, str(path), device)
