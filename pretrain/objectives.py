"""Pretraining objectives on image-text-action triplets: masked language modelling and action prediction.

- **MLM** (conditioned on the trajectory): the corrupted instruction goes through the follower's text
  encoder, then through cross-modal layers in which the words attend to the route (the view taken
  at every step, embedded by the follower's own view encoder, plus a step-position embedding). A
  transform and a decoder tied to the word embeddings predict the original words; the loss counts
  masked positions only.
- **Action prediction**: the follower runs along the route with its recurrent state token (the
  history), seeing the clean instruction, the candidates and the panorama of each step, and is
  trained with cross-entropy to pick the action actually taken.

Losses are sums of per-sample losses divided by the batch size, so that the gradient averaged over
data-parallel ranks equals the gradient of the same global batch in one process.

:class:`PretrainModel` puts follower and MLM head behind one ``forward`` that returns the losses, the
shape ``DistributedDataParallel`` wants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lodestar.agents.vln.follower import CrossModalLayer, Follower
from lodestar.pretrain.datasets import IGNORE_INDEX, PretrainBatch


@dataclass
class ObjectiveConfig:
    """Weights of the objectives and the size of the MLM head."""

    mlm_weight: float = 1.0
    action_weight: float = 1.0
    mlm_layers: int = 1
    max_route_steps: int = 32

    def __post_init__(self) -> None:
        if self.mlm_weight < 0 or self.action_weight < 0 or self.mlm_weight + self.action_weight == 0:
            raise ValueError("objective weights must be >= 0 and not both zero")
        if self.mlm_layers < 1 or self.max_route_steps < 1:
            raise ValueError("mlm_layers and max_route_steps must be >= 1")


class MLMHead(nn.Module):
    """Route-conditioned masked-word prediction on top of a :class:`Follower`'s encoders."""

    def __init__(self, follower: Follower, layers: int, max_route_steps: int) -> None:
        super().__init__()
        c = follower.config
        h = c.hidden_dim
        self.step_embedding = nn.Embedding(max_route_steps, h)
        self.layers = nn.ModuleList(
            CrossModalLayer(h, c.num_heads, c.ffn_dim, c.dropout) for _ in range(layers)
        )
        self.transform = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.LayerNorm(h))
        self.bias = nn.Parameter(torch.zeros(follower.vocab_size))

    def forward(
        self,
        follower: Follower,
        inputs: torch.Tensor,
        token_mask: torch.Tensor,
        route_feats: torch.Tensor,
        step_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Vocabulary logits ``[B, L, V]`` for ``inputs [B, L]`` given ``route_feats [B, T, D + A]``."""
        steps = route_feats.shape[1]
        if steps > self.step_embedding.num_embeddings:
            raise ValueError(
                f"a route of {steps} steps exceeds max_route_steps ({self.step_embedding.num_embeddings})"
            )
        text = follower.encode_text(inputs, token_mask)
        route = follower.embed_views(route_feats)
        route = route + self.step_embedding(torch.arange(steps, device=route.device))
        x = text.feats
        for layer in self.layers:
            # self.layers holds CrossModalLayer modules only (see __init__); ModuleList yields plain Modules.
            x = layer(x, text.mask, cast(CrossModalLayer, layer).context(route), step_mask)
        logits = self.transform(x) @ follower.word_embedding.weight.t() + self.bias
        # encode_text trims trailing padding; give back the caller's width.
        if logits.shape[1] < inputs.shape[1]:
            logits = F.pad(logits, (0, 0, 0, inputs.shape[1] - logits.shape[1]))
        return logits


def per_sample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the labelled positions of each sample ``[B]`` (0 without any) and the counts."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    counts = (labels != IGNORE_INDEX).sum(1)
    return flat.sum(1) / counts.clamp(min=1), counts


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of labelled positions predicted right (a detached scalar)."""
    valid = labels != IGNORE_INDEX
    correct = (logits.argmax(-1) == labels) & valid
    return (correct.sum() / valid.sum().clamp(min=1)).detach().float()


class PretrainModel(nn.Module):
    """Follower + MLM head; ``forward(batch)`` returns the weighted loss and its parts."""

    def __init__(self, follower: Follower, config: ObjectiveConfig) -> None:
        super().__init__()
        self.follower = follower
        self.config = config
        self.mlm = MLMHead(follower, config.mlm_layers, config.max_route_steps)

    def forward(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        c, f, size = self.config, self.follower, batch.batch_size
        out: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=batch.tokens.device)
        if c.mlm_weight > 0:
            logits = self.mlm(f, batch.mlm_inputs, batch.token_mask, batch.route_feats, batch.steps.step_mask)
            losses, _ = per_sample_cross_entropy(logits, batch.mlm_labels)
            out["mlm"] = losses.sum() / size
            out["mlm_accuracy"] = accuracy(logits, batch.mlm_labels)
            total = total + c.mlm_weight * out["mlm"]
        if c.action_weight > 0:
            s = batch.steps
            logits, _ = f.unroll(batch.tokens, batch.token_mask, s.cand_feats, s.cand_mask, s.pano_feats)
            losses, _ = per_sample_cross_entropy(logits, batch.actions)
            out["action"] = losses.sum() / size
            out["action_accuracy"] = accuracy(logits, batch.actions)
            total = total + c.action_weight * out["action"]
        out["loss"] = total
        return out
