"""The one inference pipeline: a `Segmenter` owns a model, its device and its dtype, and segments videos.

`referdino segment`, `referdino demo`, `referdino infer`, the web app and the Python API all go through it:

    from referdino import Segmenter

    segmenter = Segmenter.from_pretrained("ryt_mevis_swinb", dtype="auto")
    result = segmenter.segment("clip.mp4", ["the cat wagging its tail", "the dog on the left"])
    for r in result.expressions:
        print(r.expression, r.masks.shape, r.scores.mean())

    # ReferDINO, then the ReferDINO-Plus SAM2 refinement (README "Refining with SAM2")
    refined = segmenter.segment("clip.mp4", ["the two dogs running"], refine="sam2", sam2="large")

The model module knows nothing of this layer; this layer only calls the model's stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..modeling.referdino import ReferDino
from .segment import SegmentationResult, segment_frames

FrameSource = Callable[[], Iterable[tuple[str, np.ndarray]]]


class Segmenter:
    """A model on a device in a compute dtype, ready to segment videos for one or several expressions."""

    def __init__(self, model: ReferDino, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = "auto", announce: bool = False) -> None:
        """dtype: auto | fp32 | bf16 | fp16 | a torch dtype (`referdino.precision.resolve_dtype`; the model is cast
        in place), or None to keep the model's own dtype."""
        from ..precision import cast_model, describe, model_dtype, resolve_dtype

        self.device = torch.device(device)
        if dtype is None:
            self.dtype, self.dtype_reason = model_dtype(model), "the model's own"
        else:
            self.dtype, self.dtype_reason = resolve_dtype(dtype, self.device)
        if announce:
            print(describe(self.dtype, self.dtype_reason))
        self.model = cast_model(model.to(self.device), self.dtype).eval()
        self._sam2: tuple[Any, Any] | None = None  #: (checkpoint folder, loaded SAM2 runner) of the latest refine

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | None = None, *, device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto", announce: bool = False,
    ) -> "Segmenter":
        """A zoo name (`referdino models`), `demo`, a folder of ours or any supported checkpoint file/folder;
        None: the default published model."""
        from ..zoo import DEFAULT_MODEL

        model = ReferDino.from_pretrained(name_or_path or DEFAULT_MODEL, device=device)
        return cls(model, device=device, dtype=dtype, announce=announce)

    def sam2_runner(self, refinement: Any) -> Any:
        """The `Sam2VideoRunner` of a resolved refinement on this segmenter's device and dtype, loaded once and
        kept (the latest one only) for later calls."""
        from ..refine.sam2 import Sam2VideoRunner

        if self._sam2 is None or self._sam2[0] != refinement.folder:
            runner = Sam2VideoRunner.from_pretrained(refinement.folder, device=self.device, dtype=self.dtype)
            self._sam2 = (refinement.folder, runner)
        return self._sam2[1]

    # ------------------------------------------------------------------------------------------- frames
    @staticmethod
    def frame_source(video: Any, fps: float = 25.0) -> tuple[FrameSource, float, int | None]:
        """(frames(), fps, frame count or None) for a path (video file, frame folder, image), an opened
        `video_io` source, a function returning a fresh (name, HxWx3 uint8) iterator, a (T, H, W, 3) uint8
        array, a list of HxWx3 arrays or a list of (name, array) pairs."""
        from .video_io import open_video, to_rgb8

        if isinstance(video, str) or hasattr(video, "__fspath__"):
            video = open_video(video)
        if hasattr(video, "frames") and hasattr(video, "fps"):
            return video.frames, video.fps, video.num_frames
        if callable(video):  # a function giving a fresh (name, frame) iterator each call: streamed, never stored
            return video, fps, None
        items = list(video)
        if items and isinstance(items[0], tuple):
            named = [(str(n), to_rgb8(np.asarray(a))) for n, a in items]
        else:
            named = [(f"{i:05d}", to_rgb8(np.asarray(a))) for i, a in enumerate(items)]
        return (lambda: iter(named)), fps, len(named)

    # ------------------------------------------------------------------------------------------- segment
    def segment(self, video: Any, expressions: str | list[str], *, fps: float = 25.0, **options: Any
                ) -> SegmentationResult:
        """Masks, boxes and scores per frame and expression (`SegmentationResult`).

        options: multi (every query above `threshold` instead of the best), threshold, window (frames per
        window; the tracker memory is carried across windows), short_side, keep_masks (False keeps RAM bounded
        on long videos), on_frame_masks(name, frame, masks (E, H, W), boxes (E, 4), scores (E,)) to stream each
        frame's result, progress (tqdm-like: `.update(n)`). `fps` is used for frames given as arrays.

        SAM2 refinement (README "Refining with SAM2"): refine="sam2" runs the ReferDINO-Plus recipe after
        ReferDINO, with sam2= the SAM2.1 size (tiny, small, base-plus, large; default large) or the folder of a
        transformers Sam2Video checkpoint, in this segmenter's device and dtype. The checkpoint is resolved before
        any work (`Sam2UnavailableError`, a ValueError, when it is neither cached nor downloadable); the loaded
        SAM2 is kept for later calls. refine_progress: a function called when SAM2 starts, returning a tqdm-like
        progress for its frames (or None). The result's expressions are then `RefinedExpression`s (their
        `queries`, `prompt_frames`, `united`, `outcome` say what the recipe did); `multi`/`threshold` change only
        ReferDINO's own choice, which the recipe does not use. Unknown values: ValueError listing the choices."""
        exprs = _expression_list(expressions)
        refinement = _refinement(options)
        frames, fps, _ = self.frame_source(video, fps)
        return self._run(frames, fps, exprs, refinement=refinement, **options)

    def segment_to(
        self, video: Any, expressions: str | list[str], out_dir: str | Path, *, write_video: bool = True,
        overwrite: bool = False, fps: float = 25.0, keep_masks: bool = False, **options: Any,
    ) -> tuple[SegmentationResult, Path]:
        """`segment` with every output written to `out_dir` (per-expression PNG masks, masks.json, overlays,
        the combined overlay and the contact sheet), staged and published atomically; never deletes what we did
        not write (`referdino.output_dirs`). refine="sam2", sam2=SIZE: as `segment`; the refined masks are
        written."""
        from ..output_dirs import check_output_dir
        from .writers import KIND, SegmentationWriter, output_entries

        exprs = _expression_list(expressions)
        refinement = _refinement(options)
        check_output_dir(out_dir, KIND, output_entries(exprs, write_video=write_video), overwrite=overwrite)
        frames, fps, _ = self.frame_source(video, fps)
        writer = SegmentationWriter(out_dir, exprs, fps, write_video=write_video, overwrite=overwrite)
        try:
            result = self._run(frames, fps, exprs, keep_masks=keep_masks, on_frame_masks=writer.add,
                               refinement=refinement, **options)
            return result, writer.close()
        except BaseException:
            writer.abort()
            raise

    def _run(
        self, frames: FrameSource, fps: float, expressions: list[str], *, multi: bool = False,
        threshold: float = 0.2, window: int = 36, short_side: int = 360, keep_masks: bool = True,
        on_frame_masks: Callable[..., None] | None = None, progress: Any = None, refinement: Any = None,
        refine_progress: Callable[[], Any] | None = None,
    ) -> SegmentationResult:
        if refinement is not None:  # SAM2 refinement: the implementation the CLI, infer and the app share
            from ..refine.pipeline import segment_refined

            return segment_refined(
                self.model, frames, expressions, refinement, device=self.device, dtype=self.dtype, window=window,
                short_side=short_side, multi=multi, threshold=threshold, fps=fps, keep_masks=keep_masks,
                on_frame_masks=on_frame_masks, progress=progress, refine_progress=refine_progress,
                runner=self.sam2_runner(refinement),
            )
        if refine_progress is not None:
            raise ValueError("refine_progress is for refine='sam2'")
        return segment_frames(
            self.model, frames(), expressions, window=window, short_side=short_side, multi=multi,
            threshold=threshold, device=self.device, keep_masks=keep_masks, on_frame_masks=on_frame_masks,
            replay=frames, progress=progress, fps=fps,
        )


def _refinement(options: dict[str, Any]) -> Any:
    """Pops refine= and sam2= from `options` and checks them now (the SAM2 checkpoint resolved): a
    `referdino.refine.pipeline.Refinement`, or None without refinement."""
    refine, sam2 = options.pop("refine", None), options.pop("sam2", None)
    if refine is None and sam2 is None:
        return None
    from ..refine.pipeline import resolve_refinement

    return resolve_refinement(refine, sam2)


def _expression_list(expressions: str | list[str]) -> list[str]:
    """A list of expressions; an empty one fails here, before any work."""
    from ..processing.text import normalize_caption

    exprs = [expressions] if isinstance(expressions, str) else list(expressions)
    if not exprs:
        raise ValueError("no expression given: give at least one referring expression")
    for text in exprs:
        normalize_caption(text)
    return exprs
