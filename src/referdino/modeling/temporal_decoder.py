"""Cross-modal temporal decoder (ReferDINO Sec. 3.3).

Each query track (one slot over T frames) attends over time; the per-frame sentence feature (the fused
[CLS] token) attends to the track through a transformer decoder layer and is added back:
    X <- LN(X + SelfAttn_time(X));  S <- DecoderLayer(S, memory=X);  X <- LN_i(X + S)
No temporal position encoding. One set of weights, shared by every decoder layer in training.
"""

from __future__ import annotations

import torch
from torch import nn


class TemporalBlock(nn.Module):
    """Keys: `self_attn`, `norm`, `decoder` (an `nn.TransformerDecoderLayer`), `out_norm`."""

    def __init__(self, d_model: int, num_heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.TransformerDecoderLayer(
            d_model, num_heads, dim_feedforward=ffn, dropout=0.0, batch_first=True
        )
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, tracks: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tracks = self.norm(tracks + self.self_attn(tracks, tracks, tracks, need_weights=False)[0])
        sentence = self.decoder(sentence, tracks)
        return self.out_norm(tracks + sentence), sentence


class TemporalDecoder(nn.Module):
    def __init__(self, d_model: int, num_heads: int, num_layers: int, ffn: int = 2048) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TemporalBlock(d_model, num_heads, ffn) for _ in range(num_layers))

    def forward(self, queries: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """queries (B, T, Q, C) aligned tracks; sentence (B, T, C) per-frame [CLS] -> (B, T, Q, C)."""
        b, t, q, c = queries.shape
        tracks = queries.permute(0, 2, 1, 3).reshape(b * q, t, c)
        sent = sentence[:, None].expand(b, q, t, c).reshape(b * q, t, c)
        for block in self.blocks:
            tracks, sent = block(tracks, sent)
        return tracks.view(b, q, t, c).permute(0, 2, 1, 3)
