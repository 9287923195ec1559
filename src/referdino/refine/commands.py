"""`referdino segment --refine sam2 [--sam2 SIZE]`: the command-line side of `referdino.refine.sam2`.

`run_segment` calls `prepare_refiner` before any model is loaded (so a missing SAM2 checkpoint offline fails at
once, in one line) and, when it returns a refiner, `refiner.segment(...)` instead of `segment_frames`: ReferDINO
runs as usual, streaming frames in order, while the frames are recorded to a temporary file (`FrameStore`) and
every query's scores and mask logits are kept (`segment_frames(keep_queries=True)`); then SAM2 refines and the
refined masks stream to the same writer, frame by frame.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .sam2 import DEFAULT_SAM2, SAM2_SIZES, resolve_sam2

REFINERS = ("sam2",)


def add_refine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine", choices=REFINERS, default=None,
                   help="refine ReferDINO's masks; sam2: the ReferDINO-Plus recipe (SAM2.1 prompted with every "
                        "query whose score passes 0.275, propagated forward and back, fused with ReferDINO's "
                        "masks); see README 'Refining with SAM2'")
    p.add_argument("--sam2", choices=list(SAM2_SIZES), default=None, metavar="SIZE",
                   help=f"SAM2.1 size for --refine sam2: {', '.join(SAM2_SIZES)} (default {DEFAULT_SAM2}, the "
                        "recipe's; facebook/sam2.1-hiera-SIZE, downloaded once into the Hugging Face cache)")


class Sam2Refiner:
    def __init__(self, size: str, folder: Path, args: argparse.Namespace, dtype: torch.dtype) -> None:
        self.size = size
        self.folder = folder
        self.args = args
        self.dtype = dtype

    def segment(self, model, source, writer, bar):  # type: ignore[no-untyped-def]
        """ReferDINO on `source` (recording the frames and every query), then SAM2; the refined masks go to
        `writer.add`. Returns the refined `SegmentationResult`."""
        from tqdm import tqdm

        from ..inference.segment import segment_frames
        from .sam2 import refine_with_sam2
        from .storage import FrameStore

        args = self.args
        store = FrameStore()
        result = None
        try:
            result = segment_frames(
                model, store.record(source.frames()), args.text, window=args.window, short_side=args.short_side,
                multi=args.multi, threshold=args.threshold, device=args.device, keep_masks=False, progress=bar,
                fps=source.fps, keep_queries=True,
            )
            if bar is not None:
                bar.close()
            bar2 = None if args.no_progress else tqdm(total=0, desc=f"refining (SAM2 {self.size})", unit="frame",
                                                      dynamic_ncols=True)
            try:
                refined = refine_with_sam2(store, result, sam2=str(self.folder), device=args.device, dtype=self.dtype,
                                           keep_masks=False, on_frame_masks=writer.add, progress=bar2)
            finally:
                if bar2 is not None:
                    bar2.close()
            for d, r in zip(writer.dirs, refined.expressions):
                frames = f" on frames {r.prompt_frames}" if r.queries else ""
                print(f"  {d}: SAM2 {self.size}: queries {r.queries}{frames} -> {r.outcome}")
            return refined
        finally:
            if result is not None and result.per_query is not None:
                result.per_query.close()
            store.close()


def prepare_refiner(args: argparse.Namespace, dtype: torch.dtype) -> Sam2Refiner | None:
    """None without --refine; else the refiner, its SAM2 checkpoint resolved (or a one-line error now)."""
    refine = getattr(args, "refine", None)
    size = getattr(args, "sam2", None)
    if refine is None:
        if size is not None:
            raise ValueError("--sam2 chooses the SAM2 size of --refine sam2; add --refine sam2")
        return None
    size = size or DEFAULT_SAM2
    return Sam2Refiner(size, resolve_sam2(size), args, dtype)
