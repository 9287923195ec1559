"""Stochastic depth (Huang et al. 2016): drop a residual branch per sample during training."""

from __future__ import annotations

import torch


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Zero the whole branch of a sample with probability `rate`, scaling survivors by 1 / (1 - rate)."""
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep
