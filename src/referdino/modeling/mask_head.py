"""Mask branch: FPN pixel decoder (F_seg at stride 4) and the grounding-guided deformable mask decoder
(ReferDINO Sec. 3.2): queries refined by self-attention, text cross-attention and box-referenced deformable
attention on F_seg; mask logits = <query, F_seg>."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .decoder import DecoderLayer


class PixelDecoder(nn.Module):
    """FPN over encoder memory (strides 32, 16, 8) and the Swin stride-4 map (keys lay1..5, gn1..5, adapter1..3,
    out_lay). Upsampling is legacy nearest to the skip's exact size."""

    def __init__(self, d_model: int, stride4_channels: int, widths: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.lay1 = nn.Conv2d(d_model, w1, 3, padding=1)
        self.gn1 = nn.GroupNorm(8, w1)
        self.lay2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.gn2 = nn.GroupNorm(8, w2)
        self.lay3 = nn.Conv2d(w2, w3, 3, padding=1)
        self.gn3 = nn.GroupNorm(8, w3)
        self.lay4 = nn.Conv2d(w3, w4, 3, padding=1)
        self.gn4 = nn.GroupNorm(8, w4)
        self.adapter1 = nn.Conv2d(d_model, w2, 1)
        self.adapter2 = nn.Conv2d(d_model, w3, 1)
        self.adapter3 = nn.Conv2d(stride4_channels, w4, 1)
        self.lay5 = nn.Conv2d(w4, w5, 3, padding=1)
        self.gn5 = nn.GroupNorm(8, w5)
        self.out_lay = nn.Conv2d(w5, out_dim, 3, padding=1)

    def forward(self, m32: torch.Tensor, m16: torch.Tensor, m8: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.gn1(self.lay1(m32)))
        y = F.relu(self.gn2(self.lay2(y)))
        y = self.adapter1(m16) + F.interpolate(y, size=m16.shape[-2:], mode="nearest")
        y = F.relu(self.gn3(self.lay3(y)))
        y = self.adapter2(m8) + F.interpolate(y, size=m8.shape[-2:], mode="nearest")
        y = F.relu(self.gn4(self.lay4(y)))
        y = self.adapter3(f4) + F.interpolate(y, size=f4.shape[-2:], mode="nearest")
        y = F.relu(self.gn5(self.lay5(y)))
        # F_seg in channels-last memory: the widest convolution (to mask_dim channels at stride 4) runs much faster
        # so (bf16 on a CPU: ~35x, fp32 ~1.5x), and the mask decoder reads it as (N, H*W, C) rows without a copy
        return self.out_lay(y.contiguous(memory_format=torch.channels_last))


class MaskDecoder(nn.Module):
    """`layers.{i}`: decoder layers with one level and `points` sampling points, no box refinement."""

    def __init__(self, d_model: int, num_heads: int, num_layers: int, points: int, ffn: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, 1, points, ffn) for _ in range(num_layers))

    def forward(
        self,
        queries: torch.Tensor,
        pos: torch.Tensor,
        boxes: torch.Tensor,
        pixel_features: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries, pos (N, Q, C); boxes (N, Q, 4); pixel_features (N, C, H, W).
        Returns (mask embeddings (N, Q, C), mask logits (N, Q, H, W))."""
        h, w = pixel_features.shape[-2:]
        value = pixel_features.flatten(2).transpose(1, 2)
        reference = boxes[:, :, None, :]
        x = queries
        for layer in self.layers:
            x, _, _ = layer(x, pos, reference, value, [(h, w)], None, text, text_mask)
        return x, torch.einsum("nqc,nchw->nqhw", x, pixel_features)
