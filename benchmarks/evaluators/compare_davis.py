"""Compare `referdino evaluate davis` with the davis2017-evaluation unsupervised protocol (void-aware version:
get_all_masks returns masks_void; evaluation passes it to db_eval_iou/db_eval_boundary), 4 annotators averaged."""
import sys, tempfile, warnings, numpy as np
from pathlib import Path
from PIL import Image
from scipy.optimize import linear_sum_assignment

from davis2017 import metrics as off
from referdino.evaluation.davis import evaluate_davis
import random_masks
warnings.filterwarnings("ignore")
rng = np.random.default_rng(3)

def iou_void(gt, seg, void):
    inters = np.sum((seg & gt) & ~void, axis=(-2, -1)); union = np.sum((seg | gt) & ~void, axis=(-2, -1))
    j = inters / union; j[np.isclose(union, 0)] = 1; return j
def boundary_void(gt, seg, void):
    return np.array([off.f_measure(seg[t] * ~void[t], gt[t] * ~void[t]) for t in range(gt.shape[0])])
def db_statistics(v):
    M = np.nanmean(v); O = np.nanmean(v > 0.5)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.uint8)
    D_bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return M, O, np.nanmean(D_bins[0]) - np.nanmean(D_bins[3])
def labelmap(h, w, k):
    lab = np.zeros((h, w), np.uint8)
    for i in range(1, k + 1):
        lab[random_masks.blob(rng, h, w, 0.2, (2, 6), (0.2, 0.4))] = i
    return lab
worst = 0.0
for trial in range(5):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "DAVIS"; (root / "ImageSets" / "2017").mkdir(parents=True)
        seqs = [f"s{i}" for i in range(int(rng.integers(1, 4)))]
        (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(seqs) + "\n")
        pred = Path(d) / "pred"
        per_anno = {k: {"J": [], "F": []} for k in range(4)}
        for s in seqs:
            h, w, T, K = int(rng.integers(20, 60)), int(rng.integers(20, 80)), int(rng.integers(3, 9)), int(rng.integers(1, 4))
            gts = []
            for t in range(T):
                lab = labelmap(h, w, K); lab[0, :K] = np.arange(1, K + 1)  # every object in frame 0
                if rng.random() < 0.5: lab[rng.random((h, w)) < 0.05] = 255  # void pixels
                gts.append(lab); p = root / "Annotations_unsupervised" / "480p" / s / f"{t:05d}.png"; p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(lab).save(p)
            gt = np.stack(gts).astype(float); void = gt == 255; gt[void] = 0
            gt_obj = np.stack([gt == i for i in range(1, int(gt[0].max()) + 1)])
            for k in range(4):
                P = int(rng.integers(0, 5))
                preds = []
                for t in range(T):
                    lab = labelmap(h, w, P); preds.append(lab)
                    q = pred / f"anno_{k}" / s / f"{t:05d}.png"; q.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(lab).save(q)
                pr = np.stack(preds).astype(float); n = int(pr.max())
                res = np.stack([pr == i for i in range(1, n + 1)]) if n else np.zeros((0, T, h, w), bool)
                if res.shape[0] < gt_obj.shape[0]:
                    res = np.concatenate([res, np.zeros((gt_obj.shape[0] - res.shape[0], T, h, w), bool)])
                J = np.zeros((res.shape[0], gt_obj.shape[0], T)); F = np.zeros_like(J)
                for ii in range(gt_obj.shape[0]):
                    for jj in range(res.shape[0]):
                        J[jj, ii] = iou_void(gt_obj[ii], res[jj], void); F[jj, ii] = boundary_void(gt_obj[ii], res[jj], void)
                r, c = linear_sum_assignment(-(J.mean(2) + F.mean(2)) / 2)
                for ii in range(len(r)):
                    per_anno[k]["J"].append(db_statistics(J[r[ii], c[ii]])[0]); per_anno[k]["F"].append(db_statistics(F[r[ii], c[ii]])[0])
        jm = np.mean([np.mean(per_anno[k]["J"]) for k in range(4)]); fm = np.mean([np.mean(per_anno[k]["F"]) for k in range(4)])
        ours = evaluate_davis(pred, root)
        worst = max(worst, abs(ours["J"] - jm), abs(ours["F"] - fm), abs(ours["J&F"] - (jm + fm) / 2))
print(f"5 random Ref-DAVIS17 sets (1-3 sequences, 1-3 GT objects, 0-4 predicted objects, void pixels, 4 annotators): max |ours - davis2017 unsupervised| over J, F, J&F = {worst:.2e}")
