"""Compare referdino's J and F with davis2017-evaluation's db_eval_iou/db_eval_boundary on many random frames."""
import sys, numpy as np

from davis2017 import metrics as off
from scipy import ndimage
from referdino.evaluation.metrics import region_similarity, contour_accuracy
rng = np.random.default_rng(0)
def blob(h, w):
    kind = rng.integers(0, 5)
    if kind == 0: return np.zeros((h, w), bool)
    if kind == 1: return np.ones((h, w), bool)
    m = rng.random((h, w)) < rng.uniform(0.05, 0.6)
    m = ndimage.binary_opening(ndimage.gaussian_filter(m.astype(float), rng.uniform(1, 6)) > 0.3 * rng.uniform(0.5, 1.5))
    return m
worst_j = worst_f = 0.0; n = 0
for trial in range(300):
    h, w = int(rng.integers(5, 300)), int(rng.integers(5, 500))
    t = int(rng.integers(1, 4))
    gt = np.stack([blob(h, w) for _ in range(t)]); pr = np.stack([blob(h, w) if rng.random() < 0.5 else ndimage.shift(gt[i], (rng.integers(-5, 6), rng.integers(-5, 6)), order=0) for i in range(t)])
    jo = off.db_eval_iou(gt, pr); fo = off.db_eval_boundary(gt, pr)
    for i in range(t):
        worst_j = max(worst_j, abs(region_similarity(pr[i], gt[i]) - jo[i]))
        worst_f = max(worst_f, abs(contour_accuracy(pr[i], gt[i]) - fo[i])); n += 1
print(f"{n} frames (300 random videos, sizes 5..300 x 5..500, empty/full/blob/shifted masks): max |dJ| {worst_j:.2e}, max |dF| {worst_f:.2e}")
