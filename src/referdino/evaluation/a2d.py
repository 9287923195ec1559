"""A2D-Sentences / JHMDB-Sentences evaluation: P@0.5..0.9, overall and mean IoU, COCO segm mAP.

Two parts, each replicating the official code (ReferDINO ``trainer.py:evaluate_a2d_sentences``, from MTTR):

**Precision@K and IoU** (``util/metrics.py:calculate_precision_at_k_and_iou_metrics``). For every image of
the ground truth (in file order) the first GT annotation of the image is the target and the prediction
with the highest score is taken (``sorted(preds, key=score)[-1]``: on a tie, the one listed last). With
``I`` and ``U`` the pixel counts of intersection and union as float32, ``IoU = (I + 1e-6) / (U + 1e-6)``
in float32 (``compute_mask_iou``), so two empty masks give 1 and IoU = 0.5 of a 1-pixel intersection
over a 2-pixel union comes out just above 0.5. P@K = fraction of images with IoU **strictly above** K;
overall IoU = sum I / sum U; mean IoU = mean of the float32 IoUs.

**mAP** (pycocotools ``COCOeval(gt, gt.loadRes(preds), iouType='segm')`` with ``params.useCats = 0``),
re-implemented in numpy following ``cocoeval.py`` and ``maskApi.c`` of cocodataset/cocoapi:

- ``COCO.loadRes``: every prediction must name a GT image; it gets ``id = index + 1``, ``iscrowd = 0``
  and its mask area. ``COCOeval.__init__``/``evaluate``: ``imgIds = sorted(unique(GT image ids))``,
  ``catIds = sorted(GT category ids)``; with ``useCats = 0`` the annotations of an image are those of all
  ``catIds`` (concatenated in ``catIds`` order, file order within a category; anything with another
  category id is left out). ``_prepare``: polygons are rasterised with ``rleFrPoly`` (a 4-number
  "polygon" is a box, as ``frPyObjects``), ``ignore = iscrowd``.
- ``computeIoU``: detections sorted by score (stable mergesort, descending) and cut to ``maxDets[-1] =
  100``; ``maskUtils.iou``: intersection / union, 0 when they do not intersect, and intersection /
  area(detection) for a crowd GT.
- ``evaluateImg`` (area range "all" = [0, 1e10], maxDet 100): GTs sorted non-ignored first; for each IoU
  threshold t in ``linspace(.5, .95, 10)`` and each detection in score order, the greedy match is the
  not-yet-matched (or crowd) GT with the highest IoU >= min(t, 1 - 1e-10) (on equal IoU the later GT),
  never moving from a regular GT to an ignored one; a detection matched to an ignored GT is ignored.
  ``dtMatches`` stores the GT *id*, and later code tests it for truth, so a GT with id 0 counts as a miss
  (as in pycocotools).
- ``accumulate``: all detections of all images (images in ``imgIds`` order, images with neither GT nor
  detection skipped) sorted by score (stable mergesort), cumulative TP/FP, recall = TP / #non-ignored
  GT, precision = TP / (TP + FP + eps) made monotone from the right, sampled at the 101 recall
  thresholds ``linspace(0, 1, 101)`` with ``searchsorted(side='left')`` (0 beyond the last recall);
  no non-ignored GT at all -> -1.
- ``summarize``: mAP = mean of the precision table over the 10 thresholds and 101 recall points (entries
  > -1; -1 if none), AP50 / AP75 the same at ``iouThrs == .5`` / ``== .75``.

Deviation: a prediction without ``category_id`` counts as the first GT category (pycocotools raises
``KeyError``); MTTR/ReferDINO write ``category_id: 1`` and a single category ``{"id": 1}``.
"""

