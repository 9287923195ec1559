"""Writing frames, palette annotations and JSON files in the Ref-YouTube-VOS layout, atomically.

Every file is written to a hidden temporary name in its folder and moved into place with `os.replace`, so an
interrupted run never leaves a half-written file under a real name (readers glob ``*.jpg`` / ``*.png`` and never
see the hidden temporaries).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import atomic_write_bytes
from .render import palette

JPEG_QUALITY = 90
_PALETTE = palette()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON with keys in insertion order (never sorted: "10" must not come before "2"), atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def read_expression_kinds(root: str | os.PathLike, split: str) -> dict[str, dict[str, str]]:
    """``<root>/<split>/expression_kinds.json`` of a synthetic world: {video: {expression id: "static" | "motion"}}.
    Raises FileNotFoundError with a one-line reason where the folder is not such a world."""
    path = Path(root) / split / "expression_kinds.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expression kinds exist only in a world written by "
                                "`referdino synth`")
    return json.loads(path.read_text())


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes; fixed quality, 4:4:4 chroma (crisp colours), no optimisation pass."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(
        buf, format="JPEG", quality=int(quality), subsampling=0, optimize=False
    )
    return buf.getvalue()


def encode_palette_png(labels: np.ndarray) -> bytes:
    """(H, W) uint8 object ids (0 = background) -> palette PNG (DAVIS palette)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    img.putpalette(_PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_per_frame(
    kind: str, video_dir: str | os.PathLike, items: Sequence | np.ndarray, frame_names: Sequence[str], suffix: str,
    encode: Callable[[np.ndarray], bytes],
) -> list[Path]:
    """Write ``<video_dir>/<frame><suffix>`` = encode(item) for each item, atomically; returns the paths."""
    if len(items) != len(frame_names):
        raise ValueError(f"{len(items)} {kind} but {len(frame_names)} frame names")
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for item, name in zip(items, frame_names):
        path = video_dir / f"{name}{suffix}"
        atomic_write_bytes(path, encode(item))
        paths.append(path)
    return paths


def write_video_frames(
    video_dir: str | os.PathLike, frames: np.ndarray, frame_names: Sequence[str], quality: int = JPEG_QUALITY
) -> list[Path]:
    """Write ``<video_dir>/<frame>.jpg`` for each (H, W, 3) uint8 frame; returns the paths."""
    return _write_per_frame("frames", video_dir, frames, frame_names, ".jpg", lambda f: encode_jpeg(f, quality))


def write_video_annotations(
    video_dir: str | os.PathLike, label_maps: np.ndarray, frame_names: Sequence[str]
) -> list[Path]:
    """Write ``<video_dir>/<frame>.png`` palette PNGs (pixel value = object id) for (T, H, W) labels."""
    return _write_per_frame("label maps", video_dir, label_maps, frame_names, ".png", encode_palette_png)
