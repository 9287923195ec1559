"""The one implementation of "ReferDINO, then SAM2" used by every entry point: `referdino segment --refine sam2`
(`referdino.refine.commands`), `referdino infer --refine sam2`, the web app and the Python API
(`Segmenter.segment(..., refine="sam2", sam2=SIZE)`).

- `resolve_refinement(refine, sam2)`: checks the choice and resolves the SAM2 checkpoint now (before any work; a
  one-line `Sam2UnavailableError` offline when it is not cached), or None without refinement.
- `segment_refined(model, frames, expressions, refinement, ...)`: ReferDINO streams the frames in order while they
  are recorded to a temporary file (`FrameStore`) and every query's scores and mask logits are kept
  (`segment_frames(keep_queries=True)`); then SAM2 refines, and the refined masks stream to `on_frame_masks`
  frame by frame, as plain segmentation streams its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .sam2 import DEFAULT_SAM2, SAM2_SIZES, resolve_sam2

#: the values of `refine=` / `--refine`
REFINERS = ("sam2",)


@dataclass(frozen=True)
class Refinement:
    """A checked refinement: SAM2 `size` (a `SAM2_SIZES` name, or a folder path) and its resolved local folder."""

    size: str
    folder: Path


def resolve_refinement(refine: str | None, sam2: str | Path | None = None, *, cli: bool = False
                       ) -> Refinement | None:
    """None when `refine` is None; else the refinement with its SAM2 checkpoint resolved (downloaded into the hub
    cache when needed and allowed). ValueError for an unknown `refine` or SAM2 size (listing the choices), or a
    SAM2 size without `refine`; `Sam2UnavailableError` (a ValueError too) when the checkpoint cannot be had.
    `cli` words the messages with the command-line flags."""
    refine_name, size_name = ("--refine", "--sam2") if cli else ("refine=", "sam2=")
    if refine is None:
        if sam2 is not None:
            hint = "add --refine sam2" if cli else "add refine='sam2'"
            raise ValueError(f"{size_name} chooses the SAM2 size of {refine_name} sam2; {hint}")
        return None
    if refine not in REFINERS:
        raise ValueError(f"unknown {refine_name} {refine!r}; choices: {', '.join(REFINERS)}")
    size = str(sam2) if sam2 is not None else DEFAULT_SAM2
    if size not in SAM2_SIZES and not (Path(size).is_dir() and (Path(size) / "config.json").is_file()):
        raise ValueError(f"unknown SAM2 size {size!r}; sizes: {', '.join(SAM2_SIZES)} (or the folder of a "
                         "transformers Sam2Video checkpoint)")
    return Refinement(size, resolve_sam2(size))


def segment_refined(
    model: Any, frames: Callable[[], Iterable[tuple[str, np.ndarray]]], expressions: list[str],
    refinement: Refinement, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    window: int = 36, short_side: int = 360, multi: bool = False, threshold: float = 0.2, fps: float = 25.0,
    keep_masks: bool = True, on_frame_masks: Callable[..., None] | None = None, progress: Any = None,
    refine_progress: Callable[[], Any] | None = None, runner: Any = None,
) -> Any:
    """ReferDINO on `frames()` (a fresh (name, HxWx3 uint8) iterator, read once), then the ReferDINO-Plus SAM2
    refinement (`refine_with_sam2`). `progress` counts ReferDINO's frames; `refine_progress()`, called when SAM2
    starts, may return a tqdm-like progress for SAM2's frames (closed here when it has `close`). `runner`: a loaded
    `Sam2VideoRunner` to reuse (else one is loaded from `refinement.folder` when a query is kept). Returns the
    refined `SegmentationResult` (its expressions are `RefinedExpression`s; masks kept with `keep_masks`)."""
    from ..inference.segment import segment_frames
    from .sam2 import refine_with_sam2
    from .storage import FrameStore

    store = FrameStore()
    result = None
    try:
        result = segment_frames(
            model, store.record(frames()), expressions, window=window, short_side=short_side, multi=multi,
            threshold=threshold, device=device, keep_masks=False, progress=progress, fps=fps, keep_queries=True,
        )
        bar = refine_progress() if refine_progress is not None else None
        try:
            return refine_with_sam2(store, result, runner=runner, sam2=str(refinement.folder), device=device,
                                    dtype=dtype, keep_masks=keep_masks, on_frame_masks=on_frame_masks,
                                    progress=bar)
        finally:
            if bar is not None and hasattr(bar, "close"):
                bar.close()
    finally:
        if result is not None and result.per_query is not None:
            result.per_query.close()
        store.close()
