"""Compare `referdino evaluate mevis` with the logic of MeViS eval_mevis.py (davis2017 metrics, pycocotools RLE)."""
import json, sys, tempfile, numpy as np, cv2
from pathlib import Path
from PIL import Image
from pycocotools import mask as cocomask

from davis2017.metrics import db_eval_iou, db_eval_boundary
from referdino.evaluation.mevis import evaluate_mevis
import random_masks
from random_masks import rle
rng = np.random.default_rng(2)
def blob(h, w):
    return random_masks.blob(rng, h, w, 0.3, (2, 8), (0.2, 0.45))
worst = 0.0
for trial in range(8):
    with tempfile.TemporaryDirectory() as d:
        gt_dir, pred_dir = Path(d) / "gt", Path(d) / "pred"; gt_dir.mkdir(); pred_dir.mkdir()
        videos, mask_dict, anno = {}, {}, 0
        for v in range(int(rng.integers(2, 6))):
            h, w = int(rng.integers(30, 90)), int(rng.integers(30, 120)); T = int(rng.integers(2, 7))
            frames = [f"{5 * t:05d}" for t in range(T)]
            objs = {}
            for o in range(int(rng.integers(1, 4))):
                objs[o] = anno; mask_dict[str(anno)] = [rle(blob(h, w)) if rng.random() < 0.8 else None for _ in frames]; anno += 1
            exps = {}
            for e in range(int(rng.integers(1, 4))):
                ids = sorted(rng.choice(list(objs), size=int(rng.integers(1, len(objs) + 1)), replace=False).tolist())
                exps[str(e)] = {"exp": f"expression {e}", "obj_id": ids, "anno_id": [objs[i] for i in ids]}
                for fr in frames:
                    p = pred_dir / f"v{v}" / str(e) / f"{fr}.png"; p.parent.mkdir(parents=True, exist_ok=True)
                    m = blob(h, w)
                    Image.fromarray((m * rng.choice([1, 255])).astype(np.uint8)).save(p)
            videos[f"v{v}"] = {"expressions": exps, "frames": frames}
        (gt_dir / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
        (gt_dir / "mask_dict.json").write_text(json.dumps(mask_dict))
        # official logic (eval_mevis.py, single process)
        js, fs = [], []
        for vid_name, vid in videos.items():
            for exp, e in vid["expressions"].items():
                pred_0 = cv2.imread(f"{pred_dir}/{vid_name}/{exp}/00000.png", cv2.IMREAD_GRAYSCALE); h, w = pred_0.shape
                gt_masks = np.zeros((len(vid["frames"]), h, w), np.uint8); pred_masks = np.zeros_like(gt_masks)
                for fi, fname in enumerate(vid["frames"]):
                    for a in e["anno_id"]:
                        r = mask_dict[str(a)][fi]
                        if r: gt_masks[fi] += cocomask.decode(r)
                    pred_masks[fi] = cv2.imread(f"{pred_dir}/{vid_name}/{exp}/{fname}.png", cv2.IMREAD_GRAYSCALE)
                js.append(db_eval_iou(gt_masks, pred_masks).mean()); fs.append(db_eval_boundary(gt_masks, pred_masks).mean())
        ref = {"J": np.mean(js), "F": np.mean(fs), "J&F": (np.mean(js) + np.mean(fs)) / 2}
        ours = evaluate_mevis(pred_dir, gt_dir)
        for k in ref: worst = max(worst, abs(ref[k] - ours[k]))
print(f"8 random MeViS-layout sets (multi-object expressions, absent objects, 0/1 and 0/255 PNGs): max |ours - eval_mevis| over J, F, J&F = {worst:.2e}")
