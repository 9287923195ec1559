"""JHMDB-Sentences annotations -> records. Image-level (T=1); evaluation only in the paper.

Layout (peers 5.3)::

    <root>/Rename_Images/<action>/<video>/<frame:05d>.png          1-based frame numbers
    <root>/puppet_mask/<action>/<video>/puppet_mask.mat            key "part_mask", (H, W, T)
    <root>/jhmdb_annotation.txt                                    CSV with header "video_id,query"
    <root>/jhmdb_sentences_samples_metadata.json  (optional, MTTR)
        [[video_id, frame_path, masks_path, video_total_frames, query], ...]

With MTTR's metadata file the anchors are exactly its chosen frames (3 per video, the published
protocol). Without it every frame that has a mask is an anchor.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from .records import DatasetError, DatasetRecords, ExpressionRecord, MatMasks, VideoRecord, read_json

__all__ = ["read_jhmdb"]


def _text_annotations(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing JHMDB-Sentences annotation file")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video_id", "query"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected a CSV header with columns video_id,query")
        rows = [(row["video_id"], row["query"]) for row in reader]
    if not rows:
        raise DatasetError(f"{path}: no annotations")
    return rows


def _chosen_frames(path: Path) -> dict[str, tuple[int, set[int]]]:
    """video id -> (total frames, chosen 1-based frame numbers) from MTTR's metadata file."""
    data = read_json(path, "JHMDB-Sentences samples metadata file")
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of [video_id, frame_path, masks_path, total_frames, query]")
    chosen: dict[str, tuple[int, set[int]]] = {}
    for i, entry in enumerate(data):
        try:
            video_id, frame_path, _, total, _ = entry
            frame = int(Path(str(frame_path)).stem)
            total = int(total)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: entry {i} should be [video_id, frame_path, masks_path, total_frames, "
                               f"query], got {entry!r}") from None
        chosen.setdefault(str(video_id), (total, set()))[1].add(frame)
    return chosen


def _mask_count(path: Path) -> int:
    import scipy.io

    try:
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception as e:  # scipy raises several types for corrupt files
        raise DatasetError(f"{path}: unreadable MATLAB file ({e})") from None
    if "part_mask" not in shapes:
        raise DatasetError(f"{path}: key 'part_mask' not found (expected an (H, W, T) mask array)")
    shape = shapes["part_mask"]
    return shape[2] if len(shape) == 3 else 1


def read_jhmdb(root: str | Path, split: str = "test", *, samples_file: str | Path | None = None) -> DatasetRecords:
    """JHMDB-Sentences under ``root`` (``jhmdb_sentences/``); ``split`` is only a label."""
    root = Path(root)
    annotations = _text_annotations(root / "jhmdb_annotation.txt")
    metadata = Path(samples_file) if samples_file else root / "jhmdb_sentences_samples_metadata.json"
    chosen = _chosen_frames(metadata) if metadata.is_file() or samples_file else None
    folders = {p.name: p for p in (root / "Rename_Images").glob("*/*") if p.is_dir()}

    videos: dict[str, VideoRecord] = {}
    expressions: list[ExpressionRecord] = []
    per_video: dict[str, int] = defaultdict(int)
    for video_id, query in annotations:
        folder = folders.get(video_id)
        if folder is None:
            raise DatasetError(f"{root / 'Rename_Images'}/*/{video_id}: missing frames folder of video {video_id!r}")
        mask_path = root / "puppet_mask" / folder.parent.name / video_id / "puppet_mask.mat"
        if not mask_path.is_file():
            raise DatasetError(f"{mask_path}: missing mask file of video {video_id!r}")
        if chosen is not None:
            if video_id not in chosen:
                raise DatasetError(f"{metadata}: no frames listed for video {video_id!r}")
            total, frames = chosen[video_id]
            anchors: tuple[int, ...] | None = tuple(sorted(f - 1 for f in frames))
        else:
            total = min(len(list(folder.glob("*.png"))), _mask_count(mask_path))
            anchors = None
        if total < 1:
            raise DatasetError(f"{folder}: no frames with masks")
        frame_ids = tuple(f"{i:05d}" for i in range(1, total + 1))
        videos[video_id] = VideoRecord(video_id, frame_ids, tuple(folder / f"{fid}.png" for fid in frame_ids))
        n = per_video[video_id]
        per_video[video_id] += 1
        expressions.append(ExpressionRecord(
            video_id=video_id, expression_id=str(n), caption=query, object_ids=(1,),
            masks=MatMasks(mask_path, tuple(range(total))), anchors=anchors, category=folder.parent.name,
        ))
    return DatasetRecords("jhmdb", split, videos, expressions, temporal=False, anchor_stride=1)
