"""Post-processing of ReferDINO's masks. `sam2`: the ReferDINO-Plus SAM2 refinement (`referdino segment --refine
sam2`, `refine_with_sam2`); `rules`: its selection and fusion rules as pure functions."""

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
    "DEFAULT_SAM2", "SAM2_SIZES", "SIGMA", "FrameStore", "PackedMasks", "RefinedExpression", "Sam2UnavailableError",
    "Sam2VideoRunner", "box_area", "fuse", "fuse_video", "prompt_frames", "published_config", "query_means",
    "refine_with_sam2", "resolve_sam2", "select_queries", "unite_decision",
]
