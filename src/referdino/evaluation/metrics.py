"""Region (J) and boundary (F) measures, as the DAVIS-2017 / MeViS evaluators define them.

J = |P & G| / |P | G| (1 when both are empty).
F = boundary F-measure: a boundary pixel differs from its right, lower or lower-right neighbour (the image
edge repeats itself, so the frame border is no boundary); boundaries match within a disk of radius
ceil(0.008 * sqrt(H^2 + W^2)); F = 2PR / (P + R); both boundaries empty -> 1; one empty -> 0.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J for one (H, W) frame."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.logical_or(pred, gt).sum()
    if np.isclose(union, 0):
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary (H, W) mask."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def contour_accuracy(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """F for one (H, W) frame."""
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape[:2])))
    pb, gb = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    disk = _disk(radius)
    p_dil = ndimage.binary_dilation(pb, structure=disk)
    g_dil = ndimage.binary_dilation(gb, structure=disk)
    precision = (pb & g_dil).sum() / n_p
    recall = (gb & p_dil).sum() / n_g
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def video_jf(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Mean J and mean F over the frames of (T, H, W) masks."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    js = [region_similarity(p, g) for p, g in zip(pred, gt)]
    fs = [contour_accuracy(p, g) for p, g in zip(pred, gt)]
    return float(np.mean(js)), float(np.mean(fs))
