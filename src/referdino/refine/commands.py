"""`referdino segment --refine sam2 [--sam2 SIZE]`: the command-line side of `referdino.refine.sam2`
(`add_refine_arguments` serves `referdino infer` too).

`run_segment` calls `prepare_refiner` before any model is loaded (so a missing SAM2 checkpoint offline fails at
once, in one line) and, when it returns a refiner, `refiner.segment(...)` instead of `segment_frames`: ReferDINO
runs as usual, streaming frames in order, while the frames are recorded to a temporary file (`FrameStore`) and
every query's scores and mask logits are kept (`segment_frames(keep_queries=True)`); then SAM2 refines and the
refined masks stream to the same writer, frame by frame. The work is `referdino.refine.pipeline.segment_refined`,
the one implementation the Python API, `infer` and the app call as well.
"""

from __future__ import annotations

import argparse

import torch

from .pipeline import REFINERS, Refinement, resolve_refinement, segment_refined
from .sam2 import DEFAULT_SAM2, SAM2_SIZES


def add_refine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine", choices=REFINERS, default=None,
                   help="refine ReferDINO's masks; sam2: the ReferDINO-Plus recipe (SAM2.1 prompted with every "
                        "query whose score passes 0.275, propagated forward and back, fused with ReferDINO's "
                        "masks); see README 'Refining with SAM2'")
    p.add_argument("--sam2", choices=list(SAM2_SIZES), default=None, metavar="SIZE",
                   help=f"SAM2.1 size for --refine sam2: {', '.join(SAM2_SIZES)} (default {DEFAULT_SAM2}, the "
                        "recipe's; facebook/sam2.1-hiera-SIZE, downloaded once into the Hugging Face cache)")


class Sam2Refiner:
    def __init__(self, refinement: Refinement, args: argparse.Namespace, dtype: torch.dtype) -> None:
        self.refinement = refinement
        self.size = refinement.size
        self.folder = refinement.folder
        self.args = args
        self.dtype = dtype

    def segment(self, model, source, writer, bar):  # type: ignore[no-untyped-def]
        """ReferDINO on `source` (recording the frames and every query), then SAM2 (`segment_refined`, the
        implementation the Python API, `infer` and the app share); the refined masks go to `writer.add`. Returns
        the refined `SegmentationResult`."""
        from tqdm import tqdm

        args = self.args

        def refine_bar():  # type: ignore[no-untyped-def]
            if bar is not None:
                bar.close()
            return None if args.no_progress else tqdm(total=0, desc=f"refining (SAM2 {self.size})", unit="frame",
                                                      dynamic_ncols=True)

        refined = segment_refined(
            model, source.frames, args.text, self.refinement, device=args.device, dtype=self.dtype,
            window=args.window, short_side=args.short_side, multi=args.multi, threshold=args.threshold,
            fps=source.fps, keep_masks=False, on_frame_masks=writer.add, progress=bar, refine_progress=refine_bar,
        )
        for d, r in zip(writer.dirs, refined.expressions):
            frames = f" on frames {r.prompt_frames}" if r.queries else ""
            print(f"  {d}: SAM2 {self.size}: queries {r.queries}{frames} -> {r.outcome}")
        return refined


def prepare_refiner(args: argparse.Namespace, dtype: torch.dtype) -> Sam2Refiner | None:
    """None without --refine; else the refiner, its SAM2 checkpoint resolved (or a one-line error now)."""
    refinement = resolve_refinement(getattr(args, "refine", None), getattr(args, "sam2", None), cli=True)
    return None if refinement is None else Sam2Refiner(refinement, args, dtype)
