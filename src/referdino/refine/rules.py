"""The two decisions of the ReferDINO-Plus SAM2 recipe, as pure functions on numpy arrays (torch tensors work too).

Source of the recipe and of every constant: ReferDINO-Plus (arXiv 2503.23509, 2nd place of the 4th PVUW MeViS
challenge, CVPR 2025), file ``refine_from_refdino.py`` of github.com/iSEE-Laboratory/ReferDINO-Plus. Per
expression, from ReferDINO's per-query, per-frame scores (T, Q) and masks:

1. Selection (`select_queries`): a frame counts for a query when its score exceeds sigma = 0.275
   (``threshold = 0.275``); the query is kept when its mean score over those frames, computed as
   ``sum(score * valid) / (count(valid) + 1e-6)``, is itself above sigma. A query with no such frame has a mean of
   0 and is dropped.
2. Prompts (`prompt_frames`): each kept query prompts SAM2 once, on its highest-scoring frame (``argmax`` over all
   frames, the first one on ties), with its mask there (ReferDINO's logits upsampled bilinearly to the frame size,
   > 0) as a new object.
3. Fusion (`unite_decision`, `fuse`): over the frames where the box area of SAM2's union of objects AND the box
   area of ReferDINO's union of kept queries are both > 0, count those where SAM2's box area is below 2/3 of
   ReferDINO's (``area_sam2 * 3 < area_ori * 2``, exact in integers). If they are a strict majority
   (``cnt * 2 > valid_frames``) the output is SAM2's union united with ReferDINO's kept masks (SAM2 probably
   missed objects), else SAM2's union alone. No frame with both areas > 0: SAM2 alone.
4. No kept query: the recipe writes empty masks for every frame (it neither runs SAM2 nor falls back to
   ReferDINO's own choice); so do we.

The box area is the official one (`box_area`): ``(row_max - row_min) * (col_max - col_min)``, without the usual
+1, so a mask one pixel thin (a single row or column) has area 0 and its frame is left out of the vote. We keep
this quirk so that the decision matches the recipe exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: a frame counts for a query when its score exceeds this, and a query is kept when its mean over the frames that
#: count exceeds it too (``threshold = 0.275`` in ReferDINO-Plus' refine_from_refdino.py)
SIGMA = 0.275
#: the epsilon of the recipe's mean (``valid_frame.sum(0) + 1e-6``)
MEAN_EPS = 1e-6
#: SAM2's union is "smaller" on a frame when its box area is below AREA_NUM / AREA_DEN of ReferDINO's
#: (``area_sam2 * 3 < area_ori * 2``)
AREA_NUM, AREA_DEN = 2, 3


def _np(x) -> np.ndarray:  # type: ignore[no-untyped-def]
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def query_means(scores, sigma: float = SIGMA) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(Q,) the recipe's mean score of each query over the frames where its score exceeds `sigma`
    (0 for a query with no such frame). `scores`: (T, Q)."""
    s = _np(scores).astype(np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be (frames, queries), got shape {s.shape}")
    valid = (s > sigma).astype(np.float32)
    return (s * valid).sum(0) / (valid.sum(0) + np.float32(MEAN_EPS))


def select_queries(scores, sigma: float = SIGMA) -> list[int]:  # type: ignore[no-untyped-def]
    """The queries the recipe keeps, in query order: those whose `query_means` exceed `sigma`."""
    return [int(q) for q in np.nonzero(query_means(scores, sigma) > sigma)[0]]


def prompt_frames(scores, queries: Sequence[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """The frame each query prompts SAM2 on: its highest-scoring frame (the first on ties)."""
    s = _np(scores)
    return [int(np.argmax(s[:, q])) for q in queries]


def box_area(mask) -> int:  # type: ignore[no-untyped-def]
    """The recipe's bounding-box area of a (H, W) mask: (row_max - row_min) * (col_max - col_min), 0 when empty
    (and for a mask one pixel thin: the recipe has no +1)."""
    m = _np(mask).astype(bool)
    rows = np.flatnonzero(m.any(1))
    if rows.size == 0:
        return 0
    cols = np.flatnonzero(m.any(0))
    return int(rows[-1] - rows[0]) * int(cols[-1] - cols[0])


def unite_decision(sam2_areas, referdino_areas) -> bool:  # type: ignore[no-untyped-def]
    """True when SAM2's union should be united with ReferDINO's masks: on the frames where both box areas are
    > 0, SAM2's is below 2/3 of ReferDINO's on a strict majority of them. Areas: (T,) integers (`box_area`)."""
    a = _np(sam2_areas).astype(np.int64).reshape(-1)
    b = _np(referdino_areas).astype(np.int64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"one area per frame for both: {a.shape} != {b.shape}")
    both = (a > 0) & (b > 0)
    smaller = both & (AREA_DEN * a < AREA_NUM * b)
    return 2 * int(smaller.sum()) > int(both.sum())


def fuse(sam2_union, referdino_union, unite: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One frame's output: SAM2's union, or with `unite` SAM2's union | ReferDINO's kept masks."""
    s = _np(sam2_union).astype(bool)
    return s | _np(referdino_union).astype(bool) if unite else s.copy()


def _union(masks: np.ndarray) -> np.ndarray:
    """(T, H, W) as is, (T, N, H, W) -> union over N."""
    m = masks.astype(bool)
    if m.ndim == 4:
        return m.any(1)
    if m.ndim != 3:
        raise ValueError(f"masks must be (T, H, W) or (T, N, H, W), got shape {m.shape}")
    return m


def fuse_video(sam2_masks, referdino_masks) -> tuple[np.ndarray, bool]:  # type: ignore[no-untyped-def]
    """The whole fusion on in-memory arrays: SAM2's per-object masks (T, N, H, W) (or their union (T, H, W)) and
    ReferDINO's kept-query masks (T, K, H, W) (or their union) -> ((T, H, W) bool output, united?)."""
    s = _union(_np(sam2_masks))
    r = _union(_np(referdino_masks))
    if s.shape != r.shape:
        raise ValueError(f"SAM2 and ReferDINO masks differ in shape: {s.shape} != {r.shape}")
    unite = unite_decision([box_area(m) for m in s], [box_area(m) for m in r])
    return (s | r if unite else s.copy()), unite
