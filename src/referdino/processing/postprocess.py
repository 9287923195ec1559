"""From model outputs to per-frame binary masks (official evaluation post-processing)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def query_scores(logits: torch.Tensor) -> torch.Tensor:
    """(T, Q, 1) or (T, Q) logits -> (Q,) mean over frames of the sigmoid."""
    if logits.dim() == 3:
        logits = logits[..., 0]
    return logits.sigmoid().mean(0)


def best_query(logits: torch.Tensor) -> int:
    """Index of the query with the highest mean score (first one on exact ties)."""
    return int(query_scores(logits).argmax())


def upsample_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, H4, W4) or (T, K, H4, W4) stride-4 logits -> same leading dims at `size`, bilinear, no antialias,
    in float32 (whatever the logits' dtype)."""
    squeeze = mask_logits.dim() == 3
    x = mask_logits.float()
    x = x[:, None] if squeeze else x
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[:, 0] if squeeze else x


def binary_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample and threshold at sigmoid > 0.5 (logit > 0)."""
    return upsample_masks(mask_logits, size).sigmoid() > 0.5
