"""Rasterising shapes and backgrounds with numpy (no anti-aliasing, so masks are exactly the painted pixels)."""

from __future__ import annotations

import math

import numpy as np

#: half-size (as a fraction of the short side of the frame) of a small / large shape's equal-area square
SIZE_SCALE: dict[str, float] = {"small": 0.085, "large": 0.14}


def half_size(size: str, height: int, width: int) -> float:
    return SIZE_SCALE[size] * min(height, width)


def half_extent(kind: str, s: float) -> float:
    """Half of the bounding-box side of a shape whose area equals that of a square of half-side `s`."""
    if kind == "square":
        return s
    if kind == "circle":
        return 2.0 * s / math.sqrt(math.pi)
    if kind in ("triangle", "diamond"):
        return s * math.sqrt(2.0)
    raise ValueError(f"unknown shape kind {kind!r}")


def shape_mask(kind: str, cx: float, cy: float, s: float, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a shape centred (bounding box) at (cx, cy); pixel centres are at +0.5.

    All kinds have the area of a square of half-side `s`: square, circle, upward triangle, diamond.
    """
    x = np.arange(width, dtype=np.float64)[None, :] + 0.5 - cx
    y = np.arange(height, dtype=np.float64)[:, None] + 0.5 - cy
    a = half_extent(kind, s)
    if kind == "square":
        return (np.abs(x) <= a) & (np.abs(y) <= a)
    if kind == "circle":
        return x * x + y * y <= a * a
    if kind == "diamond":
        return np.abs(x) + np.abs(y) <= a
    # triangle, apex up: half-width grows from 0 at y = -a to a at y = +a
    return (y >= -a) & (y <= a) & (np.abs(x) <= (y + a) / 2.0)


def _upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a (h, w, C) grid to (height, width, C)."""
    h, w = coarse.shape[:2]
    fy = np.linspace(0.0, h - 1.0, height)
    fx = np.linspace(0.0, w - 1.0, width)
    y0 = np.minimum(np.floor(fy).astype(int), h - 2)
    x0 = np.minimum(np.floor(fx).astype(int), w - 2)
    wy = (fy - y0)[:, None, None]
    wx = (fx - x0)[None, :, None]
    rows = coarse[y0] * (1 - wy) + coarse[y0 + 1] * wy  # (height, w, C)
    return rows[:, x0] * (1 - wx) + rows[:, x0 + 1] * wx


def background(rng: np.random.Generator, height: int, width: int, textured: bool) -> np.ndarray:
    """(H, W, 3) float background: a grey with a slight tint, plus a smooth low-contrast texture if asked."""
    base = rng.uniform(95.0, 155.0) + rng.uniform(-12.0, 12.0, size=3)
    img = np.broadcast_to(base, (height, width, 3)).astype(np.float64)
    if textured:
        coarse = rng.normal(0.0, 9.0, size=(4, 6, 3))
        img = img + _upsample(coarse, height, width)
    return img


def palette() -> list[int]:
    """The PASCAL VOC / DAVIS palette as a flat list of 768 ints (index 0 black, 1 dark red, 2 dark green, ...)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal
