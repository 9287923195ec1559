"""COCO mask formats in pure numpy: compressed RLE encode/decode, area, polygons.

The run-length encoding is the one of ``pycocotools`` (``maskApi.c``), re-implemented so that
reading MeViS ``mask_dict.json``, the A2D COCO-format ground truth and RefCOCO needs no compiled
dependency:

- The mask is flattened in **column-major** (Fortran) order, i.e. down the first column, then the
  second, and so on.
- ``counts`` alternates run lengths of 0s and 1s and always starts with a run of 0s (which may have
  length 0 when the first pixel is set).
- The compressed string stores each count ``x`` (from the 4th on, as the difference
  ``x - counts[i - 2]``) as a little-endian sequence of 5-bit groups. Each group becomes one
  character ``chr(48 + group)``, with bit ``0x20`` set on every group but the last. The last group's
  bit ``0x10`` is the sign bit, so negative differences are sign-extended when decoded.

Example (worked by hand in the tests): a 10x4 mask whose column-major runs are ``[5, 30, 2, 3]``
encodes to ``"5n02UO"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["area", "decode", "decode_segmentation", "encode", "polygons_to_mask", "rle_counts", "string_to_counts"]


def rle_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a 2-D mask in column-major order, starting with a (possibly empty) run of 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def counts_to_string(counts: Sequence[int]) -> str:
    """The compressed ``counts`` string of pycocotools for a list of run lengths."""
    chars: list[str] = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = x & 0x1F
            x >>= 5  # arithmetic shift: negative values stay negative
            more = x != -1 if group & 0x10 else x != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return "".join(chars)


def string_to_counts(text: str | bytes) -> list[int]:
    """Inverse of :func:`counts_to_string`."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(text):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(text):
                raise ValueError(f"truncated RLE string {text!r}")
            group = ord(text[p]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"invalid character {text[p]!r} in RLE string")
            x |= (group & 0x1F) << (5 * k)
            more = bool(group & 0x20)
            p += 1
            k += 1
            if not more and group & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE ``{"size": [H, W], "counts": str}`` of a 2-D boolean mask (pycocotools layout)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode expects a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(rle_counts(mask))}


def _counts(rle: Mapping[str, Any]) -> list[int]:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return string_to_counts(counts)
    return [int(c) for c in counts]  # uncompressed RLE (COCO iscrowd annotations)


def decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Boolean (H, W) mask of a compressed or uncompressed COCO RLE."""
    if "size" not in rle or "counts" not in rle:
        raise ValueError("an RLE needs 'size' and 'counts'")
    h, w = (int(s) for s in rle["size"])
    counts = _counts(rle)
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"RLE counts sum to {sum(counts)} (or are negative) but size is {h}x{w}")
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels of an RLE (sum of the odd-position runs)."""
    return int(sum(_counts(rle)[1::2]))


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` into a boolean (H, W) mask.

    Uses PIL's scan-line fill, which can differ from pycocotools' ``frPoly`` by one pixel along
    edges; that is below the annotation noise of RefCOCO.
    """
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = [float(v) for v in polygon]
        if len(points) >= 6:
            draw.polygon(list(zip(points[0::2], points[1::2])), outline=1, fill=1)
    return np.asarray(canvas, dtype=bool).copy()


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of any COCO ``segmentation``: polygon list, compressed or uncompressed RLE."""
    if isinstance(segmentation, Mapping):
        mask = decode(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE size {list(mask.shape)} does not match the image size {[height, width]}")
        return mask
    if isinstance(segmentation, Sequence) and not isinstance(segmentation, (str, bytes)):
        return polygons_to_mask(segmentation, height, width)
    raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")
