"""Records: what annotation readers produce, and what the dataset hands to the trainer.

Annotation level (produced by ``ytvos.py``, ``mevis.py`` ... and consumed by ``base.py``):

- :class:`VideoRecord` - the ordered frames of one video (or image: a one-frame video).
- :class:`ExpressionRecord` - one referring expression, its object ids and where its masks live.
- :class:`PaletteMasks` / :class:`CocoMasks` / :class:`MatMasks` / :class:`H5Masks` - declarative
  descriptions of the mask annotations; ``loading.py`` decodes them.
- :class:`DatasetRecords` - everything one split holds.

Sample level (produced by ``ReferringVideoDataset`` and ``collate_clips``):

- :class:`ClipSample` - one clip: frames, caption, union target masks, boxes, visibility.
- :class:`ClipBatch` - padded batch of clips, with per-sample :class:`SampleMeta`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import torch

__all__ = [
    "ClipBatch",
    "ClipSample",
    "CocoMasks",
    "DatasetError",
    "DatasetRecords",
    "ExpressionRecord",
    "H5Masks",
    "MaskSource",
    "MatMasks",
    "PaletteMasks",
    "SampleMeta",
    "VideoRecord",
    "concat_records",
    "read_json",
    "require",
]


class DatasetError(ValueError):
    """Bad or missing dataset files; the message names the file or key and what was expected."""


def read_json(path: Path, what: str) -> Any:
    """Load a JSON file, turning a missing, empty or malformed file into a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing {what}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: malformed {what} (not valid JSON: {e.msg} at line {e.lineno})") from None
    if data is None or (isinstance(data, (dict, list)) and not data):
        raise DatasetError(f"{path}: empty {what}")
    return data



