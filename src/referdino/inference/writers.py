"""Writing segmentation outputs into --out:

- per expression, a folder ``NN_slug/`` with PNG masks (0/255), masks.json (COCO RLE, box, score per frame)
  and an overlay MP4 at the source fps;
- ``overlay.mp4``: one video with every expression's mask in its own colour, outlined, and a legend (colour
  swatch + expression) in a band under the frame; frames narrower than 480 pixels are enlarged so the legend
  can be read;
- ``contact_sheet.png``: up to 6 evenly spaced frames with all expressions and the legend, for a quick look
  (kept in bounded memory: thumbnails of every k-th frame, k doubling as the video goes on). Written with
  ``--no-video`` too.

Everything goes to a staging folder; each entry is renamed into place only when complete, so a failure never
leaves partial output behind. Only our own earlier entries are replaced: see `referdino.output_dirs`."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ..data.rle import encode
from ..output_dirs import OutputError, check_output_dir, record_outputs, remove_outputs, replace_entry

__all__ = ["CONTACT_SHEET", "COMBINED_VIDEO", "OutputError", "SegmentationWriter", "expression_dirs",
           "output_entries", "slug"]
KIND = "segment"
COMBINED_VIDEO = "overlay.mp4"  # at the top of --out; each expression folder has its own overlay.mp4 too
CONTACT_SHEET = "contact_sheet.png"
SHEET_FRAMES = 6
_THUMB_SIDE = 480  # longest side of a contact-sheet tile, in pixels
_MIN_VIDEO_WIDTH = 480  # narrower combined videos are enlarged (nearest neighbour) so the legend is legible

_COLOURS = np.array([[220, 20, 60], [30, 144, 255], [50, 205, 50], [255, 165, 0], [186, 85, 211], [0, 206, 209],
                     [255, 105, 180], [160, 82, 45], [255, 255, 0], [0, 0, 160], [255, 255, 255], [128, 128, 0]],
                    np.float32)  # crimson first, as the official demo; 12 colours, then they repeat


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:limit].rstrip("_") or "expression"


def expression_dirs(expressions: list[str]) -> list[str]:
    return [f"{i:02d}_{slug(e)}" for i, e in enumerate(expressions)]


def output_entries(expressions: list[str], *, write_video: bool = True) -> list[str]:
    """The top-level entries a segmentation run writes into --out (checked and replaced as ours)."""
    return [*expression_dirs(expressions), *([COMBINED_VIDEO] if write_video else []), CONTACT_SHEET]


def colour(k: int) -> tuple[int, int, int]:
    """RGB colour of expression `k` in every overlay."""
    r, g, b = (int(c) for c in _COLOURS[k % len(_COLOURS)])
    return r, g, b


class SegmentationWriter:
    """Streams frames in; call `close()` to publish, `abort()` to discard."""

    def __init__(self, out_dir: str | Path, expressions: list[str], fps: float, *, write_video: bool = True,
                 overwrite: bool = False) -> None:
        self.out = Path(out_dir)
        self.dirs = expression_dirs(expressions)
        self.entries = output_entries(expressions, write_video=write_video)
        self.overwrite = overwrite
        check_output_dir(self.out, KIND, self.entries, overwrite=overwrite)
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
        self.write_video = write_video
        self._videos = [_Video(self.stage / d / "overlay.mp4", fps) for d in self.dirs]
        self._combined = _Video(self.stage / COMBINED_VIDEO, fps)
        self._legend: np.ndarray | None = None
        self._sampler = _FrameSampler(SHEET_FRAMES)
        self._count = 0
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
            for k, video in enumerate(self._videos):
                video.write(_blend(frame, masks[k : k + 1], first_colour=k, outline=False))
            self._combined.write(self._combined_frame(frame, masks))
        self._sampler.add(self._count, name, frame, masks)
        self._count += 1

    def _combined_frame(self, frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
        img = _blend(frame, masks)
        scale = math.ceil(_MIN_VIDEO_WIDTH / img.shape[1]) if img.shape[1] < _MIN_VIDEO_WIDTH else 1
        if scale > 1:
            img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
        if self._legend is None or self._legend.shape[1] != img.shape[1]:
            self._legend = legend_band(self.expressions, img.shape[1])
        return np.concatenate([img, self._legend], axis=0)

    def close(self) -> Path:
        for video in (*self._videos, self._combined):
            video.close()
        for k, d in enumerate(self.dirs):
            data = {"expression": self.expressions[k], "frames": self.records[k]}
            (self.stage / d / "masks.json").write_text(json.dumps(data))
        tiles = self._sampler.tiles()
        if tiles:
            contact_sheet(self.stage / CONTACT_SHEET, tiles, self.expressions, self._count)
        self._publish()
        return self.out

    def _publish(self) -> None:
        """Swap each complete entry into --out; replace or drop only our own earlier ones."""
        names = [n for n in self.entries if os.path.lexists(self.stage / n)]  # no frames: no video, no sheet
        before = check_output_dir(self.out, KIND, names, overwrite=self.overwrite)  # it may have changed
        record_outputs(self.out, KIND, names)
        for name in names:
            replace_entry(self.stage / name, self.out / name)
        remove_outputs(self.out, [n for n, k in before.items() if k == KIND and n not in names])
        record_outputs(self.out, KIND, names, exclusive=True)
        shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        for video in (*self._videos, self._combined):
            video.discard()
        shutil.rmtree(self.stage, ignore_errors=True)


# ------------------------------------------------------------------------------------------ drawing


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (the image border does not count as outside)."""
    p = np.pad(mask, 1, mode="edge")
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _blend(frame: np.ndarray, masks: np.ndarray, *, first_colour: int = 0, outline: bool = True) -> np.ndarray:
    """Each mask blended in its colour (expression order; later ones on top), optionally outlined."""
    img = frame.astype(np.float32)
    for k, mask in enumerate(masks):
        img[mask] = 0.45 * img[mask] + 0.55 * _COLOURS[(first_colour + k) % len(_COLOURS)]
    if outline:
        for k, mask in enumerate(masks):
            img[_edges(mask)] = _COLOURS[(first_colour + k) % len(_COLOURS)]
    return np.clip(img, 0, 255).astype(np.uint8)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font Pillow bundles
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: float) -> str:
    """`text`, shortened with "..." to fit in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "..."


def legend_band(expressions: list[str], width: int) -> np.ndarray:
    """(h, width, 3) uint8 dark band with a line per expression (its colour swatch and its text), in up to 3
    columns when the texts fit."""
    from PIL import Image, ImageDraw

    size = int(min(32, max(13, round(width / 48))))
    font = _font(size)
    line, pad = round(size * 1.5), max(4, size // 2)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    needed = pad + size + pad + max((draw.textlength(e, font=font) for e in expressions), default=0) + 2 * pad
    cols = int(max(1, min(3, len(expressions), (width - pad) // needed)))  # 1 when none fit twice
    rows = math.ceil(len(expressions) / cols)
    col_w = (width - pad) / cols
    height = 2 * pad + line * rows
    band = Image.new("RGB", (width, height + height % 2), (24, 24, 24))
    draw = ImageDraw.Draw(band)
    for k, text in enumerate(expressions):
        left, top = pad + (k // rows) * col_w, pad + (k % rows) * line
        y0 = top + (line - size) // 2
        draw.rectangle([left, y0, left + size, y0 + size], fill=colour(k), outline=(255, 255, 255))
        x = left + size + pad
        shown = _fit(draw, text, font, left + col_w - x - pad)
        bbox = draw.textbbox((0, 0), shown, font=font)
        draw.text((x, top + (line - (bbox[3] - bbox[1])) / 2 - bbox[1]), shown, font=font, fill=(255, 255, 255))
    return np.asarray(band)


def _thumbnail(frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The frame with all masks, its longest side at most `_THUMB_SIDE` (scaled before blending: crisp outlines)."""
    from PIL import Image

    h, w = frame.shape[:2]
    scale = _THUMB_SIDE / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        frame = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.BILINEAR))
        masks = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128
                          for m in masks])
    return _blend(frame, masks)


