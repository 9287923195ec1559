"""Segment a whole video for one or more expressions, in windows, with bounded memory.

Per window of `window` frames: the frames are resized (short side 360) and normalised; the Swin backbone runs
once and its features serve every expression; the text-dependent stages run for all expressions as one batch;
the tracker's memory is carried from window to window, so query slot j is the same object over the whole
video. The per-query stride-4 mask logits of each frame go to a float16 memory map on disk, so RAM does not
grow with the video length. At the end the referred query is chosen exactly as the official evaluation does
(highest mean score over all frames; `multi`: every query whose mean score exceeds `threshold`), and its masks
are upsampled bilinearly to the frame size and thresholded.

Deviation from the official code (which attends over the whole video at once): the cross-modal temporal
decoder attends within a window. With `window` >= the video length the two are identical.

Precision: the model computes in its own dtype (`referdino.precision.cast_model`; `segment --dtype`): frames are
cast to it by the model, its predictions come back in float32 and the mask logits are upsampled and thresholded
in float32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..modeling.referdino import ReferDino
from ..modeling.tracker import TrackerState
from ..processing.postprocess import upsample_masks
from ..processing.text import tokenize
from .predictor import predict_window

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(frame: np.ndarray, short_side: int = 360) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, h, w) float32 normalised, short side resized to `short_side` (bilinear)."""
    x = torch.from_numpy(frame).permute(2, 0, 1).float().div_(255.0)
    h, w = x.shape[-2:]
    if short_side and min(h, w) != short_side:
        scale = short_side / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


@dataclass
class ExpressionResult:
    """One expression over the whole video."""

    expression: str
    queries: list[int]  #: chosen query slots (one unless multi)
    masks: np.ndarray | None  #: (T, H, W) bool at the frame size (None when streamed to disk only)
    boxes: np.ndarray  #: (T, 4) x1, y1, x2, y2 in pixels of the frame (union box for multi)
    scores: np.ndarray  #: (T,) per-frame score (max over chosen queries)


@dataclass
class SegmentationResult:
    frame_names: list[str]
    frame_size: tuple[int, int]  #: (H, W) of the source frames
    fps: float
    expressions: list[ExpressionResult] = field(default_factory=list)
    # --- per-query outputs for SAM2 refinement (issue 13; referdino.refine) ---
    per_query: QueryOutputs | None = None  #: only with `segment_frames(keep_queries=True)`


@dataclass
class QueryOutputs:
    """Every query's outputs on every frame, kept by `segment_frames(keep_queries=True)` for post-processing
    that needs more than the chosen query (`referdino.refine.sam2`). The mask logits stay in the float16 file on
    disk (bounded RAM); call `close()` when done (deletes it)."""

    scores: np.ndarray  #: (E, T, Q) float32 per-frame query scores (sigmoid of the class logit)
    boxes: np.ndarray  #: (E, T, Q, 4) float32 normalised cx, cy, w, h
    logits: object  #: `.read(t)` -> (E, Q, h, w) float16 stride-4 mask logits of frame t; `.close()`

    def mask_logits(self, t: int) -> np.ndarray:
        return self.logits.read(t)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.logits.close()  # type: ignore[attr-defined]
    # --- end per-query outputs ---


class _LogitStore:
    """Per-frame (E, Q, h, w) float16 mask logits on disk (grows by frame; bounded RAM)."""

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="referdino-masks-", suffix=".f16", dir=directory, delete=True)
        self.shape: tuple[int, ...] | None = None
        self.count = 0

    def append(self, logits: torch.Tensor) -> None:
        arr = logits.detach().to(torch.float16).cpu().numpy()
        if self.shape is None:
            self.shape = arr.shape[1:]
        self._file.write(arr.tobytes())
        self.count += arr.shape[0]

    def read(self, t: int) -> np.ndarray:
        assert self.shape is not None
        n = int(np.prod(self.shape))
        self._file.flush()
        return np.fromfile(self._file.name, dtype=np.float16, count=n, offset=t * n * 2).reshape(self.shape)

    def close(self) -> None:
        self._file.close()


