"""Datasets for referring video object segmentation.

``build_dataset(name, root, split, **options)`` parses a dataset's annotations into records
(``ytvos.py`` ... one reader per dataset) and wraps them in the one dataset class,
:class:`ReferringVideoDataset` (sampling, loading, transforms). ``collate_clips`` batches its
:class:`ClipSample` items into a :class:`ClipBatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .a2d import read_a2d
from .base import ReferringVideoDataset, masks_to_boxes, sample_clip_indices
from .collate import collate_clips
from .davis import read_davis
from .jhmdb import read_jhmdb
from .mevis import read_mevis
from .records import (
    ClipBatch, ClipSample, CocoMasks, DatasetError, DatasetRecords, ExpressionRecord, H5Masks, MatMasks, PaletteMasks,
    SampleMeta, VideoRecord,
)
from .refcoco import read_refcoco
from .transforms import ClipTransform, eval_transform, refcoco_train_transform, video_train_transform
from .ytvos import read_ytvos

__all__ = [
    "DATASETS",
    "ClipBatch",
    "ClipSample",
    "CocoMasks",
    "DatasetError",
    "DatasetRecords",
    "ExpressionRecord",
    "H5Masks",
    "MatMasks",
    "PaletteMasks",
    "ReferringVideoDataset",
    "SampleMeta",
    "VideoRecord",
    "build_dataset",
    "collate_clips",
    "default_train_transform",
    "eval_transform",
    "masks_to_boxes",
    "read_a2d",
    "read_davis",
    "read_jhmdb",
    "read_mevis",
    "read_refcoco",
    "read_ytvos",
    "refcoco_train_transform",
    "sample_clip_indices",
    "video_train_transform",
]

DATASETS: dict[str, Callable[..., DatasetRecords]] = {
    "ytvos": read_ytvos,
    "mevis": read_mevis,
    "davis": read_davis,
    "a2d": read_a2d,
    "jhmdb": read_jhmdb,
    "refcoco": read_refcoco,
}
_DATASET_OPTIONS = frozenset({"train", "num_frames", "anchor_stride", "transform", "seed", "reverse_prob",
                              "max_retries", "eval_short_side", "eval_max_size"})


def default_train_transform(name: str) -> ClipTransform:
    """The dataset's training augmentation (account 3.4): MeViS flips first, RefCOCO has its own scales."""
    if name == "mevis":
        return video_train_transform(flip_first=True)
    if name == "refcoco":
        return refcoco_train_transform()
    return video_train_transform()


def build_dataset(name: str, root: str | Path, split: str, **options: Any) -> ReferringVideoDataset:
    """Build dataset ``name`` (ytvos, mevis, davis, a2d, jhmdb, refcoco) from ``root`` for ``split``.

    Options of :class:`ReferringVideoDataset` (``train`` - default ``split == "train"`` -,
    ``num_frames``, ``anchor_stride``, ``transform``, ``seed``, ``reverse_prob``, ``max_retries``,
    ``eval_short_side``, ``eval_max_size``) go to the dataset; the others to the reader, e.g.
    ``variants="all"`` for refcoco, ``frames_dir=...`` for a2d, ``sampling_step=64`` for mevis.
    ``keep=(predicate, what)`` keeps only the expressions the predicate accepts (`what` names them in errors).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    keep = options.pop("keep", None)
    dataset_options = {k: v for k, v in options.items() if k in _DATASET_OPTIONS}
    reader_options = {k: v for k, v in options.items() if k not in _DATASET_OPTIONS}
    records = DATASETS[key](root, split, **reader_options)
    if keep is not None:
        records = records.select(*keep)
    train = dataset_options.pop("train", split == "train")
    if train and dataset_options.get("transform") is None:
        dataset_options["transform"] = default_train_transform(key)
    return ReferringVideoDataset(records, train=train, **dataset_options)