def require(container: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``container[key]`` checked to be of ``kind``; otherwise a one-line DatasetError naming ``where``."""
    if not isinstance(container, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(container).__name__}")
    if key not in container:
        raise DatasetError(f"{where}: key {key!r} missing")
    value = container[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DatasetError(f"{where}: {key!r} should be {names}, got {type(value).__name__}")
    return value

# --------------------------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class PaletteMasks:
    """One palette PNG per frame whose pixel value is the object id (0 = background); YTVOS/DAVIS."""

    paths: tuple[Path, ...]


@dataclass(frozen=True)
class CocoMasks:
    """COCO segmentations per referred object and frame; MeViS, A2D (COCO-format GT), RefCOCO.

    ``tracks[k][t]`` is object k's segmentation in frame t: a compressed/uncompressed RLE dict, a
    polygon list, or ``None`` where the object is absent. The target is the union over objects.
    """

    tracks: tuple[Sequence[Any], ...]


@dataclass(frozen=True)
class MatMasks:
    """A MATLAB file holding an (H, W, N) mask array; frame t is slice ``indices[t]``; JHMDB."""

    path: Path
    indices: tuple[int, ...]
    key: str = "part_mask"


@dataclass(frozen=True)
class H5Masks:
    """A2D per-frame instance masks ``<frame>.h5`` (keys ``instance``, ``reMask``); None = no file."""

    paths: tuple[Path | None, ...]


MaskSource = Union[PaletteMasks, CocoMasks, MatMasks, H5Masks]


# --------------------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class VideoRecord:
    """The ordered frames of one video; an image is a one-frame video.

    Frames come either from image files (``frame_paths``, one per frame id) or are decoded from a
    video file (``container`` with the 0-based decode index of each frame in ``container_indices``).
    """

    video_id: str
    frame_ids: tuple[str, ...]
    frame_paths: tuple[Path, ...] = ()
    container: Path | None = None
    container_indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.frame_ids)
        if n == 0:
            raise DatasetError(f"video {self.video_id!r}: no frames listed")
        if self.container is None and len(self.frame_paths) != n:
            raise ValueError(f"video {self.video_id!r}: {len(self.frame_paths)} frame paths for {n} frame ids")
        if self.container is not None and len(self.container_indices) != n:
            raise ValueError(f"video {self.video_id!r}: {len(self.container_indices)} decode indices for {n} frames")


@dataclass(frozen=True)
class ExpressionRecord:
    """One referring expression of one video.

    Attributes:
        video_id: key into :attr:`DatasetRecords.videos`.
        expression_id: the id used by the dataset's annotation file (unique per video).
        caption: the raw expression; the dataset lower-cases it and collapses whitespace.
        object_ids: the referred objects (palette values for YTVOS/DAVIS, anno ids for MeViS ...).
        masks: where the target masks live; ``None`` when the split has no mask annotations.
        anchors: frame positions to sample clips around; ``None`` means every ``anchor_stride``-th.
        category: object category name where the dataset has one.
        extra: dataset-specific metadata (e.g. ``annotator`` for Ref-DAVIS17).
    """

    video_id: str
    expression_id: str
    caption: str
    object_ids: tuple[int, ...] = ()
    masks: MaskSource | None = None
    anchors: tuple[int, ...] | None = None
    category: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class DatasetRecords:
    """Everything a reader parsed for one split.

    ``temporal`` is False for image-level datasets (RefCOCO, A2D, JHMDB): their clips have T=1.
    ``anchor_stride`` is the default spacing of anchor frames (None = ``num_frames``, as YTVOS).
    """

    name: str
    split: str
    videos: dict[str, VideoRecord]
    expressions: list[ExpressionRecord]
    temporal: bool = True
    anchor_stride: int | None = None

    def __post_init__(self) -> None:
        if not self.expressions:
            raise DatasetError(f"{self.name} {self.split}: no expressions found")
        for expression in self.expressions:
            if expression.video_id not in self.videos:
                raise DatasetError(f"{self.name}: expression {expression.expression_id!r} refers to unknown video "
                                   f"{expression.video_id!r}")

    def select(self, keep: Callable[[ExpressionRecord], bool], what: str) -> DatasetRecords:
        """The same split with only the expressions `keep` accepts (`what` names them in the error if none)."""
        kept = [e for e in self.expressions if keep(e)]
        if not kept:
            raise DatasetError(f"{self.name} {self.split}: no {what} expressions")
        return replace(self, expressions=kept)


def concat_records(parts: Sequence[DatasetRecords], name: str) -> DatasetRecords:
    """Merge several splits (e.g. RefCOCO, RefCOCO+ and RefCOCOg train) into one."""
    videos: dict[str, VideoRecord] = {}
    expressions: list[ExpressionRecord] = []
    for part in parts:
        videos.update(part.videos)
        expressions.extend(part.expressions)
    return DatasetRecords(name, "+".join(sorted({p.split for p in parts})), videos, expressions,
                          temporal=all(p.temporal for p in parts), anchor_stride=parts[0].anchor_stride)


# ------------------------------------------------------------------------------------------- samples


@dataclass
class ClipSample:
    """One training/evaluation clip.

    Attributes:
        frames: (T, 3, H, W) float32, ImageNet-normalised (mean .485,.456,.406; std .229,.224,.225).
        caption: the expression after augmentation (lower case; left/right swapped on flips).
        masks: (T, H, W) bool, union of the referred objects.
        boxes: (T, 4) float32 cx, cy, w, h normalised by the (unpadded) W and H; zeros where invisible.
        valid: (T,) bool, target visible in the frame.
        video_id, expression_id: ids from the annotation files.
        frame_ids: the T frame names, in clip order.
        orig_size: (H, W) of the frames as stored on disk.
        dataset: dataset name ("ytvos", "mevis", "refcoco+", ...).
    """

    frames: torch.Tensor
    caption: str
    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    video_id: str
    expression_id: str
    frame_ids: list[str]
    orig_size: tuple[int, int]
    dataset: str

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) after transforms."""
        return int(self.frames.shape[-2]), int(self.frames.shape[-1])

    def meta(self) -> SampleMeta:
        return SampleMeta(self.video_id, self.expression_id, list(self.frame_ids), self.orig_size, self.size,
                          self.dataset, self.caption)


@dataclass(frozen=True)
class SampleMeta:
    """Per-sample metadata carried by a :class:`ClipBatch`; ``size`` is the unpadded (H, W)."""

    video_id: str
    expression_id: str
    frame_ids: list[str]
    orig_size: tuple[int, int]
    size: tuple[int, int]
    dataset: str
    caption: str


@dataclass
class ClipBatch:
    """A batch of clips, zero-padded at the bottom/right to the batch's largest H and W.

    Attributes:
        frames: (B, T, 3, H, W) float32.
        pixel_mask: (B, H, W) bool, True on padding.
        captions: B strings.
        masks: (B, T, H, W) bool, False on padding.
        boxes: (B, T, 4) float32 cx, cy, w, h normalised by each sample's unpadded size.
        valid: (B, T) bool.
        samples: B :class:`SampleMeta`.
    """

    frames: torch.Tensor
    pixel_mask: torch.Tensor
    captions: list[str]
    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    samples: list[SampleMeta]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        """A copy with every tensor on ``device``."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(self, frames=move(self.frames), pixel_mask=move(self.pixel_mask), masks=move(self.masks),
                       boxes=move(self.boxes), valid=move(self.valid))

    def __len__(self) -> int:
        return len(self.captions)
