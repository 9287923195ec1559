"""A2D-Sentences / JHMDB-Sentences evaluation: P@0.5..0.9, overall and mean IoU, COCO segm mAP.

Two parts, each replicating the official code (ReferDINO ``trainer.py:evaluate_a2d_sentences``, from MTTR):

**Precision@K and IoU** (``util/metrics.py:calculate_precision_at_k_and_iou_metrics``). For every image of
the ground truth (in file order) the first GT annotation of the image is the target and the prediction
with the highest score is taken (``sorted(preds, key=score)[-1]``: on a tie, the one listed last). With
``I`` and ``U`` the pixel counts of intersection and union as float32, ``IoU = (I + 1e-6) / (U + 1e-6)``
in float32 (``compute_mask_iou``), so two empty masks give 1 and IoU = 0.5 of a 1-pixel intersection
over a 2-pixel union comes out just above 0.5. P@K = fraction of images with IoU **strictly above** K;
overall IoU = sum I / sum U; mean IoU = mean of the float32 IoUs.

**mAP** is pycocotools' own ``COCOeval(gt, gt.loadRes(preds), iouType='segm')`` with ``params.useCats = 0``,
run on the ground truth and predictions as loaded here (pycocotools is the field's standard and runs its mask
IoUs in C; we used to re-implement it in numpy). What that means, and what the tests check:

- ``COCO.loadRes``: every prediction must name a GT image; it gets ``id = index + 1``, ``iscrowd = 0``
  and its mask area. ``imgIds = sorted(unique(GT image ids))``, ``catIds = sorted(GT category ids)``; with
  ``useCats = 0`` the annotations of an image are those of all ``catIds`` (anything with another category
  id is left out). Polygons are rasterised with ``frPyObjects`` (a 4-number "polygon" is a box).
- Detections are sorted by score and cut to the best 100 of each image; IoU is intersection / union, or
  intersection / area(detection) for a crowd GT, which is ignored: a detection matched to it is neither a
  TP nor a FP.
- A GT with id 0 counts as a miss (``dtMatches`` stores the GT *id* and is later tested for truth).
- Precision is ``TP / (TP + FP + eps)`` made monotone from the right, sampled at 101 recall points; mAP is
  its mean over the IoU thresholds ``0.5:0.05:0.95`` (area range "all", maxDets 100), AP50 / AP75 the
  same at one threshold; -1 when no GT counts.

Deviation: a prediction without ``category_id`` counts as the first GT category (pycocotools raises
``KeyError``); MTTR/ReferDINO write ``category_id: 1`` and a single category ``{"id": 1}``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import rle as rle_api
from ..data.records import DatasetError, read_json

__all__ = ["cocoeval_segm", "evaluate_a2d", "poly_to_mask", "top1_iou_metrics"]

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = 100
AREA_ALL = (0 ** 2, 1e5 ** 2)
PRECISION_KS = (0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class _Ann:
    id: float
    image_id: Any
    category_id: Any
    mask: np.ndarray
    area: float
    iscrowd: int = 0
    score: float = 0.0


def evaluate_a2d(pred_json: str | Path, gt_json: str | Path) -> dict[str, Any]:
    """P@0.5..0.9, overall/mean IoU (top-1 per image) and COCO segm mAP/AP50/AP75 (all predictions).

    ``gt_json``: MTTR's COCO-format ground truth (``images`` with ``id``/``height``/``width``,
    ``annotations`` with RLE or polygon ``segmentation``, ``categories``). ``pred_json``: a list of
    ``{"image_id", "segmentation" (COCO RLE), "score"[, "category_id"]}``. Values are fractions.
    """
    gt_path, pred_path = Path(gt_json), Path(pred_json)
    images, gts, cat_ids = _load_gt(gt_path)
    dts = _load_predictions(pred_path, images)
    result: dict[str, Any] = {}
    result.update(top1_iou_metrics(images, gts, dts, where=(gt_path, pred_path)))
    result.update(cocoeval_segm(images, gts, dts, cat_ids))
    result["images"] = len(images)
    result["predictions"] = len(dts)
    return result


# ------------------------------------------------------------------------------------------- masks


def poly_to_mask(xy: Sequence[float], height: int, width: int) -> np.ndarray:
    """One polygon ``[x0, y0, x1, y1, ...]`` rasterised by pycocotools (``frPyObjects``/``rleFrPoly``), decoded."""
    return _segmentation_mask([[float(v) for v in xy]], height, width, "polygon")


def _segmentation_mask(seg: Any, height: int, width: int, where: str) -> np.ndarray:
    """``COCO.annToRLE`` + decode: polygons (or 4-number boxes) merged, uncompressed or compressed RLE."""
    try:
        if isinstance(seg, list):
            if not seg or not all(isinstance(p, list) for p in seg):
                raise ValueError("a polygon segmentation is a non-empty list of coordinate lists")
            from pycocotools import mask as mask_api

            try:  # frPyObjects looks at the first entry only to tell boxes from polygons
                rle = mask_api.merge(mask_api.frPyObjects(seg, int(height), int(width)))
            except Exception as e:  # noqa: BLE001 - pycocotools raises a bare Exception for unsupported input
                raise ValueError(str(e) or type(e).__name__) from None
            return rle_api.decode(rle)
        if isinstance(seg, Mapping):
            return rle_api.decode(seg)
        raise ValueError(f"unsupported segmentation of type {type(seg).__name__}")
    except (ValueError, TypeError, KeyError) as e:
        raise DatasetError(f"{where}: bad segmentation ({e}); use COCO RLE {{'size': [H, W], 'counts': ...}}") from None


# ------------------------------------------------------------------------------------------- input


def _load_gt(path: Path) -> tuple[dict[Any, tuple[int, int]], list[_Ann], list[Any]]:
    data = read_json(path, "COCO-format ground truth")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"]:
        raise DatasetError(f"{path}: expected a COCO object with a non-empty 'images' list; "
                           f"use MTTR's *_annotations_in_coco_format.json")
    if not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: 'annotations' list missing; use MTTR's *_annotations_in_coco_format.json")
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{path}: 'categories' missing or empty; COCO ground truth needs them "
                           f"(MTTR writes [{{'id': 1}}])")
    try:
        cat_ids = sorted({c["id"] for c in categories})
        images: dict[Any, tuple[int, int]] = {}
        for img in data["images"]:
            images.setdefault(img["id"], (int(img["height"]), int(img["width"])))
    except (TypeError, KeyError, ValueError) as e:
        raise DatasetError(f"{path}: malformed 'images' or 'categories' entry ({e!r}); each image needs "
                           f"id, height and width, each category an id") from None
    gts: list[_Ann] = []
    seen: set[Any] = set()
    for n, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{n}]"
        if not isinstance(ann, dict) or not {"id", "image_id", "segmentation"} <= ann.keys():
            raise DatasetError(f"{where}: needs id, image_id and segmentation")
        if ann["image_id"] not in images:
            raise DatasetError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        try:
            ann_id = float(ann["id"])
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: id {ann['id']!r} should be a number") from None
        if ann["id"] in seen:
            raise DatasetError(f"{where}: duplicate annotation id {ann['id']!r}")
        seen.add(ann["id"])
        h, w = images[ann["image_id"]]
        mask = _segmentation_mask(ann["segmentation"], h, w, where)
        area = float(ann["area"]) if isinstance(ann.get("area"), (int, float)) else float(mask.sum())
        gts.append(_Ann(ann_id, ann["image_id"], ann.get("category_id"), mask, area, int(bool(ann.get("iscrowd", 0)))))
    return images, gts, cat_ids


def _load_predictions(path: Path, images: Mapping[Any, tuple[int, int]]) -> list[_Ann]:
    data = read_json(path, "predictions file")
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of {{image_id, segmentation, score}} predictions")
    dts = []
    for n, pred in enumerate(data):
        where = f"{path}: [{n}]"
        if not isinstance(pred, dict) or not {"image_id", "segmentation", "score"} <= pred.keys():
            raise DatasetError(f"{where}: a prediction needs image_id, segmentation (COCO RLE) and score")
        if pred["image_id"] not in images:
            raise DatasetError(f"{where}: image_id {pred['image_id']!r} is not an image of the ground truth "
                               f"(pycocotools: 'Results do not correspond to current coco set')")
        if not isinstance(pred["segmentation"], Mapping):
            raise DatasetError(f"{where}: segmentation should be a COCO RLE {{'size': [H, W], 'counts': str}}")
        score = pred["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
            raise DatasetError(f"{where}: score should be a number, got {score!r}")
        mask = _segmentation_mask(pred["segmentation"], 0, 0, where)
        dts.append(_Ann(float(n + 1), pred["image_id"], pred.get("category_id", _ANY), mask, float(mask.sum()),
                        0, float(score)))
    return dts


class _AnyCategory:
    def __repr__(self) -> str:
        return "<first category>"


_ANY = _AnyCategory()


# ------------------------------------------------------------------------------- precision and IoU


def top1_iou_metrics(images: Mapping[Any, tuple[int, int]], gts: Sequence[_Ann], dts: Sequence[_Ann],
                     where: tuple[Path, Path] | None = None) -> dict[str, float]:
    """P@K, overall IoU and mean IoU of the top-scoring prediction of every GT image (MTTR's code)."""
    first_gt: dict[Any, _Ann] = {}
    for g in gts:
        first_gt.setdefault(g.image_id, g)
    best: dict[Any, _Ann] = {}
    for d in dts:  # sorted(..., key=score)[-1] is stable: among equal scores the last one listed wins
        if d.image_id not in best or d.score >= best[d.image_id].score:
            best[d.image_id] = d
    eps = np.float32(1e-6)
    counts = dict.fromkeys(PRECISION_KS, 0)
    total_i = total_u = 0.0
    ious = []
    for image_id in images:
        if image_id not in first_gt:
            raise DatasetError(f"{where[0] if where else 'ground truth'}: image {image_id!r} has no annotation; "
                               f"every A2D/JHMDB test image carries exactly one")
        if image_id not in best:
            raise DatasetError(f"{where[1] if where else 'predictions'}: no prediction for image {image_id!r}; "
                               f"predict every image of the ground truth")
        gt, pred = first_gt[image_id].mask, best[image_id].mask
        if gt.shape != pred.shape:
            raise DatasetError(f"{where[1] if where else 'predictions'}: prediction for image {image_id!r} is "
                               f"{pred.shape[0]}x{pred.shape[1]} but the ground truth is {gt.shape[0]}x{gt.shape[1]}")
        inter = np.float32(np.count_nonzero(gt & pred))
        union = np.float32(np.count_nonzero(gt | pred))
        iou = float((inter + eps) / (union + eps))  # float32 arithmetic, as torch in compute_mask_iou
        for k in PRECISION_KS:
            if iou > k:
                counts[k] += 1
        total_i += float(inter)
        total_u += float(union)
        ious.append(iou)
    out = {f"P@{k}": counts[k] / len(ious) for k in PRECISION_KS}
    out["overall_iou"] = total_i / total_u if total_u else float("nan")
    out["mean_iou"] = float(np.mean(ious))
    return out


# ------------------------------------------------------------------------------------------- COCO AP


def _summarize(precision: np.ndarray, iou_thr: float | None = None) -> float:
    s = precision
    if iou_thr is not None:
        s = s[np.where(iou_thr == IOU_THRS)[0]]
    valid = s[s > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def cocoeval_segm(images: Mapping[Any, tuple[int, int]], gts: Sequence[_Ann], dts: Sequence[_Ann],
                  cat_ids: Sequence[Any], area_rng: tuple[float, float] = AREA_ALL) -> dict[str, float]:
    """mAP@0.5:0.95, AP50 and AP75 of pycocotools' ``COCOeval(iouType='segm')`` with ``useCats = 0``, maxDets 100."""
    from pycocotools import mask as mask_api
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    shapes: dict[Any, set[tuple[int, ...]]] = {}
    for g in gts:
        shapes.setdefault(g.image_id, set()).add(g.mask.shape)
    for d in dts:
        for shape in shapes.get(d.image_id, ()):
            if d.mask.shape != shape:
                raise DatasetError(f"prediction for image {d.image_id!r} is {d.mask.shape[0]}x{d.mask.shape[1]} "
                                   f"but the ground truth is {shape[0]}x{shape[1]}")
    first_cat = cat_ids[0]

    def ann(a: _Ann, score: float | None = None) -> dict[str, Any]:
        out = {"id": a.id, "image_id": a.image_id, "area": a.area, "iscrowd": a.iscrowd,
               "category_id": first_cat if a.category_id is _ANY else a.category_id,
               "segmentation": mask_api.encode(np.asfortranarray(a.mask, dtype=np.uint8))}
        if score is not None:
            out["score"] = score
        return out

    head = {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in images.items()],
            "categories": [{"id": c} for c in cat_ids]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {**head, "annotations": [ann(g) for g in gts]}
        coco_dt.dataset = {**head, "annotations": [ann(d, d.score) for d in dts]}  # as COCO.loadRes
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.useCats = 0
        ev.params.areaRng, ev.params.areaRngLbl = [list(area_rng)], ["all"]
        ev.params.maxDets = [MAX_DETS]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, 0, 0, 0]  # (T, R): one "category", one area range, one maxDets
    return {"mAP": _summarize(precision), "AP50": _summarize(precision, 0.5), "AP75": _summarize(precision, 0.75)}
