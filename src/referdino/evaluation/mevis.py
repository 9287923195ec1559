"""MeViS ``valid_u`` (and Ref-YouTube-VOS style) offline evaluation: J, F and J&F of PNG predictions.

Replicates the MeViS authors' ``tools/eval_mevis.py`` (henghuiding/MeViS; the copy ReferDINO ships as
``eval/eval_mevis.py``):

- for each expression of ``meta_expressions.json`` the ground truth of frame ``i`` is the union of the
  masks ``mask_dict[str(anno_id)][i]`` of its ``anno_id`` list (``null`` = absent; an empty list gives an
  empty target);
- the prediction is ``<pred>/<video>/<exp_id>/<frame>.png`` read as grey (``cv2.IMREAD_GRAYSCALE``);
  ``db_eval_iou`` / ``db_eval_boundary`` cast both masks to bool, so **any non-zero pixel is foreground**
  (0/255 and 0/1 PNGs give the same result);
- J (region IoU, both empty -> 1) and F (DAVIS boundary F) are averaged over all frames listed for the
  video, then over expressions; J&F = (J + F) / 2;
- a video whose prediction folder is missing scores J = F = 0 for all its expressions (what the official
  script does; ``strict=True`` raises instead). A missing expression folder or frame is an error (the
  official script crashes on it).

Ground truth in the Ref-YouTube-VOS layout (``Annotations/<video>/<frame>.png`` palette label maps plus a
``meta_expressions.json`` whose ``obj_id`` is a string, an int or a list) is read too: the target is the
union of the pixels whose label equals one of the expression's object ids. The meta file is looked up in
the split folder, then at ``<root>/meta_expressions/<split>/meta_expressions.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import rle as rle_api
from ..data.records import DatasetError, read_json, require
from ._common import GT_HINT, read_binary_png, read_label_png
from .metrics import contour_accuracy, region_similarity

__all__ = ["evaluate_mevis"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Task:
    """One expression to score; small and picklable so that it can go to a worker process."""

    video: str
    exp_id: str
    frames: tuple[str, ...]
    pred_dir: str                      # <pred>/<video>/<exp_id>
    kind: str                          # "rle" (MeViS) or "palette" (Ref-YouTube-VOS)
    rle_tracks: tuple[Any, ...] = ()   # MeViS: one per anno_id, a list (per frame) of RLE or None
    label_paths: tuple[str, ...] = ()  # YTVOS: Annotations/<video>/<frame>.png per frame
    object_ids: tuple[int, ...] = ()   # YTVOS: labels forming the target
    where: str = ""


def evaluate_mevis(pred_dir: str | Path, gt_dir: str | Path, *, workers: int = 1, strict: bool = False,
                   per_expression: bool = False) -> dict[str, Any]:
    """J, F and J&F (fractions) of the predictions in ``pred_dir`` against the split folder ``gt_dir``.

    ``gt_dir`` is a MeViS split folder (``meta_expressions.json`` + ``mask_dict.json``, e.g.
    ``mevis/valid_u``) or a Ref-YouTube-VOS style split folder with ``Annotations/``. ``pred_dir`` holds
    ``<video>/<exp_id>/<frame>.png`` (an ``Annotations/`` folder inside it is used when present).
    Returns ``{"J", "F", "J&F", "expressions", "missing_videos"[, "per_expression"]}``.
    """
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise DatasetError(f"{pred_root}: prediction folder not found; "
                           f"pass the folder holding <video>/<exp_id>/<frame>.png")
    tasks = _build_tasks(pred_root, Path(gt_dir))
    missing = sorted({t.video for t in tasks if not Path(t.pred_dir).parent.is_dir()})
    if missing and strict:
        raise DatasetError(f"{pred_root / missing[0]}: no predictions for video {missing[0]!r} "
                           f"({len(missing)} video(s) missing); predict every video of the benchmark file")
    for video in missing:
        logger.warning("%s: video folder missing, its expressions score J = F = 0 (as the official script)",
                       pred_root / video)
    todo = [t for t in tasks if t.video not in set(missing)]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            scores = list(pool.map(_score_expression, todo, chunksize=max(1, len(todo) // (4 * workers))))
    else:
        scores = [_score_expression(t) for t in todo]
    by_key = {(t.video, t.exp_id): s for t, s in zip(todo, scores)}
    per: dict[str, dict[str, float]] = {}
    js, fs = [], []
    for t in tasks:
        j, f = by_key.get((t.video, t.exp_id), (0.0, 0.0))
        js.append(j)
        fs.append(f)
        per[f"{t.video}/{t.exp_id}"] = {"J": j, "F": f}
    j_mean, f_mean = float(np.mean(js)), float(np.mean(fs))
    result: dict[str, Any] = {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2,
                              "expressions": len(tasks), "missing_videos": missing}
    if per_expression:
        result["per_expression"] = per
    return result


# ----------------------------------------------------------------------------------------------- GT


def _build_tasks(pred_root: Path, gt_dir: Path) -> list[_Task]:
    if not gt_dir.is_dir():
        raise DatasetError(f"{gt_dir}: ground-truth folder not found; pass the split folder (e.g. mevis/valid_u)")
    if (pred_root / "Annotations").is_dir():
        pred_root = pred_root / "Annotations"
    mask_file = gt_dir / "mask_dict.json"
    if mask_file.is_file():
        return _mevis_tasks(pred_root, gt_dir / "meta_expressions.json", mask_file)
    annotations = gt_dir / "Annotations"
    if annotations.is_dir():
        meta = gt_dir / "meta_expressions.json"
        if not meta.is_file():
            meta = gt_dir.parent / "meta_expressions" / gt_dir.name / "meta_expressions.json"
        return _ytvos_tasks(pred_root, meta, annotations)
    raise DatasetError(f"{gt_dir}: neither mask_dict.json (MeViS) nor Annotations/ (Ref-YouTube-VOS) found; "
                       f"pass the split folder that holds the ground truth (e.g. mevis/valid_u)")


def _videos(meta_file: Path) -> dict[str, Any]:
    videos = require(read_json(meta_file, "benchmark expressions file"), "videos", dict, str(meta_file))
    if not videos:
        raise DatasetError(f"{meta_file}: 'videos' is empty; use the benchmark's meta_expressions.json")
    return videos


def _frames_and_expressions(entry: Any, where: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    frames = require(entry, "frames", list, where)
    if not frames or not all(isinstance(f, str) for f in frames):
        raise DatasetError(f"{where}: 'frames' should be a non-empty list of frame names")
    expressions = require(entry, "expressions", dict, where)
    return tuple(frames), expressions


def _id_list(value: Any, key: str, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {key!r} should be an integer id or a list of them, got {value!r}") from None


def _mevis_tasks(pred_root: Path, meta_file: Path, mask_file: Path) -> list[_Task]:
    videos = _videos(meta_file)
    mask_dict = read_json(mask_file, "MeViS mask file")
    if not isinstance(mask_dict, dict):
        raise DatasetError(f"{mask_file}: expected an object mapping anno ids to per-frame RLE lists")
    tasks = []
    for video, entry in videos.items():
        where = f"{meta_file}: videos/{video}"
        frames, expressions = _frames_and_expressions(entry, where)
        for exp_id, exp in expressions.items():
            exp_where = f"{where}/expressions/{exp_id}"
            anno_ids = _id_list(require(exp, "anno_id", (list, int, str), exp_where), "anno_id", exp_where)
            tracks = []
            for anno_id in anno_ids:
                track = mask_dict.get(str(anno_id))
                if not isinstance(track, list) or len(track) != len(frames):
                    got = "missing" if track is None else (f"{len(track)} entries" if isinstance(track, list)
                                                           else type(track).__name__)
                    raise DatasetError(f"{mask_file}: anno_id {anno_id} of {video}/{exp_id} should list one RLE "
                                       f"or null per frame ({len(frames)}), got {got}")
                tracks.append(track)
            tasks.append(_Task(video, str(exp_id), frames, str(pred_root / video / str(exp_id)), "rle",
                               rle_tracks=tuple(tracks), where=str(mask_file)))
    return tasks


def _ytvos_tasks(pred_root: Path, meta_file: Path, annotations: Path) -> list[_Task]:
    videos = _videos(meta_file)
    tasks = []
    for video, entry in videos.items():
        where = f"{meta_file}: videos/{video}"
        frames, expressions = _frames_and_expressions(entry, where)
        label_paths = tuple(str(annotations / video / f"{f}.png") for f in frames)
        for exp_id, exp in expressions.items():
            exp_where = f"{where}/expressions/{exp_id}"
            obj_ids = _id_list(require(exp, "obj_id", (list, int, str), exp_where), "obj_id", exp_where)
            tasks.append(_Task(video, str(exp_id), frames, str(pred_root / video / str(exp_id)), "palette",
                               label_paths=label_paths, object_ids=obj_ids, where=str(annotations)))
    return tasks


def _gt_frame(task: _Task, index: int) -> np.ndarray | None:
    """Target of frame ``index`` (None: an empty target whose size follows the prediction)."""
    if task.kind == "palette":
        labels = read_label_png(Path(task.label_paths[index]), "ground-truth annotation", GT_HINT)
        return np.isin(labels, task.object_ids)
    target = None
    for track in task.rle_tracks:
        rle = track[index]
        if not rle:  # null (object absent in this frame), as the official `if mask_rle:`
            continue
        if not isinstance(rle, Mapping):
            raise DatasetError(f"{task.where}: frame {index} of an object of {task.video}/{task.exp_id} "
                               f"should be a COCO RLE or null, got {type(rle).__name__}")
        try:
            mask = rle_api.decode(rle)
        except ValueError as e:
            raise DatasetError(f"{task.where}: bad RLE in frame {index} of {task.video}/{task.exp_id} ({e})") from None
        if target is None:
            target = mask.copy()
        elif target.shape != mask.shape:
            raise DatasetError(f"{task.where}: RLE sizes differ within frame {index} of {task.video}/{task.exp_id}")
        else:
            target |= mask
    return target


def _rle_size(task: _Task) -> tuple[int, ...] | None:
    for track in task.rle_tracks:
        for rle in track:
            if rle and isinstance(rle, Mapping) and isinstance(rle.get("size"), list) and len(rle["size"]) == 2:
                return (int(rle["size"][0]), int(rle["size"][1]))
    return None


def _score_expression(task: _Task) -> tuple[float, float]:
    """Mean J and mean F over the frames of one expression."""
    pred_dir = Path(task.pred_dir)
    if not pred_dir.is_dir():
        raise DatasetError(f"{pred_dir}: no predictions for expression {task.exp_id!r} of video {task.video!r}; "
                           f"write <video>/<exp_id>/<frame>.png for every expression")
    size = _rle_size(task)  # frames without any target take the size of the others
    js, fs = [], []
    for i, frame in enumerate(task.frames):
        pred = read_binary_png(pred_dir / f"{frame}.png")
        gt = _gt_frame(task, i)
        if gt is not None:
            size = gt.shape
        elif size is None:
            size = pred.shape
        if pred.shape != size:
            raise DatasetError(f"{pred_dir / f'{frame}.png'}: prediction is {pred.shape[0]}x{pred.shape[1]} but "
                               f"the ground truth is {size[0]}x{size[1]}; save masks at the original frame size")
        if gt is None:
            gt = np.zeros(size, dtype=bool)
        js.append(region_similarity(pred, gt))
        fs.append(contour_accuracy(pred, gt))
    return float(np.mean(js)), float(np.mean(fs))
