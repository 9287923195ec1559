"""Helpers shared by the benchmark evaluators: reading PNG masks, writing results, printing a table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.records import DatasetError

__all__ = ["GT_HINT", "PRED_HINT", "format_table", "read_binary_png", "read_label_png", "write_results_json"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


PRED_HINT = "write one PNG per frame listed in the benchmark file"
GT_HINT = "the ground-truth download looks incomplete; re-extract it"


def _open_png(path: Path, what: str, hint: str):  # type: ignore[no-untyped-def]
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"{path}: missing {what}; {hint}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: unreadable {what} ({e}); rewrite it as a PNG") from None
    return img


def read_binary_png(path: Path, what: str = "prediction mask", hint: str = PRED_HINT) -> np.ndarray:
    """Foreground of a mask PNG as the MeViS evaluator sees it: ``cv2.imread(path, IMREAD_GRAYSCALE) > 0``.

    8-bit grey ('L'/'1') values are used as they are; palette and colour images are converted to luminance
    first (as OpenCV does); 16-bit images keep their high byte (OpenCV strips 16-bit PNGs to 8 bits).
    So 0/255 and 0/1 masks both work.
    """
    img = _open_png(path, what, hint)
    if img.mode in _SIXTEEN_BIT:
        return (np.asarray(img).astype(np.int64) >> 8) > 0
    if img.mode not in ("L", "1"):
        img = img.convert("L")
    return np.asarray(img) > 0


def read_label_png(path: Path, what: str, hint: str = PRED_HINT) -> np.ndarray:
    """Label map of a palette or grey PNG (``np.array(Image.open(path))``, as the DAVIS toolkit reads it)."""
    arr = np.array(_open_png(path, what, hint))
    if arr.ndim != 2:
        raise DatasetError(f"{path}: {what} should be a single-channel label map (palette or grey PNG), "
                           f"got an image of shape {list(arr.shape)}; save it in mode 'P' or 'L'")
    return arr


def write_results_json(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as JSON through a temporary file and a rename (never a partial file)."""
    from ..atomic import atomic_write

    path = Path(path)
    text = json.dumps(results, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_table(title: str, results: Mapping[str, Any], keys: Sequence[str], percent: bool = True) -> str:
    """A two-row text table of the headline numbers (in percent by default)."""
    cells = []
    for key in keys:
        value = results.get(key)
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
            v = float(value)
            cells.append("nan" if math.isnan(v) else (f"{100 * v:.2f}" if percent else f"{v:.4f}"))
        else:
            cells.append("-")
    widths = [max(len(k), len(c)) for k, c in zip(keys, cells)]
    head = "  ".join(k.rjust(w) for k, w in zip(keys, widths))
    row = "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return f"{title}\n{head}\n{row}"
