"""Prediction heads: the box MLP, the contrastive (text-similarity) class head, inverse sigmoid."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .lora import make_linear


class MLP(nn.Module):
    """`num_layers` linears with ReLU between them (keys `layers.{i}`)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, *, lora_rank: int = 0, lora_scale: float = 0.0
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            make_linear(a, b, lora_rank=lora_rank, lora_scale=lora_scale) for a, b in zip(dims[:-1], dims[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs in the dtype of its weights (inputs such as float32 box embeddings are cast to it)."""
        x = x.to(self.layers[0].weight.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def token_similarity(queries: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
    """Dot product of every query with every text token; padded tokens get -inf.

    queries (B, Q, C), text (B, L, C), text_mask (B, L) bool True on real tokens -> (B, Q, L).
    """
    sim = queries @ text.transpose(-1, -2)
    if text_mask is not None:
        sim = sim.masked_fill(~text_mask[:, None, :], float("-inf"))
    return sim


def contrastive_logit(
    queries: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None, reduce: str = "max"
) -> torch.Tensor:
    """GroundingDINO's class head reduced to one referring logit -> (B, Q).

    ``reduce="max"`` (official): the largest query-token dot product. ``"mean"``: the mean over the real tokens.
    """
    if reduce == "max":
        return token_similarity(queries, text, text_mask).max(dim=-1).values
    sim = token_similarity(queries, text, None)
    if text_mask is None:
        return sim.mean(dim=-1)
    weights = text_mask[:, None, :].to(sim.dtype)
    return (sim * weights).sum(dim=-1) / weights.sum(dim=-1).clamp(min=1.0)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
