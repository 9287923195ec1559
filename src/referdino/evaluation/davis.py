"""Ref-DAVIS17 evaluation: the DAVIS-2017 *unsupervised* protocol per annotator, then the mean of the 4.

Replicates davisvideochallenge/davis2017-evaluation (``davis.py`` / ``evaluation.py`` / ``results.py`` /
``utils.py``), which ReferDINO's ``eval/eval_davis.py`` calls (checked against it on random data:
``benchmarks/evaluators``):

Ground truth (``DAVISEvaluation(davis_root, task='unsupervised', gt_set='val')``):

- the sequences are the lines of ``<root>/ImageSets/2017/val.txt``;
- the frames of a sequence are the sorted ``<root>/Annotations_unsupervised/480p/<seq>/*.png`` label maps;
- label 255 is *void*: it becomes background and its pixels are left out of J (intersection and union)
  and of F (both masks are cleared there before their boundaries are taken), as in the current package
  (``get_all_masks`` returns the void masks); older copies only set 255 to background and score it;
- the number of GT objects is the **largest label of the first frame** (labels 1..K); objects that only
  appear later are not evaluated;
- every frame is evaluated (the first/last-frame exclusion ``[:, 1:-1]`` applies to the semi-supervised
  task only).

Predictions (``Results.read_masks``): ``<pred>/anno_<k>/<seq>/<frame>.png`` label maps (palette or grey,
0 = background, value i = object i), one per GT frame; the number of predicted objects is the largest
label over the sequence (at most 20); missing objects are padded with empty masks.

Per sequence, J and F of every (predicted, GT) object pair are taken per frame; the Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) maximises the pairs' (mean-J + mean-F) / 2; each GT object gets
its pair's per-frame values and the statistics of ``utils.db_statistics`` (mean, recall = fraction of
frames above 0.5, decay = mean of the first quarter minus mean of the last quarter). J-Mean and F-Mean
average over all GT objects of all sequences, J&F-Mean = (J + F) / 2; the final numbers average the 4
annotators (``eval_davis.py``: ``all_results.mean()``).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ..data.records import DatasetError
from ._common import GT_HINT, read_label_png
from .metrics import _disk, boundary_map, region_similarity

__all__ = ["evaluate_davis"]

VOID_LABEL = 255
MAX_PROPOSALS = 20
_STATS = ("J", "F", "J&F", "J-Recall", "J-Decay", "F-Recall", "F-Decay")


def evaluate_davis(pred_dir: str | Path, davis_root: str | Path, *, subset: str = "val", annotators: int = 4,
                   per_object: bool = False) -> dict[str, Any]:
    """J, F and J&F (fractions) of Ref-DAVIS17 label-map predictions, averaged over the annotators.

    ``pred_dir`` holds ``anno_0 .. anno_{annotators-1}/<seq>/<frame>.png`` (an ``Annotations/`` folder
    inside it is used when present); ``davis_root`` is the DAVIS-2017 folder with ``ImageSets/2017`` and
    ``Annotations_unsupervised/480p``.
    """
    root = _davis_root(Path(davis_root))
    sequences = _sequences(root, subset)
    gt_root = root / "Annotations_unsupervised" / "480p"
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise DatasetError(f"{pred_root}: prediction folder not found; pass the folder holding anno_0 .. anno_3")
    if not (pred_root / "anno_0").is_dir() and (pred_root / "Annotations" / "anno_0").is_dir():
        pred_root = pred_root / "Annotations"
    anno_dirs = [pred_root / f"anno_{k}" for k in range(annotators)]
    for d in anno_dirs:
        if not d.is_dir():
            raise DatasetError(f"{d}: missing annotator folder; "
                               f"write anno_0 .. anno_{annotators - 1}/<seq>/<frame>.png")

    per_annotator: list[dict[str, Any]] = [{"objects": []} for _ in anno_dirs]
    for seq in sequences:
        gt, void, frame_ids = _read_gt(gt_root, seq)
        for k, anno_dir in enumerate(anno_dirs):
            pred = _read_pred(anno_dir, seq, frame_ids, gt.shape[1:])
            per_annotator[k]["objects"].extend(_evaluate_sequence(seq, gt, void, pred))

    summaries = []
    for k, entry in enumerate(per_annotator):
        objects = entry["objects"]
        if not objects:
            raise DatasetError(f"{gt_root}: no GT object in the first frame of any sequence of {subset}; "
                               f"check the Annotations_unsupervised folder")
        summary = {"annotator": k, "objects": len(objects)}
        for name in ("J", "F"):
            summary[name] = float(np.mean([o[name] for o in objects]))
            summary[f"{name}-Recall"] = float(np.mean([o[f"{name}-Recall"] for o in objects]))
            summary[f"{name}-Decay"] = float(np.mean([o[f"{name}-Decay"] for o in objects]))
        summary["J&F"] = (summary["J"] + summary["F"]) / 2
        if per_object:
            summary["per_object"] = objects
        summaries.append(summary)
    result: dict[str, Any] = {key: float(np.mean([s[key] for s in summaries])) for key in _STATS}
    result["sequences"] = len(sequences)
    result["annotators"] = summaries
    return result


# ------------------------------------------------------------------------------------------ reading


def _davis_root(root: Path) -> Path:
    if not root.is_dir():
        raise DatasetError(f"{root}: DAVIS folder not found; pass the DAVIS-2017 folder with ImageSets/ and "
                           f"Annotations_unsupervised/ (e.g. data/ref_davis/DAVIS)")
    if not (root / "ImageSets").is_dir() and (root / "DAVIS" / "ImageSets").is_dir():
        root = root / "DAVIS"
    return root


def _sequences(root: Path, subset: str) -> list[str]:
    list_file = root / "ImageSets" / "2017" / f"{subset}.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: missing sequence list; download the DAVIS-2017 trainval ImageSets")
    annotations = root / "Annotations_unsupervised" / "480p"
    if not annotations.is_dir():
        raise DatasetError(f"{annotations}: missing ground truth; "
                           f"download DAVIS-2017 'Annotations_unsupervised' (480p)")
    sequences = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not sequences:
        raise DatasetError(f"{list_file}: empty sequence list; use the DAVIS-2017 {subset}.txt")
    return sequences


def _frame_id(path: Path) -> str:
    return "".join(path.name.split(".")[:-1])  # as davis.py: the name without its extension (dots dropped)


def _read_gt(gt_root: Path, seq: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    seq_dir = gt_root / seq
    files = sorted(seq_dir.glob("*.png")) if seq_dir.is_dir() else []
    if not files:
        raise DatasetError(f"{seq_dir}: no ground-truth label maps for sequence {seq!r}; {GT_HINT}")
    frames = [read_label_png(f, "ground-truth label map", GT_HINT) for f in files]
    if any(f.shape != frames[0].shape for f in frames):
        raise DatasetError(f"{seq_dir}: ground-truth label maps differ in size; {GT_HINT}")
    gt = np.stack(frames)  # native dtype (uint8 for palette PNGs): a 480p video stays small
    void = gt == VOID_LABEL
    gt[void] = 0
    return gt, void, [_frame_id(f) for f in files]


def _read_pred(anno_dir: Path, seq: str, frame_ids: list[str], size: tuple[int, ...]) -> np.ndarray:
    seq_dir = anno_dir / seq
    if not seq_dir.is_dir():
        raise DatasetError(f"{seq_dir}: missing predictions for sequence {seq!r}; write one label map per frame")
    frames = []
    for fid in frame_ids:
        path = seq_dir / f"{fid}.png"
        arr = read_label_png(path, "prediction label map")
        if arr.shape != tuple(size):
            raise DatasetError(f"{path}: prediction is {arr.shape[0]}x{arr.shape[1]} but the ground truth is "
                               f"{size[0]}x{size[1]}; save label maps at the 480p annotation size")
        frames.append(arr)
    pred = np.stack(frames)
    n = int(pred.max())
    if n > MAX_PROPOSALS:
        raise DatasetError(f"{seq_dir}: label {n} found but at most {MAX_PROPOSALS} objects are allowed "
                           f"(write object indices 1..K, 0 = background, not 0/255 masks)")
    return pred


# ------------------------------------------------------------------------------------------ metrics


def _boundary(mask: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray | None]:
    b = boundary_map(mask)
    return b, (ndimage.binary_dilation(b, structure=_disk(radius)) if b.any() else None)


def _f_measure(pb: np.ndarray, p_dil: np.ndarray | None, gb: np.ndarray, g_dil: np.ndarray | None) -> float:
    """``metrics.contour_accuracy`` on precomputed boundaries and dilations (same arithmetic)."""
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    precision = (pb & g_dil).sum() / n_p
    recall = (gb & p_dil).sum() / n_g
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _statistics(values: np.ndarray) -> tuple[float, float, float]:
    """``davis2017.utils.db_statistics``: mean, recall (> 0.5) and decay over the frames."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values)
        recall = np.nanmean(values > 0.5)
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
        bins = [values[ids[i]:ids[i + 1] + 1] for i in range(4)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


def _evaluate_sequence(seq: str, gt: np.ndarray, void: np.ndarray, pred: np.ndarray) -> list[dict[str, Any]]:
    n_gt = int(gt[0].max())
    n_pred = int(pred.max())
    n_rows = max(n_pred, n_gt)  # predictions padded with empty objects up to the GT count
    frames, height, width = gt.shape
    radius = int(math.ceil(0.008 * math.hypot(height, width)))  # as metrics.contour_accuracy
    if n_gt == 0:
        return []
    j_res = np.zeros((n_rows, n_gt, frames))
    f_res = np.zeros((n_rows, n_gt, frames))
    for t in range(frames):
        valid = ~void[t]
        gts = [(gt[t] == i + 1) & valid for i in range(n_gt)]
        preds = [(pred[t] == j + 1) & valid for j in range(n_rows)]  # labels > n_pred are empty
        gt_bounds = [_boundary(g, radius) for g in gts]
        pred_bounds = [_boundary(p, radius) for p in preds]
        for j, p in enumerate(preds):
            for i, g in enumerate(gts):
                j_res[j, i, t] = region_similarity(p, g)
                f_res[j, i, t] = _f_measure(*pred_bounds[j], *gt_bounds[i])
    all_metrics = (np.mean(j_res, axis=2) + np.mean(f_res, axis=2)) / 2
    rows, cols = linear_sum_assignment(-all_metrics)
    objects = []
    for row, col in zip(rows, cols):
        jm, jr, jd = _statistics(j_res[row, col])
        fm, fr, fd = _statistics(f_res[row, col])
        objects.append({"sequence": seq, "gt_object": int(col) + 1,
                        "pred_object": int(row) + 1 if row < n_pred else None,
                        "J": jm, "J-Recall": jr, "J-Decay": jd, "F": fm, "F-Recall": fr, "F-Decay": fd})
    return objects