from __future__ import annotations

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
    """pycocotools ``rleFrPoly`` (maskApi.c) for one polygon ``[x0, y0, x1, y1, ...]``, decoded."""
    h, w = int(height), int(width)
    k = len(xy) // 2
    scale = 5.0
    x = [int(scale * float(xy[2 * j]) + 0.5) for j in range(k)]  # C (int) cast truncates toward zero
    y = [int(scale * float(xy[2 * j + 1]) + 0.5) for j in range(k)]
    x.append(x[0])
    y.append(y[0])
    u: list[int] = []
    v: list[int] = []
    for j in range(k):
        xs, xe, ys, ye = x[j], x[j + 1], y[j], y[j + 1]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            s = (ye - ys) / dx if dx else 0.0
            for d in range(dx + 1):
                t = dx - d if flip else d
                u.append(t + xs)
                v.append(int(ys + s * t + 0.5))
        else:
            s = (xe - xs) / dy
            for d in range(dy + 1):
                t = dy - d if flip else d
                v.append(t + ys)
                u.append(int(xs + s * t + 0.5))
    # points along the y-boundary, downsampled
    bx: list[int] = []
    by: list[int] = []
    for j in range(1, len(u)):
        if u[j] == u[j - 1]:
            continue
        xd = float(u[j] if u[j] < u[j - 1] else u[j] - 1)
        xd = (xd + 0.5) / scale - 0.5
        if math.floor(xd) != xd or xd < 0 or xd > w - 1:
            continue
        yd = float(v[j] if v[j] < v[j - 1] else v[j - 1])
        yd = (yd + 0.5) / scale - 0.5
        yd = 0.0 if yd < 0 else (float(h) if yd > h else yd)
        bx.append(int(xd))
        by.append(int(math.ceil(yd)))
    a = sorted([xx * h + yy for xx, yy in zip(bx, by)] + [h * w])
    prev = 0
    for j in range(len(a)):
        a[j], prev = a[j] - prev, a[j]
    counts = [a[0]]
    j = 1
    while j < len(a):
        if a[j] > 0:
            counts.append(a[j])
            j += 1
        else:
            j += 1
            if j < len(a):
                counts[-1] += a[j]
                j += 1
    return rle_api.decode({"size": [h, w], "counts": counts})


def _segmentation_mask(seg: Any, height: int, width: int, where: str) -> np.ndarray:
    """``COCO.annToRLE`` + decode: polygons (or 4-number boxes) merged, uncompressed or compressed RLE."""
    try:
        if isinstance(seg, list):
            if not seg or not all(isinstance(p, list) for p in seg):
                raise ValueError("a polygon segmentation is a non-empty list of coordinate lists")
            mask = np.zeros((int(height), int(width)), dtype=bool)
            is_box = len(seg[0]) == 4  # frPyObjects looks at the first entry only
            for p in seg:
                if is_box:
                    xs, ys, bw, bh = (float(c) for c in p)
                    p = [xs, ys, xs, ys + bh, xs + bw, ys + bh, xs + bw, ys]
                mask |= poly_to_mask(p, height, width)
            return mask
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


def _mask_ious(dts: Sequence[_Ann], gts: Sequence[_Ann]) -> np.ndarray:
    """``maskUtils.iou(d, g, iscrowd)``: (D, G) intersection over union (over the detection area for crowds)."""
    out = np.zeros((len(dts), len(gts)))
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            if d.mask.shape != g.mask.shape:
                raise DatasetError(f"prediction for image {d.image_id!r} is {d.mask.shape[0]}x{d.mask.shape[1]} "
                                   f"but the ground truth is {g.mask.shape[0]}x{g.mask.shape[1]}")
            inter = np.count_nonzero(d.mask & g.mask)
            if inter == 0:
                continue
            union = np.count_nonzero(d.mask) if g.iscrowd else np.count_nonzero(d.mask | g.mask)
            out[i, j] = inter / union
    return out


