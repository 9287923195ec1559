"""Sine position embeddings: 2-D image maps, box coordinates, text position ids.

Every variant uses the interleaved layout of GroundingDINO: channel 2i is sin(p / tau^(2i/n)) and
channel 2i+1 is cos(p / tau^(2i/n)), both members of a pair sharing one frequency.
"""

from __future__ import annotations

import math

import torch


def _divisor(n: int, temperature: float, device: torch.device) -> torch.Tensor:
    dim_t = torch.arange(n, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)


def _interleave(angles: torch.Tensor) -> torch.Tensor:
    """(..., n) angles -> (..., n) with sin on even channels and cos on odd ones."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_embed(values: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """Embed each scalar of `values` (already scaled to radians) into `num_feats` channels."""
    return _interleave(values[..., None] / _divisor(num_feats, temperature, values.device))


def image_position_embedding(
    mask: torch.Tensor, num_feats: int = 128, temperature: float = 20.0
) -> torch.Tensor:
    """Normalised 2-D sine embedding of a padded image batch.

    Args:
        mask: (N, H, W) bool, True on padding.
    Returns:
        (N, 2 * num_feats, H, W): channels [0, num_feats) embed y, the rest embed x.
    """
    not_mask = (~mask).to(torch.float32)
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    eps = 1e-6
    y = y / (y[:, -1:, :] + eps) * (2 * math.pi)
    x = x / (x[:, :, -1:] + eps) * (2 * math.pi)
    pos = torch.cat((sine_embed(y, num_feats, temperature), sine_embed(x, num_feats, temperature)), dim=-1)
    return pos.permute(0, 3, 1, 2)


def box_sine_embedding(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """(..., 4) boxes (cx, cy, w, h) or (..., 2) points -> (..., 4*num_feats), order (cy, cx, w, h)."""
    scaled = boxes * (2 * math.pi)
    parts = [sine_embed(scaled[..., 1], num_feats, temperature), sine_embed(scaled[..., 0], num_feats, temperature)]
    if boxes.shape[-1] == 4:
        parts += [sine_embed(scaled[..., 2], num_feats, temperature), sine_embed(scaled[..., 3], num_feats, temperature)]
    return torch.cat(parts, dim=-1)


def text_position_embedding(position_ids: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """(B, L) integer position ids -> (B, L, num_feats)."""
    return sine_embed(position_ids.to(torch.float32) * (2 * math.pi), num_feats, temperature)
