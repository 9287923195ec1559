"""Post-processing of ReferDINO's masks. `sam2`: the ReferDINO-Plus SAM2 refinement (`referdino segment --refine
sam2`, `refine_with_sam2`); `pipeline`: ReferDINO then SAM2, the one implementation behind the CLI, `infer`, the
app and `Segmenter.segment(..., refine="sam2")`; `rules`: its selection and fusion rules as pure functions."""

from .pipeline import REFINERS, Refinement, resolve_refinement, segment_refined
from .rules import (
    SIGMA,
    box_area,
    fuse,
    fuse_video,
    prompt_frames,
    query_means,
    select_queries,
    unite_decision,
)
from .sam2 import (
    DEFAULT_SAM2,
    SAM2_SIZES,
    RefinedExpression,
    Sam2UnavailableError,
    Sam2VideoRunner,
    published_config,
    refine_with_sam2,
    resolve_sam2,
)
from .storage import FrameStore, PackedMasks

__all__ = [
    "DEFAULT_SAM2", "REFINERS", "SAM2_SIZES", "SIGMA", "FrameStore", "PackedMasks", "RefinedExpression", "Refinement",
    "Sam2UnavailableError",
    "Sam2VideoRunner", "box_area", "fuse", "fuse_video", "prompt_frames", "published_config", "query_means",
    "refine_with_sam2", "resolve_refinement", "resolve_sam2", "segment_refined", "select_queries",
    "unite_decision",
]
