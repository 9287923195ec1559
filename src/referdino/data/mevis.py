"""MeViS annotations -> records.

Layout (peers 5.3)::

    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/meta_expressions.json
        {"videos": {vid: {"frames": [...],
                          "expressions": {"0": {"exp": str, "obj_id": [0, 2], "anno_id": [1234, 1236]}}}}}
    <root>/<split>/mask_dict.json       {"<anno_id>": [COCO compressed RLE or null, one per frame]}

Splits: ``train``, ``valid_u`` (local evaluation, with masks) and ``valid`` (server evaluation, no
masks). The official code's names are accepted when no folder of that name exists: ``val`` ->
``valid_u`` and ``test`` -> ``valid``. The target of an expression is the union of its anno ids'
masks; an empty ``anno_id`` list (no-target expression) gives an empty target. Anchors are every
64th frame (``sampling_step``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .records import CocoMasks, DatasetError, DatasetRecords, ExpressionRecord, VideoRecord, read_json, require
from .ytvos import jpeg_video_record

__all__ = ["read_mevis"]

SPLIT_ALIASES = {"val": "valid_u", "test": "valid"}
SAMPLING_STEP = 64


def _ints(values: Any, key: str, where: str) -> tuple[int, ...]:
    if not isinstance(values, list):
        values = [values]
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {key!r} should be a list of integer ids, got {values!r}") from None


def read_mevis(root: str | Path, split: str = "train", *, sampling_step: int = SAMPLING_STEP) -> DatasetRecords:
    """MeViS ``split`` under ``root`` (``mevis/``)."""
    root = Path(root)
    if not (root / split).is_dir():
        split = SPLIT_ALIASES.get(split, split)
    split_dir = root / split
    expressions_file = split_dir / "meta_expressions.json"
    videos = require(read_json(expressions_file, "MeViS expressions file"), "videos", dict, str(expressions_file))
    if not videos:
        raise DatasetError(f"{expressions_file}: 'videos' is empty")
    mask_file = split_dir / "mask_dict.json"
    mask_dict = None
    if mask_file.is_file() or split == "train":
        mask_dict = read_json(mask_file, "MeViS mask file")
        if not isinstance(mask_dict, dict):
            raise DatasetError(f"{mask_file}: expected an object mapping anno ids to per-frame RLE lists")

    video_records: dict[str, VideoRecord] = {}
    expressions: list[ExpressionRecord] = []
    for vid, entry in videos.items():
        where = f"{expressions_file}: videos/{vid}"
        video_records[vid] = jpeg_video_record(entry, where, split_dir, vid)
        frame_ids = video_records[vid].frame_ids
        for exp_id, exp in require(entry, "expressions", dict, where).items():
            exp_where = f"{where}/expressions/{exp_id}"
            caption = require(exp, "exp", str, exp_where)
            obj_ids = _ints(exp["obj_id"], "obj_id", exp_where) if isinstance(exp, dict) and "obj_id" in exp else ()
            anno_ids: tuple[int, ...] = ()
            masks = None
            if mask_dict is not None:
                anno_ids = _ints(require(exp, "anno_id", (list, int, str), exp_where), "anno_id", exp_where)
                masks = CocoMasks(tuple(_track(mask_dict, a, len(frame_ids), mask_file, exp_where) for a in anno_ids))
            expressions.append(ExpressionRecord(
                video_id=vid, expression_id=str(exp_id), caption=caption, object_ids=anno_ids, masks=masks,
                extra={"obj_ids": obj_ids},
            ))
    return DatasetRecords("mevis", split, video_records, expressions, temporal=True, anchor_stride=sampling_step)


def _track(mask_dict: dict[str, Any], anno_id: int, num_frames: int, mask_file: Path, where: str) -> list[Any]:
    track = mask_dict.get(str(anno_id))
    if track is None:
        raise DatasetError(f"{where}: refers to unknown object anno_id {anno_id} (not a key of {mask_file})")
    if not isinstance(track, list) or len(track) != num_frames:
        got = len(track) if isinstance(track, list) else type(track).__name__
        raise DatasetError(f"{mask_file}: entry {anno_id!r} should list one RLE or null per frame "
                           f"({num_frames}), got {got}")
    return track
