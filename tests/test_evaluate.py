"""Benchmark evaluators on tiny synthetic folders, with expected values worked out by hand.

Frames are 4x6 unless stated: the boundary tolerance is then ceil(0.008 * sqrt(4^2 + 6^2)) = 1 pixel (a
plus-shaped neighbourhood). Shapes used throughout (rows x cols):

- ``RECT3``: columns 0..2 (12 px). Its boundary is column 2 (4 px): inside pixels whose right neighbour
  is outside; the frame edge is no boundary.
- ``RECT4``: columns 0..3 (16 px), boundary column 3: every boundary pixel is 1 px from RECT3's, so
  F(RECT4, RECT3) = 1 while J = 12/16.
- ``STAIR``: columns 0..2 in rows 0-1 and 0..4 in rows 2-3 (16 px). Boundary {(0,2), (1,2), (1,3), (1,4),
  (2,4), (3,4)}; against RECT3 (boundary {(r,2)}): precision 3/6 ((0,2), (1,2), (1,3) are within 1 px),
  recall 3/4 ((3,2) has no STAIR boundary pixel within 1 px) -> F = 2 * .5 * .75 / 1.25 = 0.6; J = 12/16.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referdino.data import rle as rle_api
from referdino.data.records import DatasetError
from referdino.evaluation import a2d as a2d_mod
from referdino.evaluation.a2d import evaluate_a2d, poly_to_mask
from referdino.evaluation.cli import add_evaluate_arguments
from referdino.evaluation.davis import _boundary, _f_measure, evaluate_davis
from referdino.evaluation.mevis import evaluate_mevis
from referdino.evaluation.metrics import contour_accuracy

H, W = 4, 6


def _mask(cols: slice | None = None, rows: slice = slice(None)) -> np.ndarray:
    m = np.zeros((H, W), bool)
    if cols is not None:
        m[rows, cols] = True
    return m


RECT3 = _mask(slice(0, 3))
RECT4 = _mask(slice(0, 4))
RECT5 = _mask(slice(0, 5))
STAIR = _mask(slice(0, 3)) | _mask(slice(0, 5), slice(2, 4))
EMPTY = _mask()


def _png(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    if palette:
        img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255, 255, 255] * 252)
    img.save(path)


def _json(path: Path, data) -> Path:  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_hand_worked_shapes_match_the_frame_metrics():
    assert contour_accuracy(STAIR, RECT3) == pytest.approx(0.6, abs=1e-12)
    assert contour_accuracy(RECT4, RECT3) == 1.0
    assert contour_accuracy(RECT5, RECT3) == 0.0  # boundary 2 px away: no match at all


# ------------------------------------------------------------------------------------------- MeViS


def _mevis_gt(root: Path, videos: dict) -> Path:  # type: ignore[type-arg]
    """videos: {vid: {exp_id: [track per anno id]}}; a track is a list of masks or None per frame."""
    meta, masks, next_id = {"videos": {}}, {}, 1
    for vid, expressions in videos.items():
        entry = {"frames": ["00000", "00001"], "expressions": {}}
        for exp_id, tracks in expressions.items():
            ids = []
            for track in tracks:
                masks[str(next_id)] = [None if m is None else rle_api.encode(m) for m in track]
                ids.append(next_id)
                next_id += 1
            entry["expressions"][exp_id] = {"exp": f"expression {exp_id}", "obj_id": list(range(len(ids))),
                                            "anno_id": ids}
        meta["videos"][vid] = entry
    _json(root / "meta_expressions.json", meta)
    _json(root / "mask_dict.json", masks)
    return root


def _mevis_case(tmp_path: Path) -> tuple[Path, Path]:
    left, col2 = _mask(slice(0, 2)), _mask(slice(2, 3))
    gt = _mevis_gt(tmp_path / "valid_u", {"v1": {
        "0": [[left, None], [col2, RECT3]],   # union of two objects: RECT3 in both frames
        "1": [[None, None]],                  # no target at all
        "2": [[left, None]],
    }})
    pred = tmp_path / "pred"
    _png(pred / "v1/0/00000.png", STAIR * 255)   # J 0.75, F 0.6
    _png(pred / "v1/0/00001.png", RECT4 * 255)   # J 0.75, F 1
    _png(pred / "v1/1/00000.png", EMPTY)          # both empty: J = F = 1
    _png(pred / "v1/1/00001.png", EMPTY)
    _png(pred / "v1/2/00000.png", left * 1)       # a 0/1 PNG: any non-zero pixel is foreground -> 1, 1
    _png(pred / "v1/2/00001.png", RECT5 * 1)      # prediction on an empty target: J = F = 0
    return pred, gt


def test_mevis_hand_computed(tmp_path):
    pred, gt = _mevis_case(tmp_path)
    r = evaluate_mevis(pred, gt, per_expression=True)
    assert r["per_expression"]["v1/0"] == pytest.approx({"J": 0.75, "F": 0.8}, abs=1e-12)
    assert r["per_expression"]["v1/1"] == {"J": 1.0, "F": 1.0}
    assert r["per_expression"]["v1/2"] == {"J": 0.5, "F": 0.5}
    assert r["J"] == pytest.approx(0.75, abs=1e-12)
    assert r["F"] == pytest.approx(2.3 / 3, abs=1e-12)
    assert r["J&F"] == pytest.approx((0.75 + 2.3 / 3) / 2, abs=1e-12)
    assert r["expressions"] == 3 and r["missing_videos"] == []


def test_mevis_workers_give_the_same_numbers(tmp_path):
    pred, gt = _mevis_case(tmp_path)
    one = evaluate_mevis(pred, gt)
    two = evaluate_mevis(pred, gt, workers=2)
    assert two == one  # the same per-expression arithmetic, gathered in the same order


def test_mevis_missing_video_scores_zero_like_the_official_script(tmp_path):
    pred, gt = _mevis_case(tmp_path)
    meta = json.loads((gt / "meta_expressions.json").read_text())
    meta["videos"]["v2"] = {"frames": ["00000", "00001"], "expressions": {"0": {"exp": "x", "anno_id": [1]}}}
    _json(gt / "meta_expressions.json", meta)
    r = evaluate_mevis(pred, gt)
    assert r["missing_videos"] == ["v2"]
    assert r["J"] == pytest.approx((0.75 + 1 + 0.5 + 0) / 4, abs=1e-12)
    assert r["F"] == pytest.approx((0.8 + 1 + 0.5 + 0) / 4, abs=1e-12)
    with pytest.raises(DatasetError, match="v2"):
        evaluate_mevis(pred, gt, strict=True)


def test_ytvos_style_ground_truth(tmp_path):
    root = tmp_path / "ytvos"
    labels = np.zeros((H, W), np.uint8)
    labels[:, 0:3] = 1        # object 1 = RECT3
    labels[:, 5] = 2          # object 2 = last column
    for f in ("00000", "00005"):
        _png(root / "valid/Annotations/v/{}.png".format(f), labels, palette=True)
    _json(root / "meta_expressions/valid/meta_expressions.json", {"videos": {"v": {
        "frames": ["00000", "00005"],
        "expressions": {"0": {"exp": "a", "obj_id": "1"}, "1": {"exp": "b", "obj_id": ["1", "2"]}}}}})
    pred = tmp_path / "out" / "Annotations"  # a submission-style folder is found inside --pred
    for f in ("00000", "00005"):
        _png(pred / f"v/0/{f}.png", RECT4 * 255)
        _png(pred / f"v/1/{f}.png", RECT3 * 255)
    r = evaluate_mevis(tmp_path / "out", root / "valid", per_expression=True)
    assert r["per_expression"]["v/0"] == {"J": 0.75, "F": 1.0}
    # target RECT3 + column 5 (16 px), prediction RECT3: J = 12/16; boundaries: prediction column 2,
    # target columns 2 and 4 (column 4 is outside with an inside right neighbour) -> P = 1, R = 4/8
    assert r["per_expression"]["v/1"] == pytest.approx({"J": 0.75, "F": 2 * 0.5 / 1.5}, abs=1e-12)


def test_mevis_bad_inputs(tmp_path):
    pred, gt = _mevis_case(tmp_path)
    with pytest.raises(DatasetError, match="ground-truth folder not found"):
        evaluate_mevis(pred, tmp_path / "nope")
    with pytest.raises(DatasetError, match="prediction folder not found"):
        evaluate_mevis(tmp_path / "nope", gt)
    (pred / "v1/2/00001.png").unlink()
    with pytest.raises(DatasetError, match=r"00001\.png: missing prediction mask"):
        evaluate_mevis(pred, gt)
    _png(pred / "v1/2/00001.png", np.zeros((5, 6)))
    with pytest.raises(DatasetError, match="5x6 but the ground truth is 4x6"):
        evaluate_mevis(pred, gt)
    meta = (gt / "meta_expressions.json").read_text()
    (gt / "meta_expressions.json").write_text('{"videos": {"v1": ')
    with pytest.raises(DatasetError, match="meta_expressions.json: malformed"):
        evaluate_mevis(pred, gt)
    (gt / "meta_expressions.json").write_text("{}")
    with pytest.raises(DatasetError, match="meta_expressions.json: empty"):
        evaluate_mevis(pred, gt)
    (gt / "meta_expressions.json").write_text(meta)
    (gt / "mask_dict.json").write_text("")
    with pytest.raises(DatasetError, match="mask_dict.json: malformed"):
        evaluate_mevis(pred, gt)


# ------------------------------------------------------------------------------------------- DAVIS


def _davis_case(tmp_path: Path) -> tuple[Path, Path]:
    """One sequence, 3 frames. GT object 1 = columns 0-1; object 2 = columns 4-5 in frames 0-1, absent in
    frame 2; label 3 appears only in frame 1 (not evaluated: the object count is frame 0's largest label);
    void (255) at (0,2) and (1,2)."""
    root = tmp_path / "DAVIS"
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("seq\n")
    gts = []
    for t in range(3):
        lab = np.zeros((H, W), np.uint8)
        lab[:, 0:2] = 1
        if t < 2:
            lab[:, 4:6] = 2
        if t == 1:
            lab[3, 3] = 3
        lab[0:2, 2] = 255
        gts.append(lab)
        _png(root / f"Annotations_unsupervised/480p/seq/{t:05d}.png", lab, palette=True)
    obj1 = gts[0] == 1
    pred = tmp_path / "pred"
    for t, gt in enumerate(gts):
        obj2 = gt == 2
        swapped = np.zeros((H, W), np.uint8)             # anno_0: labels swapped, object 1 spills on void
        swapped[obj2] = 1
        swapped[obj1 | (gt == 255)] = 2
        extra = np.zeros((H, W), np.uint8)               # anno_2: a third, unmatched object is ignored
        extra[obj1] = 1
        extra[obj2] = 2
        extra[3, 2:4] = 3
        _png(pred / f"anno_0/seq/{t:05d}.png", swapped, palette=True)
        _png(pred / f"anno_1/seq/{t:05d}.png", np.zeros((H, W)), palette=True)  # nothing predicted
        _png(pred / f"anno_2/seq/{t:05d}.png", extra)                             # grey label map works too
        _png(pred / f"anno_3/seq/{t:05d}.png", swapped, palette=True)
    return pred, root


def test_davis_hand_computed(tmp_path):
    pred, root = _davis_case(tmp_path)
    r = evaluate_davis(pred, root, per_object=True)
    a0, a1, a2, a3 = r["annotators"]
    for a in (a0, a2, a3):  # perfect once assigned (void ignored, later-appearing object 3 not counted)
        assert (a["J"], a["F"], a["objects"]) == (1.0, 1.0, 2)
    assert [(o["gt_object"], o["pred_object"]) for o in a0["per_object"]] == [(2, 1), (1, 2)]
    # anno_1 (all background): object 1 J = F = [0, 0, 0]; object 2 [0, 0, 1] (both empty in the last frame,
    # which counts: no first/last-frame exclusion in the unsupervised task)
    assert a1["J"] == pytest.approx(1 / 6, abs=1e-12) and a1["F"] == pytest.approx(1 / 6, abs=1e-12)
    assert a1["J-Recall"] == pytest.approx(1 / 6, abs=1e-12)
    # decay bins: round(linspace(1, 3, 5) + 1e-10) - 1 = [0, 1, 1, 2, 2] -> frames [0, 1], [1], [1, 2], [2];
    # object 2: mean(J[0:2]) - mean(J[2:3]) = 0 - 1
    assert a1["J-Decay"] == pytest.approx(-0.5, abs=1e-12)
    assert r["J"] == pytest.approx((3 + 1 / 6) / 4, abs=1e-12)
    assert r["F"] == pytest.approx((3 + 1 / 6) / 4, abs=1e-12)
    assert r["J&F"] == pytest.approx((3 + 1 / 6) / 4, abs=1e-12)
    assert r["J-Decay"] == pytest.approx(-0.5 / 4, abs=1e-12)


def test_davis_f_on_precomputed_boundaries_equals_contour_accuracy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random((30, 40)) < rng.uniform(0.0, 0.6)
        b = np.roll(a, rng.integers(-3, 4), axis=1) if rng.random() < 0.5 else rng.random((30, 40)) < 0.3
        radius = int(np.ceil(0.008 * np.hypot(30, 40)))
        assert _f_measure(*_boundary(a, radius), *_boundary(b, radius)) == contour_accuracy(a, b)


def test_davis_bad_inputs(tmp_path):
    pred, root = _davis_case(tmp_path)
    with pytest.raises(DatasetError, match="DAVIS folder not found"):
        evaluate_davis(pred, tmp_path / "nope")
    (pred / "anno_3/seq/00002.png").unlink()
    with pytest.raises(DatasetError, match=r"anno_3/seq/00002\.png: missing prediction label map"):
        evaluate_davis(pred, root)
    _png(pred / "anno_3/seq/00002.png", np.full((H, W), 255))  # a 0/255 mask is not a label map
    with pytest.raises(DatasetError, match="at most 20 objects"):
        evaluate_davis(pred, root)
    Image.new("RGB", (W, H)).save(pred / "anno_3/seq/00002.png")
    with pytest.raises(DatasetError, match="single-channel label map"):
        evaluate_davis(pred, root)
    _png(pred / "anno_3/seq/00002.png", np.zeros((H, W)))
    evaluate_davis(pred, root)  # valid again
    (pred / "anno_2").rename(pred / "moved")
    with pytest.raises(DatasetError, match="anno_2: missing annotator folder"):
        evaluate_davis(pred, root)
    (pred / "moved").rename(pred / "anno_2")
    (root / "Annotations_unsupervised").rename(root / "moved")
    with pytest.raises(DatasetError, match="480p: missing ground truth"):
        evaluate_davis(pred, root)
    (root / "moved").rename(root / "Annotations_unsupervised")
    (root / "ImageSets/2017/val.txt").write_text("seq\nother\n")
    with pytest.raises(DatasetError, match="other: no ground-truth label maps"):
        evaluate_davis(pred, root)
    (root / "ImageSets/2017/val.txt").write_text("\n")
    with pytest.raises(DatasetError, match="empty sequence list"):
        evaluate_davis(pred, root)
    (root / "ImageSets/2017/val.txt").unlink()
    with pytest.raises(DatasetError, match="val.txt: missing sequence list"):
        evaluate_davis(pred, root)


# --------------------------------------------------------------------------------------------- A2D


def _rle(mask: np.ndarray) -> dict:  # type: ignore[type-arg]
    return rle_api.encode(mask)


def _box(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[rows, cols] = True
    return m


def _a2d_case(tmp_path: Path) -> tuple[Path, Path]:
    """Images a, b (4x5), c (40x50), d (2x2), one GT each (b as a polygon: the 3x3 box at the origin)."""
    gt_a = _box(4, 5, slice(0, 2), slice(0, 2))
    gt_c = _box(40, 50, slice(0, 20), slice(None))          # 1000 px
    gt_d = _box(2, 2, slice(0, 1), slice(None))             # 2 px
    gt = {
        "images": [{"id": i, "height": h, "width": w} for i, h, w in
                   [("a", 4, 5), ("b", 4, 5), ("c", 40, 50), ("d", 2, 2)]],
        "categories": [{"id": 1, "name": "dummy_class"}],
        "annotations": [
            {"id": 1, "image_id": "a", "category_id": 1, "segmentation": _rle(gt_a), "area": 4.0, "iscrowd": 0},
            {"id": 2, "image_id": "b", "category_id": 1, "segmentation": [[0, 0, 0, 3, 3, 3, 3, 0]],
             "area": 9.0, "iscrowd": 0},
            {"id": 3, "image_id": "c", "category_id": 1, "segmentation": _rle(gt_c), "area": 1000.0, "iscrowd": 0},
            {"id": 4, "image_id": "d", "category_id": 1, "segmentation": _rle(gt_d), "area": 2.0, "iscrowd": 0},
        ],
    }
    preds = [
        {"image_id": "a", "category_id": 1, "score": 0.9, "segmentation": _rle(gt_a)},                   # IoU 1
        {"image_id": "a", "category_id": 1, "score": 0.3, "segmentation": _rle(_box(4, 5, slice(2, 4), slice(3, 5)))},
        {"image_id": "b", "category_id": 1, "score": 0.8, "segmentation": _rle(_box(4, 5, slice(0, 2), slice(0, 3)))},
        {"image_id": "b", "category_id": 1, "score": 0.8, "segmentation": _rle(_box(4, 5, slice(0, 1), slice(0, 3)))},
        {"image_id": "c", "category_id": 1, "score": 0.7,
         "segmentation": _rle(_box(40, 50, slice(0, 10), slice(None)))},
        {"image_id": "d", "category_id": 1, "score": 0.6, "segmentation": _rle(_box(2, 2, slice(0, 1), slice(0, 1)))},
    ]
    return _json(tmp_path / "pred.json", preds), _json(tmp_path / "gt.json", gt)


def test_polygon_rasterisation_as_pycocotools():
    # a box [x, y, w, h] = [1, 1, 2, 2] covers exactly the 2x2 pixels at rows/cols 1-2 (COCO area = w * h)
    box = poly_to_mask([1, 1, 1, 3, 3, 3, 3, 1], 5, 5)
    assert box.sum() == 4 and box[1:3, 1:3].all()
    assert poly_to_mask([0, 0, 0, 3, 3, 3, 3, 0], 4, 5)[0:3, 0:3].all()
    assert poly_to_mask([-2, -2, 10, -2, 10, 10, -2, 10], 4, 4).all()  # clipped to the image


def test_a2d_hand_computed(tmp_path):
    pred, gt = _a2d_case(tmp_path)
    r = evaluate_a2d(pred, gt)
    # top-1: a IoU 1; b tie at 0.8 -> the later prediction (row 0: 3/9); c I=500, U=1000 -> float32 IoU
    # exactly 0.5, not above 0.5 (float64 (500+1e-6)/(1000+1e-6) would be); d I=1, U=2 -> 0.5000002 > 0.5
    assert r["P@0.5"] == 0.5
    assert r["P@0.6"] == r["P@0.7"] == r["P@0.8"] == r["P@0.9"] == 0.25
    assert r["overall_iou"] == pytest.approx(508 / 1015, abs=1e-12)
    assert r["mean_iou"] == pytest.approx((1 + 1 / 3 + 0.5 + 0.5) / 4, abs=1e-6)
    # COCO AP (IoU >= t): by score pA1 .9 (IoU 1), pB1 .8 (2/3), pB2 .8 (1/3), pC .7 (.5), pD .6 (.5), pA2 .3 (0)
    # t=.5: TP TP FP TP TP FP -> interpolated precision 1 up to recall .5, .8 above: (51 + 50 * .8) / 101
    # t=.55-.65: TP TP then FPs -> 1 up to recall .5: 51/101; t>=.7: 1 up to recall .25: 26/101
    assert r["AP50"] == pytest.approx(91 / 101, abs=1e-12)
    assert r["AP75"] == pytest.approx(26 / 101, abs=1e-12)
    assert r["mAP"] == pytest.approx((91 + 3 * 51 + 6 * 26) / 1010, abs=1e-12)
    assert (r["images"], r["predictions"]) == (4, 6)


def _coco_ap(tmp_path: Path, gts: list, preds: list, h: int = 4, w: int = 5) -> dict:  # type: ignore[type-arg]
    gt = {"images": [{"id": 7, "height": h, "width": w}], "categories": [{"id": 1}],
          "annotations": [{"image_id": 7, "category_id": 1, "iscrowd": 0, **g} for g in gts]}
    preds = [{"image_id": 7, "category_id": 1, **p} for p in preds]
    return evaluate_a2d(_json(tmp_path / "p.json", preds), _json(tmp_path / "g.json", gt))


def test_coco_ap_crowd_ground_truth_is_ignored(tmp_path):
    left, right = _box(4, 5, slice(None), slice(0, 2)), _box(4, 5, slice(None), slice(3, 5))
    gts = [{"id": 1, "segmentation": _rle(left)}, {"id": 2, "segmentation": _rle(right), "iscrowd": 1}]
    # the top-scoring detection lies inside the crowd region (IoU = I / area(dt) = 1): ignored, not a FP
    inside = _box(4, 5, slice(0, 2), slice(3, 5))
    preds = [{"score": 0.9, "segmentation": _rle(inside)}, {"score": 0.5, "segmentation": _rle(left)}]
    r = _coco_ap(tmp_path, gts, preds)
    assert r["mAP"] == pytest.approx(1.0, abs=1e-12)  # precision tp / (tp + fp + eps): 1 - 2e-16 as pycocotools
    gts[1]["iscrowd"] = 0  # as a regular GT: IoU 4/8, a TP at t = .5 only (>= .5), else a FP ahead of the TP
    r = _coco_ap(tmp_path, gts, preds)
    assert r["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert r["AP75"] == pytest.approx(51 * 0.5 / 101, abs=1e-12)  # precision 1/2 up to recall 1/2, then 0
    assert r["mAP"] == pytest.approx((101 + 9 * 25.5) / 1010, abs=1e-12)


def test_coco_ap_quirks(tmp_path):
    gt_mask = _box(4, 5, slice(0, 2), slice(0, 2))
    # a GT with id 0 is stored as a 0 match, which pycocotools then counts as a false positive
    r = _coco_ap(tmp_path, [{"id": 0, "segmentation": _rle(gt_mask)}], [{"score": 1.0, "segmentation": _rle(gt_mask)}])
    assert r["mAP"] == 0.0 and r["P@0.9"] == 1.0
    # only the 100 best-scoring detections of an image count: a TP ranked 101st is dropped
    wrong = _rle(_box(4, 5, slice(3, 4), slice(4, 5)))
    preds = [{"score": 0.9, "segmentation": wrong} for _ in range(100)]
    preds.append({"score": 0.1, "segmentation": _rle(gt_mask)})
    assert _coco_ap(tmp_path, [{"id": 1, "segmentation": _rle(gt_mask)}], preds)["mAP"] == 0.0
    preds = preds[1:]  # 99 wrong + the TP at rank 100: recall 1 at precision 1/100
    r = _coco_ap(tmp_path, [{"id": 1, "segmentation": _rle(gt_mask)}], preds)
    assert r["mAP"] == pytest.approx(0.01, abs=1e-12)


def test_a2d_bad_inputs(tmp_path):
    pred, gt = _a2d_case(tmp_path)
    preds = json.loads(pred.read_text())
    _json(tmp_path / "bad.json", [])
    with pytest.raises(DatasetError, match="bad.json: empty predictions file"):
        evaluate_a2d(tmp_path / "bad.json", gt)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DatasetError, match="bad.json: malformed predictions file"):
        evaluate_a2d(tmp_path / "bad.json", gt)
    _json(tmp_path / "bad.json", preds + [{**preds[0], "image_id": "zzz"}])
    with pytest.raises(DatasetError, match="'zzz' is not an image of the ground truth"):
        evaluate_a2d(tmp_path / "bad.json", gt)
    _json(tmp_path / "bad.json", [p for p in preds if p["image_id"] != "d"])
    with pytest.raises(DatasetError, match="no prediction for image 'd'"):
        evaluate_a2d(tmp_path / "bad.json", gt)
    _json(tmp_path / "bad.json", [{k: v for k, v in p.items() if k != "score"} for p in preds])
    with pytest.raises(DatasetError, match="needs image_id, segmentation"):
        evaluate_a2d(tmp_path / "bad.json", gt)
    with pytest.raises(DatasetError, match="missing COCO-format ground truth"):
        evaluate_a2d(pred, tmp_path / "nope.json")
    _json(tmp_path / "gt_bad.json", {"images": [], "annotations": []})
    with pytest.raises(DatasetError, match="non-empty 'images'"):
        evaluate_a2d(pred, tmp_path / "gt_bad.json")


# --------------------------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="referdino")
    add_evaluate_arguments(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_json_and_never_a_partial_file(tmp_path, capsys):
    pred, gt = _a2d_case(tmp_path)
    out = tmp_path / "res" / "a2d.json"
    args = _parse(["evaluate", "a2d", "--pred", str(pred), "--gt", str(gt), "--json", str(out)])
    assert args.func(args) == 0
    assert json.loads(out.read_text())["P@0.5"] == 0.5
    assert "P@0.5" in capsys.readouterr().out
    out.unlink()
    _json(pred, [])
    args = _parse(["evaluate", "a2d", "--pred", str(pred), "--gt", str(gt), "--json", str(out)])
    with pytest.raises(DatasetError):
        args.func(args)
    assert not out.exists() and not list(out.parent.iterdir())

    mpred, mgt = _mevis_case(tmp_path / "m")
    args = _parse(["evaluate", "mevis", "--pred", str(mpred), "--gt", str(mgt), "--json", str(tmp_path / "m.json")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "m.json").read_text())["J"] == pytest.approx(0.75)
    dpred, droot = _davis_case(tmp_path / "d")
    args = _parse(["evaluate", "davis", "--pred", str(dpred), "--davis-root", str(droot),
                   "--json", str(tmp_path / "d.json")])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "d.json").read_text())["J&F"] == pytest.approx((3 + 1 / 6) / 4)


def test_a2d_module_exports():
    assert {"evaluate_a2d", "cocoeval_segm", "top1_iou_metrics", "poly_to_mask"} <= set(a2d_mod.__all__)
