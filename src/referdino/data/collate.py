"""Batching clips: zero padding at the bottom/right and a padding mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .records import ClipBatch, ClipSample

__all__ = ["collate_clips"]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple if multiple > 1 else value


def collate_clips(samples: Sequence[ClipSample], size_divisibility: int = 0) -> ClipBatch:
    """Stack clips of equal length T, padding H and W to the batch maximum (rounded up to a multiple
    of ``size_divisibility`` when > 1; upstream's collator uses 32).

    Frames are zero-padded, masks padded with False, and ``pixel_mask`` is True on padding. Boxes stay
    normalised by each sample's unpadded size.
    """
    if not samples:
        raise ValueError("collate_clips needs at least one sample")
    lengths = {s.frames.shape[0] for s in samples}
    if len(lengths) != 1:
        raise ValueError(f"clips in a batch must have the same number of frames, got {sorted(lengths)}")
    (t,) = lengths
    h = _round_up(max(s.frames.shape[-2] for s in samples), size_divisibility)
    w = _round_up(max(s.frames.shape[-1] for s in samples), size_divisibility)
    b = len(samples)
    frames = torch.zeros(b, t, 3, h, w, dtype=samples[0].frames.dtype)
    masks = torch.zeros(b, t, h, w, dtype=torch.bool)
    pixel_mask = torch.ones(b, h, w, dtype=torch.bool)
    for i, s in enumerate(samples):
        sh, sw = s.frames.shape[-2:]
        frames[i, :, :, :sh, :sw] = s.frames
        masks[i, :, :sh, :sw] = s.masks
        pixel_mask[i, :sh, :sw] = False
    return ClipBatch(
        frames=frames,
        pixel_mask=pixel_mask,
        captions=[s.caption for s in samples],
        masks=masks,
        boxes=torch.stack([s.boxes for s in samples]).float(),
        valid=torch.stack([s.valid for s in samples]).bool(),
        samples=[s.meta() for s in samples],
    )
