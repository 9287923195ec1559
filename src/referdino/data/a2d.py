"""A2D-Sentences annotations (MTTR / ReferFormer layout) -> records. Image-level (T=1).

Layout (peers 5.3)::

    <root>/Release/clips320H/<video>.mp4                     frames, decoded with PyAV
    <root>/a2d_sentences_single_frame_<split>_annotations.json
        [[query, video_id, frame_idx (1-based), instance_id], ...]  one sample per annotated frame
    masks, either of:
    <root>/a2d_sentences_<split>_annotations_in_coco_format.json   (read without extra dependencies)
        {"images": [{"id": "v_<video>_f_<frame>_i_<instance>", "height", "width"}],
         "annotations": [{"image_id": ..., "segmentation": COCO RLE}]}
    <root>/text_annotations/a2d_annotation_with_instances/<video>/<frame:05d>.h5  (needs h5py)

The single-frame file lists (query, video, frame, instance) only; the masks come from the COCO-format
file when it exists (MTTR writes it for the test split), otherwise from the .h5 files, which need
``h5py`` (not a dependency of this package; a clear ImportError says so).

Pre-extracted frames are used instead of the .mp4 when ``frames_dir`` is given:
``<frames_dir>/<video>/<frame:05d>.jpg`` (or .png), numbered 1-based like the .h5 files.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .records import (
    CocoMasks, DatasetError, DatasetRecords, ExpressionRecord, H5Masks, MaskSource, VideoRecord, read_json, require,
)

__all__ = ["read_a2d"]

SPLIT_ALIASES = {"val": "test", "valid": "test"}
MASKS_DIR = "text_annotations/a2d_annotation_with_instances"


def image_id(video_id: str, frame: int, instance_id: int) -> str:
    """MTTR's COCO image id of one annotated (video, frame, instance)."""
    return f"v_{video_id}_f_{frame}_i_{instance_id}"


def _samples(path: Path) -> list[tuple[str, str, int, int]]:
    data = read_json(path, "A2D-Sentences single-frame annotation file")
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of [query, video_id, frame_idx, instance_id]")
    samples = []
    for i, entry in enumerate(data):
        try:
            query, video_id, frame, instance = entry
            samples.append((str(query), str(video_id), int(frame), int(instance)))
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: entry {i} should be [query, video_id, frame_idx, instance_id], "
                               f"got {entry!r}") from None
    return samples


def _coco_segmentations(path: Path) -> dict[str, Any]:
    data = read_json(path, "A2D-Sentences COCO-format annotation file")
    images = {str(img["id"]): img for img in require(data, "images", list, str(path))}
    segmentations = {}
    for i, annotation in enumerate(require(data, "annotations", list, str(path))):
        where = f"{path}: annotations[{i}]"
        key = str(require(annotation, "image_id", (str, int), where))
        if key not in images:
            raise DatasetError(f"{where}: image_id {key!r} is not in 'images'")
        segmentations[key] = require(annotation, "segmentation", (dict, list), where)
    return segmentations


def read_a2d(root: str | Path, split: str = "train", *, frames_dir: str | Path | None = None,
             annotations_file: str | Path | None = None, masks_file: str | Path | None = None) -> DatasetRecords:
    """A2D-Sentences ``split`` ("train" or "test"; "val"/"valid" mean "test") under ``root``."""
    root = Path(root)
    split = SPLIT_ALIASES.get(split, split)
    default_samples = root / f"a2d_sentences_single_frame_{split}_annotations.json"
    samples_file = Path(annotations_file) if annotations_file else default_samples
    samples = _samples(samples_file)
    coco_file = Path(masks_file) if masks_file else root / f"a2d_sentences_{split}_annotations_in_coco_format.json"
    segmentations = _coco_segmentations(coco_file) if coco_file.is_file() or masks_file else None
    if segmentations is None:
        if not (root / MASKS_DIR).is_dir():
            raise DatasetError(f"{root / MASKS_DIR}: missing A2D masks (and no {coco_file.name} either)")
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ImportError(f"A2D .h5 masks need h5py (pip install h5py); or put {coco_file.name} "
                              f"(COCO-format masks with RLE) in {root}") from None

    frames_by_video: dict[str, set[int]] = defaultdict(set)
    groups: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for query, video_id, frame, instance in samples:
        frames_by_video[video_id].add(frame)
        groups[(video_id, instance, query)].append(frame)

    videos: dict[str, VideoRecord] = {}
    for video_id, frame_set in frames_by_video.items():
        frames = sorted(frame_set)
        frame_ids = tuple(f"{f:05d}" for f in frames)
        if frames_dir is not None:
            folder = Path(frames_dir) / video_id
            if not folder.is_dir():
                raise DatasetError(f"{folder}: missing frames folder of video {video_id!r}")
            videos[video_id] = VideoRecord(video_id, frame_ids, tuple(folder / f"{fid}.jpg" for fid in frame_ids))
        else:
            container = root / "Release" / "clips320H" / f"{video_id}.mp4"
            if not container.is_file():
                raise DatasetError(f"{container}: missing video file")
            videos[video_id] = VideoRecord(video_id, frame_ids, container=container,
                                           container_indices=tuple(f - 1 for f in frames))

    expressions: list[ExpressionRecord] = []
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for (video_id, instance, query), frames in groups.items():
        frame_ids = videos[video_id].frame_ids
        position = {fid: p for p, fid in enumerate(frame_ids)}
        anchors = tuple(sorted(position[f"{f:05d}"] for f in set(frames)))
        masks: MaskSource
        if segmentations is not None:
            track: list[Any] = [None] * len(frame_ids)
            for f in frames:
                key = image_id(video_id, f, instance)
                if key not in segmentations:
                    raise DatasetError(f"{coco_file}: no annotation for image id {key!r} listed in {samples_file.name}")
                track[position[f"{f:05d}"]] = segmentations[key]
            masks = CocoMasks((track,))
        else:
            masks = H5Masks(tuple(root / MASKS_DIR / video_id / f"{fid}.h5" for fid in frame_ids))
        n = seen[(video_id, instance)]
        seen[(video_id, instance)] += 1
        expressions.append(ExpressionRecord(
            video_id=video_id, expression_id=str(instance) if n == 0 else f"{instance}#{n}", caption=query,
            object_ids=(instance,), masks=masks, anchors=anchors,
        ))
    return DatasetRecords("a2d", split, videos, expressions, temporal=False)