def _evaluate_image(gt: list[_Ann], dt: list[_Ann], area_rng: tuple[float, float]) -> dict[str, Any] | None:
    """``COCOeval.computeIoU`` + ``COCOeval.evaluateImg`` for one image (categories ignored)."""
    if not gt and not dt:
        return None
    dt = [dt[i] for i in np.argsort([-d.score for d in dt], kind="mergesort")][:MAX_DETS]
    ious = _mask_ious(dt, gt) if gt and dt else np.zeros((0, 0))
    g_ignore = [1 if (g.iscrowd or g.area < area_rng[0] or g.area > area_rng[1]) else 0 for g in gt]
    gtind = np.argsort(g_ignore, kind="mergesort")
    gt = [gt[i] for i in gtind]
    gt_ig = np.array([g_ignore[i] for i in gtind])
    if ious.size:
        ious = ious[:, gtind]
    n_t, n_g, n_d = len(IOU_THRS), len(gt), len(dt)
    gtm = np.zeros((n_t, n_g))
    dtm = np.zeros((n_t, n_d))
    dt_ig = np.zeros((n_t, n_d))
    if ious.size:
        for tind, t in enumerate(IOU_THRS):
            for dind, d in enumerate(dt):
                iou = min([t, 1 - 1e-10])
                m = -1
                for gind, g in enumerate(gt):
                    if gtm[tind, gind] > 0 and not g.iscrowd:
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gind] == 1:
                        break
                    if ious[dind, gind] < iou:
                        continue
                    iou = ious[dind, gind]
                    m = gind
                if m == -1:
                    continue
                dt_ig[tind, dind] = gt_ig[m]
                dtm[tind, dind] = gt[m].id
                gtm[tind, m] = d.id
    outside = np.array([d.area < area_rng[0] or d.area > area_rng[1] for d in dt]).reshape((1, n_d))
    dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(outside, n_t, 0)))
    return {"dtMatches": dtm, "dtScores": [d.score for d in dt], "gtIgnore": gt_ig, "dtIgnore": dt_ig}


def _accumulate(evals: list[dict[str, Any] | None]) -> np.ndarray:
    """``COCOeval.accumulate`` for one category/area/maxDet: the (T, R) precision table (-1: no GT)."""
    precision = -np.ones((len(IOU_THRS), len(REC_THRS)))
    e_list = [e for e in evals if e is not None]
    if not e_list:
        return precision
    dt_scores = np.concatenate([e["dtScores"][0:MAX_DETS] for e in e_list])
    inds = np.argsort(-dt_scores, kind="mergesort")
    dtm = np.concatenate([e["dtMatches"][:, 0:MAX_DETS] for e in e_list], axis=1)[:, inds]
    dt_ig = np.concatenate([e["dtIgnore"][:, 0:MAX_DETS] for e in e_list], axis=1)[:, inds]
    gt_ig = np.concatenate([e["gtIgnore"] for e in e_list])
    npig = np.count_nonzero(gt_ig == 0)
    if npig == 0:
        return precision
    tps = np.logical_and(dtm, np.logical_not(dt_ig))
    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
        nd = len(tp)
        rc = tp / npig
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        q = [0.0] * len(REC_THRS)
        for i in range(nd - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        for ri, pi in enumerate(np.searchsorted(rc, REC_THRS, side="left")):
            if pi >= nd:
                break  # pycocotools: IndexError caught, the rest stays 0
            q[ri] = pr[pi]
        precision[t] = q
    return precision


def _summarize(precision: np.ndarray, iou_thr: float | None = None) -> float:
    s = precision
    if iou_thr is not None:
        s = s[np.where(iou_thr == IOU_THRS)[0]]
    valid = s[s > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def cocoeval_segm(images: Mapping[Any, tuple[int, int]], gts: Sequence[_Ann], dts: Sequence[_Ann],
                  cat_ids: Sequence[Any], area_rng: tuple[float, float] = AREA_ALL) -> dict[str, float]:
    """mAP@0.5:0.95, AP50 and AP75 of ``COCOeval(iouType='segm')`` with ``useCats = 0``, maxDets 100."""
    img_ids = sorted(set(images))
    first_cat = cat_ids[0]
    by_image_gt: dict[Any, dict[Any, list[_Ann]]] = {}
    by_image_dt: dict[Any, dict[Any, list[_Ann]]] = {}
    for g in gts:
        by_image_gt.setdefault(g.image_id, {}).setdefault(g.category_id, []).append(g)
    for d in dts:
        cat = first_cat if d.category_id is _ANY else d.category_id
        by_image_dt.setdefault(d.image_id, {}).setdefault(cat, []).append(d)
    evals = []
    for img in img_ids:
        gt = [g for c in cat_ids for g in by_image_gt.get(img, {}).get(c, [])]
        dt = [d for c in cat_ids for d in by_image_dt.get(img, {}).get(c, [])]
        evals.append(_evaluate_image(gt, dt, area_rng))
    precision = _accumulate(evals)
    return {"mAP": _summarize(precision), "AP50": _summarize(precision, 0.5), "AP75": _summarize(precision, 0.75)}
