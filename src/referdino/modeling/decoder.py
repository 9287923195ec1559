"""Cross-modality decoder with iterative box refinement and confidence-aware query pruning.

Each layer: query self-attention, text cross-attention, deformable cross-attention to the image memory,
FFN (all post-norm). After each layer the queries are scored (`query_pruning.py`) and the top
ceil(N * decay) are kept: 900 -> 450 -> 225 -> 113 -> 57 -> 29 -> 15 for the official configuration.
The same layer class, with one level and 16 points, is the mask decoder's layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .deformable_attention import MultiScaleDeformableAttention
from .heads import MLP, inverse_sigmoid
from .lora import make_linear
from .position_encoding import box_sine_embedding
from .query_pruning import QueryPruner


def _seq_major(x: torch.Tensor) -> torch.Tensor:
    """(N, L, C) with (L, N, C) memory: what a batch-first `nn.MultiheadAttention` transposes its inputs to.

    Given a batch-major tensor, the transposed view cannot be flattened, so when the weights do not require grad
    (inference) `F.linear` runs the in-projections as a batched matmul over a weight expanded to every one of the
    L rows; for bf16 on a CPU (oneDNN) that expanded weight is materialised, L x C x C (900 x 256 x 256 in the
    first decoder layer: 3x slower than fp32). One copy of the small (L, N, C) input avoids it."""
    return x.transpose(0, 1).contiguous().transpose(0, 1)


class DecoderLayer(nn.Module):
    """Self-attention -> text cross-attention -> deformable cross-attention -> FFN (post-norm)."""

    def __init__(
        self, d_model: int, num_heads: int, levels: int, points: int, ffn: int, lora_rank: int = 0, lora_scale: float = 0.0
    ) -> None:
        super().__init__()
        lin = dict(lora_rank=lora_rank, lora_scale=lora_scale)
        self.cross_attn = MultiScaleDeformableAttention(
            d_model, num_heads=num_heads, num_levels=levels, num_points=points, **lin
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.ca_text = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.catext_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = make_linear(d_model, ffn, **lin)
        self.linear2 = make_linear(ffn, d_model, **lin)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        reference: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        memory_padding: torch.Tensor | None,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        need_self_weights: bool = False,
        need_text_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x, pos (N, Q, C); reference (N, Q, levels, 4). Returns (x, self-attn weights, text-attn weights),
        weights head-averaged, None unless asked for."""
        q = _seq_major(x + pos)
        sa, sa_w = self.self_attn(q, q, _seq_major(x), need_weights=need_self_weights)
        x = self.norm2(x + sa)
        text = _seq_major(text)
        ca, ca_w = self.ca_text(_seq_major(x + pos), text, text, key_padding_mask=~text_mask,
                                need_weights=need_text_weights)
        x = self.catext_norm(x + ca)
        x = self.norm1(x + self.cross_attn(x + pos, reference, memory, spatial_shapes, memory_padding))
        x = self.norm3(x + self.linear2(F.relu(self.linear1(x))))
        return x, sa_w, ca_w


@dataclass
class DecoderLayerOutput:
    """What one decoder layer hands on, restricted to its kept queries (in kept order)."""

    hidden: torch.Tensor  #: (N, K, C) after the decoder's final LayerNorm
    reference: torch.Tensor  #: (N, K, 4) boxes that were the layer's input (sigmoid space)
    refined: torch.Tensor  #: (N, K, 4) boxes refined by this layer (sigmoid space)
    kept: torch.Tensor  #: (N, K) indices into the layer's incoming queries
    gate: torch.Tensor | None  #: (N, N_in) pruning confidence, None without pruning


class CrossModalityDecoder(nn.Module):
    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        c = config
        rank = c.lora.active_rank if c.lora.decoder else 0
        self.layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.num_heads, c.num_feature_levels, c.dec_points, c.dim_feedforward, rank, c.lora.scale)
            for _ in range(c.dec_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.ref_point_head = MLP(2 * c.d_model, c.d_model, c.d_model, 2, lora_rank=rank, lora_scale=c.lora.scale)
        self.bbox_embed = MLP(c.d_model, c.d_model, 4, 3)  # shared by all layers and the final heads
        nn.init.constant_(self.bbox_embed.layers[-1].weight, 0.0)
        nn.init.constant_(self.bbox_embed.layers[-1].bias, 0.0)
        self.pruner = QueryPruner(c.query_decay, c.pruning_score, c.class_token_reduce, c.pruning_distinct_iou)
        self.d_model = c.d_model

    def query_pos(self, boxes: torch.Tensor) -> torch.Tensor:
        return self.ref_point_head(box_sine_embedding(boxes, self.d_model // 2))

    def forward(
        self,
        queries: torch.Tensor,
        boxes: torch.Tensor,
        memory: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        memory_padding: torch.Tensor | None,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        forced_kept: list[torch.Tensor] | None = None,
        ratios: torch.Tensor | None = None,
    ) -> list[DecoderLayerOutput]:
        """queries (N, Q, C) content; boxes (N, Q, 4) initial references in sigmoid space; ratios (N, levels, 2)
        valid ratios of padded images (None: unpadded): the references are scaled into each level's valid
        region, and the query position is embedded from the level-0 scaled box (GroundingDINO)."""
        levels = len(spatial_shapes)
        outputs = []
        x = queries
        for i, layer in enumerate(self.layers):
            if ratios is None:
                reference = boxes[:, :, None, :].expand(-1, -1, levels, -1)
                pos = self.query_pos(boxes)
            else:
                reference = boxes[:, :, None, :] * torch.cat((ratios, ratios), -1)[:, None]
                pos = self.query_pos(reference[:, :, 0])
            x, sa_w, ca_w = layer(
                x, pos, reference, memory, spatial_shapes, memory_padding, text, text_mask,
                need_self_weights=self.pruner.enabled,
                need_text_weights=self.pruner.enabled and self.pruner.score == "paper",
            )
            forced = forced_kept[i] if forced_kept is not None else None
            layer_boxes = None  # the boxes this layer gives every query (only the distinct-object pruning uses them)
            if self.pruner.distinct_iou > 0 and forced is None:
                layer_boxes = (self.bbox_embed(x) + inverse_sigmoid(boxes)).sigmoid()
            kept, gate = self.pruner(x, text, text_mask, sa_w, ca_w, forced, layer_boxes)
            x = torch.gather(x, 1, kept[..., None].expand(-1, -1, x.shape[-1]))
            reference_kept = torch.gather(boxes, 1, kept[..., None].expand(-1, -1, 4))
            if layer_boxes is None:
                refined = (self.bbox_embed(x) + inverse_sigmoid(reference_kept)).sigmoid()
            else:  # already computed for every query: keep the kept rows
                refined = torch.gather(layer_boxes, 1, kept[..., None].expand(-1, -1, 4))
            outputs.append(DecoderLayerOutput(self.norm(x), reference_kept, refined, kept, gate))
            boxes = refined.detach()
        return outputs