class _FrameSampler:
    """Up to `k` evenly spaced frames of a stream of unknown length, in bounded memory: the thumbnails of every
    `stride`-th frame (the stride doubles whenever more than 4k are kept) and the latest frame."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.stride = 1
        self.kept: list[tuple[int, str, np.ndarray]] = []
        self.last: tuple[int, str, np.ndarray, np.ndarray] | None = None
        self.count = 0

    def add(self, index: int, name: str, frame: np.ndarray, masks: np.ndarray) -> None:
        self.count = index + 1
        if index % self.stride:
            self.last = (index, name, frame.copy(), np.array(masks, dtype=bool))
            return
        self.last = None
        self.kept.append((index, name, _thumbnail(frame, masks)))
        if len(self.kept) > 4 * self.k:
            self.kept = self.kept[::2]
            self.stride *= 2

    def tiles(self) -> list[tuple[int, str, np.ndarray]]:
        """The chosen frames, in order: the kept ones nearest to `k` evenly spaced positions."""
        candidates = list(self.kept)
        if self.last is not None:
            index, name, frame, masks = self.last
            candidates.append((index, name, _thumbnail(frame, masks)))
        if len(candidates) <= self.k:
            return candidates
        indices = np.array([c[0] for c in candidates])
        chosen = sorted({int(np.argmin(np.abs(indices - t))) for t in np.linspace(0, self.count - 1, self.k)})
        return [candidates[i] for i in chosen]


def contact_sheet(path: Path, tiles: list[tuple[int, str, np.ndarray]], expressions: list[str],
                  num_frames: int) -> None:
    """A PNG grid of `tiles` (index, frame name, RGB image) titled "frame N", with the legend underneath."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    cols = min(3, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0][2].shape[:2]
    tile_w = 4.2
    tile_h = tile_w * h / w
    labels = ["\n".join(textwrap.wrap(e, 70)) or e for e in expressions]
    legend_h = 0.3 * sum(label.count("\n") + 1 for label in labels) + 0.4
    fig = Figure(figsize=(cols * tile_w + 0.4, rows * (tile_h + 0.45) + legend_h + 0.6), dpi=100,
                 layout="compressed")  # "compressed": no gaps around fixed-aspect images
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (index, name, image) in zip(axes.ravel(), tiles):
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        small = max(image.shape[:2]) < _THUMB_SIDE // 2  # enlarged a lot: keep the pixels sharp
        ax.imshow(image, interpolation="nearest" if small else "antialiased")
        ax.set_title(f"frame {index}" + ("" if name == f"{index:05d}" or name == str(index) else f"  ({name})"),
                     fontsize=12)
    handles = [Patch(facecolor=np.array(colour(k)) / 255, edgecolor="black", label=label)
               for k, label in enumerate(labels)]
    legend = fig.legend(handles=handles, loc="outside lower center", ncol=1, frameon=False, fontsize=12,
                        handlelength=1.6, handleheight=1.1)
    for k, text in enumerate(legend.get_texts()):
        text.set_color(_readable_on_white(colour(k)))
    shown = "all" if len(tiles) == num_frames else f"{len(tiles)} evenly spaced"
    fig.suptitle(f"{num_frames} frame{'s' if num_frames != 1 else ''} ({shown} shown), "
                 f"{len(expressions)} expression{'s' if len(expressions) != 1 else ''}", fontsize=13)
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.15)