def _windows(frames: Iterable[tuple[str, np.ndarray]], size: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    batch: list[tuple[str, np.ndarray]] = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def segment_frames(
    model: ReferDino,
    frames: Iterable[tuple[str, np.ndarray]],
    expressions: list[str],
    *,
    window: int = 36,
    short_side: int = 360,
    multi: bool = False,
    threshold: float = 0.2,
    device: str | torch.device = "cpu",
    keep_masks: bool = True,
    on_frame_masks=None,  # type: ignore[no-untyped-def]
    replay=None,  # type: ignore[no-untyped-def]
    progress=None,  # type: ignore[no-untyped-def]
    fps: float = 25.0,
    temp_dir: str | None = None,
    keep_queries: bool = False,  # issue 13: keep every query's scores and mask logits (result.per_query)
) -> SegmentationResult:
    """Segment `frames` ((name, HxWx3 uint8) in order) for every expression.

    on_frame_masks(name, frame, masks (E, H, W) bool, boxes (E, 4) xyxy, scores (E,)) is called per frame in
    the second pass (writers use it), so outputs are produced without keeping every mask in memory; `replay()`
    returns a fresh iterator over the same frames for it (frame is None without `replay`).

    keep_queries: also return every query's scores, boxes and mask logits (`result.per_query`, a `QueryOutputs`
    whose logit file stays open until its `close()`), for SAM2 refinement (`referdino.refine`).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    model.eval()
    text = tokenize(expressions, model.config.text.max_text_len).to(device)
    text_feats = model.encode_text(text)
    e = len(expressions)
    store = _LogitStore(temp_dir)
    names: list[str] = []
    frame_size: tuple[int, int] | None = None
    logit_sum: torch.Tensor | None = None
    per_frame_scores: list[torch.Tensor] = []
    per_frame_boxes: list[torch.Tensor] = []
    state: TrackerState | None = None
    handed_over = False  # issue 13: the logit file goes to result.per_query
    try:
        for chunk in _windows(frames, window):
            pixels = torch.stack([preprocess(f, short_side) for _, f in chunk]).to(device)
            if frame_size is None:
                frame_size = chunk[0][1].shape[:2]
            t = pixels.shape[0]
            out = predict_window(model, pixels, text, text_feats, tracker_state=state)
            state = out.tracker_state
            probs = out.pred_logits[..., 0].sigmoid()  # (E, t, Q)
            logit_sum = probs.sum(1) if logit_sum is None else logit_sum + probs.sum(1)
            per_frame_scores.append(probs.cpu())
            per_frame_boxes.append(out.pred_boxes.cpu())
            for i in range(t):
                store.append(out.pred_masks[:, i][None])
            names.extend(n for n, _ in chunk)
            if progress is not None:
                progress.update(t)
        if not names or logit_sum is None or frame_size is None:
            raise ValueError("the video has no frames")
        mean_scores = logit_sum / len(names)  # (E, Q)
        chosen = _choose(mean_scores, multi, threshold)
        scores = torch.cat(per_frame_scores, 1)  # (E, T, Q)
        boxes = torch.cat(per_frame_boxes, 1)  # (E, T, Q, 4)
        results = [
            ExpressionResult(expr, chosen[k], None, np.zeros((len(names), 4), np.float32),
                             scores[k][:, chosen[k]].max(-1).values.numpy())
            for k, expr in enumerate(expressions)
        ]
        all_masks = [[] for _ in expressions] if keep_masks else None
        again = iter(replay()) if replay is not None else None
        for t_idx, name in enumerate(names):
            logits = torch.from_numpy(store.read(t_idx).astype(np.float32))  # (E, Q, h, w)
            frame_masks = []
            for k in range(e):
                sel = upsample_masks(logits[k, chosen[k]][None], frame_size)[0] > 0  # (n, H, W)
                mask = sel.any(0).numpy()
                frame_masks.append(mask)
                results[k].boxes[t_idx] = _mask_box(mask) if multi else _box_pixels(boxes[k, t_idx, chosen[k][0]], frame_size)
                if all_masks is not None:
                    all_masks[k].append(mask)
            if on_frame_masks is not None:
                frame = next(again)[1] if again is not None else None
                on_frame_masks(name, frame, np.stack(frame_masks), np.stack([r.boxes[t_idx] for r in results]),
                               np.array([r.scores[t_idx] for r in results]))
        if all_masks is not None:
            for k in range(e):
                results[k].masks = np.stack(all_masks[k])
        result = SegmentationResult(names, frame_size, fps, results)
        if keep_queries:  # issue 13: hand the logit file over to the caller (QueryOutputs.close)
            result.per_query = QueryOutputs(scores.float().numpy(), boxes.float().numpy(), store)
            handed_over = True
        return result
    finally:
        if not handed_over:  # issue 13
            store.close()


def _choose(mean_scores: torch.Tensor, multi: bool, threshold: float) -> list[list[int]]:
    chosen = []
    for row in mean_scores:
        best = int(row.argmax())
        if multi:
            keep = [int(i) for i in torch.nonzero(row > threshold).flatten()]
            chosen.append(keep or [best])
        else:
            chosen.append([best])
    return chosen


def _box_pixels(box: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    cx, cy, w, h = box.tolist()
    hh, ww = size
    return np.array([(cx - w / 2) * ww, (cy - h / 2) * hh, (cx + w / 2) * ww, (cy + h / 2) * hh], np.float32)


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
