"""RefCOCO / RefCOCO+ / RefCOCOg in ReferFormer's COCO format -> records. Image-level (T=1).

Layout (peers 5.3), produced by ReferFormer's ``convert_refexp_to_coco.py``::

    <root>/train2014/COCO_train2014_<id>.jpg
    <root>/<variant>/instances_<variant>_<split>.json
        {"images": [{"id", "file_name", "height", "width", "caption", ...}],   one entry per expression
         "annotations": [{"image_id", "segmentation", "bbox", ...}]}        the referred object(s)

``variants`` selects one or more of refcoco, refcoco+, refcocog ("all" = the three, the pretraining
mix); each sample's ``dataset`` is its variant. Video ids are the image file stems, so expressions on
the same COCO image share one VideoRecord; expression ids are the entry ids of the JSON.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .records import (
    CocoMasks, DatasetError, DatasetRecords, ExpressionRecord, VideoRecord, concat_records, read_json, require,
)

__all__ = ["VARIANTS", "read_refcoco"]

VARIANTS = ("refcoco", "refcoco+", "refcocog")


def _read_variant(root: Path, variant: str, split: str, image_dir: Path) -> DatasetRecords:
    path = root / variant / f"instances_{variant}_{split}.json"
    data = read_json(path, f"{variant} annotation file")
    images = require(data, "images", list, str(path))
    by_image: dict[Any, list[Any]] = defaultdict(list)
    for i, annotation in enumerate(require(data, "annotations", list, str(path))):
        where = f"{path}: annotations[{i}]"
        by_image[require(annotation, "image_id", (int, str), where)].append(
            require(annotation, "segmentation", (dict, list), where))
    videos: dict[str, VideoRecord] = {}
    expressions: list[ExpressionRecord] = []
    for i, image in enumerate(images):
        where = f"{path}: images[{i}]"
        entry_id = require(image, "id", (int, str), where)
        file_name = require(image, "file_name", str, where)
        caption = require(image, "caption", str, where)
        if entry_id not in by_image:
            raise DatasetError(f"{where}: no annotation with image_id {entry_id!r} (the referred object)")
        stem = Path(file_name).stem
        videos.setdefault(stem, VideoRecord(stem, (stem,), (image_dir / file_name,)))
        expressions.append(ExpressionRecord(
            video_id=stem, expression_id=str(entry_id), caption=caption,
            masks=CocoMasks(tuple([segmentation] for segmentation in by_image[entry_id])),
            extra={"dataset": variant},
        ))
    return DatasetRecords(variant, split, videos, expressions, temporal=False, anchor_stride=1)


def read_refcoco(root: str | Path, split: str = "train", *, variants: str | Sequence[str] = "refcoco",
                 image_dir: str = "train2014") -> DatasetRecords:
    """RefCOCO-family ``split`` ("train", "val", "testA" ...) under ``root`` (the ``coco/`` folder)."""
    root = Path(root)
    names = VARIANTS if variants == "all" else ((variants,) if isinstance(variants, str) else tuple(variants))
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"unknown RefCOCO variant(s) {unknown}; expected some of {VARIANTS} or 'all'")
    images = root / image_dir
    if not images.is_dir():
        raise DatasetError(f"{images}: missing COCO image folder")
    parts = [_read_variant(root, v, split, images) for v in names]
    return parts[0] if len(parts) == 1 else concat_records(parts, "refcoco")
