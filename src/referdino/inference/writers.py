"""Writing segmentation outputs: per-expression PNG masks (0/255), masks.json (COCO RLE, box, score per
frame) and an overlay MP4 at the source fps. Everything goes to a staging folder; each expression's folder is
renamed into place only when complete, so a failure never leaves partial output behind. Only our own earlier
expression folders are replaced: see `referdino.output_dirs`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from ..data.rle import encode
from ..output_dirs import OutputError, check_output_dir, record_outputs, remove_outputs, replace_entry

__all__ = ["OutputError", "SegmentationWriter", "expression_dirs", "slug"]
KIND = "segment"

_COLOURS = np.array([[220, 20, 60], [30, 144, 255], [50, 205, 50], [255, 165, 0], [186, 85, 211], [0, 206, 209]],
                    np.float32)  # crimson first, as the official demo


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:limit].rstrip("_") or "expression"


def expression_dirs(expressions: list[str]) -> list[str]:
    return [f"{i:02d}_{slug(e)}" for i, e in enumerate(expressions)]


class SegmentationWriter:
    """Streams frames in; call `close()` to publish, `abort()` to discard."""

    def __init__(self, out_dir: str | Path, expressions: list[str], fps: float, *, write_video: bool = True,
                 overwrite: bool = False) -> None:
        self.out = Path(out_dir)
        self.dirs = expression_dirs(expressions)
        self.overwrite = overwrite
        check_output_dir(self.out, KIND, self.dirs, overwrite=overwrite)
        try:  # stage inside an existing --out (same file system), else beside it
            self.out.parent.mkdir(parents=True, exist_ok=True)
            if self.out.is_dir():
                self.stage = Path(_mkdtemp(self.out, ".referdino.partial-"))
            else:
                self.stage = Path(_mkdtemp(self.out.parent, f".{self.out.name}.partial-"))
        except OSError as exc:
            raise OutputError(f"cannot write to {self.out} ({exc.strerror}); choose a writable --out folder") from None
        self.expressions = expressions
        self.fps = fps
        self.records: list[list[dict]] = [[] for _ in expressions]
        self._videos: list = [None] * len(expressions)
        self._streams: list = [None] * len(expressions)
        self.write_video = write_video
        for d in self.dirs:
            (self.stage / d / "masks").mkdir(parents=True)

    def add(self, name: str, frame: np.ndarray, masks: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> None:
        from PIL import Image

        for k, d in enumerate(self.dirs):
            Image.fromarray(masks[k].astype(np.uint8) * 255, mode="L").save(self.stage / d / "masks" / f"{name}.png")
            self.records[k].append({
                "frame": name,
                "segmentation": encode(masks[k]),
                "box_xyxy": [round(float(v), 2) for v in boxes[k]],
                "score": round(float(scores[k]), 6),
            })
        if self.write_video:
            for k in range(len(self.dirs)):
                self._write_overlay(k, frame, masks[k])

    def _write_overlay(self, k: int, frame: np.ndarray, mask: np.ndarray) -> None:
        import av

        img = frame.astype(np.float32)
        img[mask] = 0.45 * img[mask] + 0.55 * _COLOURS[k % len(_COLOURS)]
        img = np.clip(img, 0, 255).astype(np.uint8)
        h, w = img.shape[:2]
        img = np.ascontiguousarray(img[: h - h % 2, : w - w % 2])  # yuv420p needs even sizes
        if self._videos[k] is None:
            from fractions import Fraction

            container = av.open(str(self.stage / self.dirs[k] / "overlay.mp4"), mode="w")
            rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(25)
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
            stream.width, stream.height = img.shape[1], img.shape[0]
            stream.pix_fmt = "yuv420p"
            self._videos[k], self._streams[k] = container, stream
        for packet in self._streams[k].encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            self._videos[k].mux(packet)

    def close(self) -> Path:
        for container, stream in zip(self._videos, self._streams):
            if container is not None:
                for packet in stream.encode():
                    container.mux(packet)
                container.close()
        for k, d in enumerate(self.dirs):
            data = {"expression": self.expressions[k], "frames": self.records[k]}
            (self.stage / d / "masks.json").write_text(json.dumps(data))
        self._publish()
        return self.out

    def _publish(self) -> None:
        """Swap each complete expression folder into --out; replace or drop only our own earlier ones."""
        before = check_output_dir(self.out, KIND, self.dirs, overwrite=self.overwrite)  # it may have changed
        record_outputs(self.out, KIND, self.dirs)
        for d in self.dirs:
            replace_entry(self.stage / d, self.out / d)
        remove_outputs(self.out, [n for n, k in before.items() if k == KIND and n not in self.dirs])
        record_outputs(self.out, KIND, self.dirs, exclusive=True)
        shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        for container in self._videos:
            if container is not None:
                try:
                    container.close()
                except Exception:  # noqa: BLE001 - best effort while discarding
                    pass
        shutil.rmtree(self.stage, ignore_errors=True)


def _mkdtemp(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)
