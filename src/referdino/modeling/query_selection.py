"""Language-guided two-stage query selection (GroundingDINO Sec. 3.3).

Every encoder token proposes an anchor box (size 0.05 * 2^level around its centre); the encoder output is
projected and scored against the enhanced text (max over tokens); the top-k tokens, in descending score
order, give the decoder's initial reference boxes. The content queries are learned embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .heads import MLP, contrastive_logit
from .padding import valid_sizes


@dataclass
class Proposals:
    scores: torch.Tensor  #: (N, S) max-token similarity of every encoder token
    indices: torch.Tensor  #: (N, K) selected tokens, descending score
    boxes_unsigmoid: torch.Tensor  #: (N, K, 4) refined proposal boxes before the sigmoid (carries gradient)
    anchors: torch.Tensor  #: (N, K, 4) the selected fixed anchors, sigmoid space
    features: torch.Tensor  #: (N, K, C) projected encoder features of the selected tokens


def anchor_proposals(
    spatial_shapes: list[tuple[int, int]], padding: torch.Tensor | None, n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (anchors in logit space (N, S, 4) with +inf where invalid, validity (N, S) bool)."""
    anchors = []
    sizes = valid_sizes(padding, spatial_shapes) if padding is not None else None
    for lvl, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(
            torch.linspace(0, h - 1, h, dtype=torch.float32, device=device),
            torch.linspace(0, w - 1, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        # centres are normalised by the VALID width/height of each image (GroundingDINO), W x H without padding
        scale = torch.tensor([w, h], dtype=torch.float32, device=device) if sizes is None else sizes[lvl][:, None]
        centre = (torch.stack((xs, ys), -1).view(-1, 2) + 0.5) / scale
        centre = centre.expand(n, -1, -1)
        wh = torch.full_like(centre, 0.05 * (2.0**lvl))
        anchors.append(torch.cat((centre, wh), -1))
    boxes = torch.cat(anchors, 1)
    valid = ((boxes > 0.01) & (boxes < 0.99)).all(-1)
    if padding is not None:
        valid = valid & ~padding
    logits = torch.log(boxes / (1 - boxes)).masked_fill(~valid[..., None], float("inf"))
    return logits, valid


class QuerySelection(nn.Module):
    """Keys: `enc_output`, `enc_output_norm`, `enc_out_bbox_embed`."""

    def __init__(self, d_model: int, num_queries: int, token_reduce: str = "max") -> None:
        super().__init__()
        self.num_queries = num_queries
        self.token_reduce = token_reduce
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.enc_out_bbox_embed = MLP(d_model, d_model, 4, 3)

    def forward(
        self,
        memory: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        padding: torch.Tensor | None,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        forced_indices: torch.Tensor | None = None,
    ) -> Proposals:
        n = memory.shape[0]
        anchor_logits, valid = anchor_proposals(spatial_shapes, padding, n, memory.device)
        features = self.enc_output_norm(self.enc_output(memory.masked_fill(~valid[..., None], 0.0)))
        # the scores rank ~20k tokens for the top-k: float32 (bf16 rounding would make ties); boxes live in
        # inverse-sigmoid space and stay float32 (the anchors are float32)
        scores = contrastive_logit(features.float(), text.float(), text_mask, self.token_reduce)
        boxes = self.enc_out_bbox_embed(features) + anchor_logits
        if forced_indices is not None:
            indices = forced_indices.to(memory.device)
        else:
            indices = scores.topk(min(self.num_queries, scores.shape[1]), dim=1).indices

        def take(t: torch.Tensor) -> torch.Tensor:
            return torch.gather(t, 1, indices[..., None].expand(-1, -1, t.shape[-1]))

        return Proposals(scores, indices, take(boxes), take(anchor_logits).sigmoid(), take(features))
