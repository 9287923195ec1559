"""Ref-YouTube-VOS annotations -> records (also the layout Ref-DAVIS17 is converted to).

Layout (peers 5.3)::

    <root>/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": str, "obj_id": "1"}}, "frames": ["00000", ...]}}}
    <root>/<split>/meta.json            {"videos": {vid: {"objects": {"1": {"category": str, ...}}}}}
    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/Annotations/<vid>/<frame>.png     palette PNG, value = object id (train only)

Splits without ``Annotations`` (valid, test) give expressions without masks (evaluation only).
For ``split="valid"`` the videos of the test meta file are dropped (507 -> 202 videos) when
``exclude_test_videos`` and ``meta_expressions/test/meta_expressions.json`` exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .records import DatasetError, DatasetRecords, ExpressionRecord, PaletteMasks, VideoRecord, read_json, require

__all__ = ["read_ytvos", "read_ytvos_layout"]



def jpeg_video_record(entry: Any, where: str, split_dir: Path, vid: str) -> VideoRecord:
    """The `VideoRecord` of a meta_expressions entry whose frames are `<split>/JPEGImages/<vid>/<frame>.jpg`."""
    frames = require(entry, "frames", list, where)
    if not frames or not all(isinstance(f, str) for f in frames):
        raise DatasetError(f"{where}: 'frames' should be a non-empty list of frame names")
    frame_dir = split_dir / "JPEGImages" / vid
    if not frame_dir.is_dir():
        raise DatasetError(f"{frame_dir}: missing frames folder of video {vid!r}")
    frame_ids = tuple(sorted(frames))
    return VideoRecord(vid, frame_ids, tuple(frame_dir / f"{f}.jpg" for f in frame_ids))

def _videos(path: Path, what: str) -> dict[str, Any]:
    videos = require(read_json(path, what), "videos", dict, str(path))
    if not videos:
        raise DatasetError(f"{path}: 'videos' is empty")
    return videos


def _object_id(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: obj_id should be an integer object id, got {value!r}") from None


def read_ytvos_layout(root: str | Path, split: str, *, name: str, meta_required: bool,
                      exclude: set[str] | None = None) -> DatasetRecords:
    """Parse the YTVOS layout for ``split``; ``exclude`` drops video ids."""
    root = Path(root)
    split_dir = root / split
    expressions_file = root / "meta_expressions" / split / "meta_expressions.json"
    videos = _videos(expressions_file, f"{name} expressions file")
    meta_file = split_dir / "meta.json"
    objects: dict[str, Any] | None = None
    if meta_file.is_file() or meta_required:
        objects = _videos(meta_file, f"{name} object meta file")
    annotations = split_dir / "Annotations"
    has_masks = annotations.is_dir()

    video_records: dict[str, VideoRecord] = {}
    expressions: list[ExpressionRecord] = []
    for vid, entry in videos.items():
        if exclude and vid in exclude:
            continue
        where = f"{expressions_file}: videos/{vid}"
        video_records[vid] = jpeg_video_record(entry, where, split_dir, vid)
        frame_ids = video_records[vid].frame_ids
        palette = PaletteMasks(tuple(annotations / vid / f"{f}.png" for f in frame_ids)) if has_masks else None
        video_objects = None
        if objects is not None:
            video_objects = require(require(objects, vid, dict, str(meta_file)), "objects", dict,
                                    f"{meta_file}: videos/{vid}")
        entries = require(entry, "expressions", dict, where)
        for position, (exp_id, exp) in enumerate(sorted(entries.items(), key=lambda kv: _sort_key(kv[0]))):
            exp_where = f"{where}/expressions/{exp_id}"
            caption = require(exp, "exp", str, exp_where)
            object_ids: tuple[int, ...] = ()
            category = None
            if has_masks or "obj_id" in exp:
                obj = require(exp, "obj_id", (str, int), exp_where)
                object_ids = (_object_id(obj, exp_where),)
                if video_objects is not None:
                    if str(obj) not in video_objects:
                        known = ", ".join(sorted(video_objects)) or "none"
                        raise DatasetError(f"{exp_where}: refers to unknown object {obj!r} "
                                           f"({meta_file} lists objects: {known})")
                    category = video_objects[str(obj)].get("category")
            expressions.append(ExpressionRecord(
                video_id=vid, expression_id=str(exp_id), caption=caption, object_ids=object_ids,
                masks=palette if object_ids else None, category=category,
                extra={"position": position},
            ))
    return DatasetRecords(name, split, video_records, expressions, temporal=True)


def _sort_key(exp_id: str) -> tuple[int, str]:
    return (int(exp_id), "") if exp_id.isdigit() else (1 << 30, exp_id)


def read_ytvos(root: str | Path, split: str = "train", *, exclude_test_videos: bool = True) -> DatasetRecords:
    """Ref-YouTube-VOS ``split`` ("train", "valid" or "test") under ``root`` (``ref-youtube-vos/``)."""
    exclude = None
    test_file = Path(root) / "meta_expressions" / "test" / "meta_expressions.json"
    if split == "valid" and exclude_test_videos and test_file.is_file():
        exclude = set(_videos(test_file, "Ref-YouTube-VOS test expressions file"))
    return read_ytvos_layout(root, split, name="ytvos", meta_required=split == "train", exclude=exclude)