def _readable_on_white(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """The colour, darkened where needed so that text in it reads on white (luma at most 0.45)."""
    c = np.array(rgb, np.float64) / 255
    luma = float(c @ [0.299, 0.587, 0.114])
    r, g, b = c * min(1.0, 0.45 / luma) if luma > 0 else c
    return float(r), float(g), float(b)


# ------------------------------------------------------------------------------------------ files


class _Video:
    """An H.264 (else MPEG-4) yuv420p MP4 opened on the first frame; odd sizes are cropped by one pixel."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.container: Any = None
        self.stream: Any = None

    def write(self, img: np.ndarray) -> None:
        import av

        h, w = img.shape[:2]
        img = np.ascontiguousarray(img[: h - h % 2, : w - w % 2])  # yuv420p needs even sizes
        if self.container is None:
            from fractions import Fraction

            container = av.open(str(self.path), mode="w")
            rate = Fraction(self.fps).limit_denominator(1001) if self.fps > 0 else Fraction(25)
            stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=rate)
            stream.width, stream.height = img.shape[1], img.shape[0]
            stream.pix_fmt = "yuv420p"
            self.container, self.stream = container, stream
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None

    def discard(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # noqa: BLE001 - best effort while discarding
                pass
            self.container = None


def _mkdtemp(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)
