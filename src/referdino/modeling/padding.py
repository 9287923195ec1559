"""Batch padding in the grounding stages (training: the official collator pads every clip to a multiple of 32).

As in GroundingDINO: the image padding mask is resized to every feature level (nearest), the sine position
embedding is normalised over the valid region, padded tokens are masked as attention values, and the
encoder's and decoder's reference points live in the *valid* region: each level's valid fraction
("valid ratio", width and height) rescales them. Inference never pads, so there every ratio is 1.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def level_masks(pixel_mask: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """(N, H, W) bool, True on padding -> one (N, h, w) mask per feature size (nearest resize)."""
    resized = []
    for size in sizes:
        resized.append(F.interpolate(pixel_mask[None].float(), size=size).to(torch.bool)[0])
    return resized


def valid_ratios(masks: list[torch.Tensor]) -> torch.Tensor:
    """(N, levels, 2): per level the valid fraction of the width and of the height (x, y order)."""
    ratios = []
    for m in masks:
        h, w = m.shape[-2:]
        valid_h = (~m[:, :, 0]).sum(1).float() / h
        valid_w = (~m[:, 0, :]).sum(1).float() / w
        ratios.append(torch.stack((valid_w, valid_h), -1))
    return torch.stack(ratios, 1)


def valid_sizes(padding: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """From the flattened (N, S) padding: per level the (N, 2) valid (width, height) in tokens."""
    sizes, start = [], 0
    for h, w in spatial_shapes:
        m = padding[:, start : start + h * w].view(-1, h, w)
        sizes.append(torch.stack(((~m[:, 0, :]).sum(1), (~m[:, :, 0]).sum(1)), -1).float())
        start += h * w
    return sizes
