"""Cross-modal temporal decoder (ReferDINO Sec. 3.3).

Each query track (one slot over T frames) attends over time; the per-frame sentence feature (the fused
[CLS] token) attends to the track through a transformer decoder layer and is added back:
    X <- LN(X + SelfAttn_time(X));  S <- DecoderLayer(S, memory=X);  X <- LN_i(X + S)
No temporal position encoding. One set of weights, shared by every decoder layer in training.

`position="time_box"` (not official, off by default) adds a motion encoding first: without it the decoder is
equivariant to any reordering of the frames, so a track played forwards and the same track played backwards
get the same mean score and "moving to the left" cannot be told from "moving to the right" (see
`MotionEncoding`).

`motion_logit=True` (not official, off by default) adds a second motion encoding, `MotionLogit`, to the query
features that the class head alone reads (`TemporalDecoder.class_features`): the words are then matched against
the track's motion directly, while the box and mask heads keep the decoder's own features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class _ZeroStartMLP(nn.Module):
    """`FEATURES` -> d_model through a two-layer MLP whose last layer starts at zero, so a trained decoder
    without it starts from its own behaviour."""

    FEATURES: int

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(self.FEATURES, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def float32_mlp(self, features: torch.Tensor) -> torch.Tensor:
        """A float32 island (see referdino.precision): box offsets of a few pixels do not survive bf16 rounding."""
        first, last = self.mlp[0], self.mlp[2]
        hidden = torch.relu(F.linear(features, first.weight.float(), first.bias.float()))
        return F.linear(hidden, last.weight.float(), last.bias.float())


def _normalised_time(boxes: torch.Tensor) -> torch.Tensor:
    """(1, T, 1, 1) frame times from -1/2 to 1/2 for (B, T, Q, 4) boxes (0 for a single frame)."""
    t = boxes.shape[1]
    tau = torch.linspace(-0.5, 0.5, t, device=boxes.device) if t > 1 else boxes.new_zeros(1)
    return tau.view(1, t, 1, 1)


def frame_motion_features(boxes: torch.Tensor) -> torch.Tensor:
    """(B, T, Q, 4) tracked boxes -> (B, T, Q, 13): tau, box, offset from the track's mean box, offset x tau."""
    boxes = boxes.detach().float()
    tau = _normalised_time(boxes).expand(*boxes.shape[:3], 1)
    offset = 10.0 * (boxes - boxes.mean(dim=1, keepdim=True))  # box units of ~0.1 -> ~1
    return torch.cat([tau, boxes, offset, offset * tau], dim=-1)


def track_motion_features(boxes: torch.Tensor) -> torch.Tensor:
    """(B, T, Q, 4) tracked boxes -> (B, T, Q, 8), the same for every frame of a track: the least-squares
    slope of the box over normalised time (direction and speed) and the centre's travel in the first and in the
    second half of the clip (a shape that stops travels in the first half only)."""
    t = boxes.shape[1]
    boxes = 10.0 * boxes.detach().float()
    tau = _normalised_time(boxes)
    slope = (tau * (boxes - boxes.mean(dim=1, keepdim=True))).sum(1) / (tau * tau).sum(1).clamp(min=1e-6)
    mid = boxes[:, (t - 1) // 2, :, :2]
    halves = torch.cat([mid - boxes[:, 0, :, :2], boxes[:, -1, :, :2] - mid], dim=-1)
    return torch.cat([slope, halves], dim=-1)[:, None].expand(-1, t, -1, -1)


class MotionEncoding(_ZeroStartMLP):
    """Where a track is and when: per frame, the normalised time tau = t / (T - 1) - 1/2, the tracked box
    (cx, cy, w, h), its offset from the track's mean box and that offset times tau (whose sign is the direction
    of travel), through a two-layer MLP into the track's features. The last layer starts at zero, so a trained
    official decoder starts from its own behaviour."""

    FEATURES = 13

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, T, Q, 4) tracked boxes -> (B, T, Q, C)."""
        return self.float32_mlp(frame_motion_features(boxes))


class MotionLogit(_ZeroStartMLP):
    """What the class head reads of a track's motion: the per-frame features of `MotionEncoding` and the track's
    slope and half-clip travel (`track_motion_features`), through a two-layer MLP whose last layer starts at zero
    (so a trained decoder starts from its own scores). Added to the class head's query features only."""

    FEATURES = MotionEncoding.FEATURES + 8

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (B, T, Q, 4) tracked boxes -> (B, T, Q, C) float32."""
        features = torch.cat([frame_motion_features(boxes), track_motion_features(boxes)], dim=-1)
        return self.float32_mlp(features)


class TemporalDecoder(nn.Module):
    def __init__(self, d_model: int, num_heads: int, num_layers: int, ffn: int = 2048, position: str = "none",
                 motion_logit: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TemporalBlock(d_model, num_heads, ffn) for _ in range(num_layers))
        self.motion = MotionEncoding(d_model) if position == "time_box" else None
        self.motion_logit = MotionLogit(d_model) if motion_logit else None

    def class_features(self, hidden: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The query features the class head reads: `hidden` (B, T, Q, C), plus the track's motion (float32)
        when `motion_logit` is on."""
        if self.motion_logit is None:
            return hidden
        return hidden.float() + self.motion_logit(boxes)

    def forward(self, queries: torch.Tensor, sentence: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """queries (B, T, Q, C) aligned tracks; sentence (B, T, C) per-frame [CLS]; boxes (B, T, Q, 4) the
        tracked boxes (used by position="time_box") -> (B, T, Q, C)."""
        if self.motion is not None:
            if boxes is None:
                raise ValueError("the time_box temporal position needs the tracked boxes")
            queries = queries + self.motion(boxes).to(queries.dtype)
        b, t, q, c = queries.shape
        tracks = queries.permute(0, 2, 1, 3).reshape(b * q, t, c)
        sent = sentence[:, None].expand(b, q, t, c).reshape(b * q, t, c)
        for block in self.blocks:
            tracks, sent = block(tracks, sent)
        return tracks.view(b, q, t, c).permute(0, 2, 1, 3)
