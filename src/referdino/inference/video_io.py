"""Reading what users give us (a video file, a folder of frames, one image) as RGB uint8 frames.

Frames are read lazily, so a long video never sits in memory whole. Grayscale, RGBA, palette and 16-bit
images are converted to 8-bit RGB. Every failure is a `VideoError` whose message says what was wrong and
what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class VideoError(ValueError):
    """An input video/frame folder/image that cannot be read."""


@dataclass
class VideoSource:
    """A readable video: `frames()` yields (name, HxWx3 uint8 RGB) in order."""

    path: Path
    kind: str  #: "video" | "frames" | "image"
    fps: float
    num_frames: int  #: exact for frame folders and images, container estimate for video files
    names: list[str] | None = None  #: frame names (stems) for folders and images

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.kind == "video":
            yield from _decode_video(self.path)
        else:
            files = _image_files(self.path) if self.kind == "frames" else [self.path]
            for f in files:
                yield f.stem, load_rgb(f)


def to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any HxW / HxWxC array of 8 or 16 bits -> HxWx3 uint8."""
    a = np.asarray(array)
    if a.dtype.kind in "iu" and a.dtype.itemsize > 1:  # 16-bit (or wider ints holding 16-bit values)
        a = np.clip(np.round(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = np.clip(np.round(a * (255 if a.max(initial=0) <= 1.0 else 1)), 0, 255).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    a = a.astype(np.uint8, copy=False)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise VideoError(f"unsupported frame layout {array.shape}: expected H x W, H x W x 3 or H x W x 4")
    return np.ascontiguousarray(a)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):  # 16-bit grayscale
                return to_rgb8(np.array(im).astype(np.int64))
            if im.mode not in ("RGB", "L"):  # palette, RGBA, LA, CMYK, ...
                im = im.convert("RGB")
            return to_rgb8(np.array(im))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise VideoError(f"cannot read image {path} ({exc}); is the file complete and an image?") from None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _decode_video(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                yield f"{i:05d}", frame.to_ndarray(format="rgb24")
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"cannot decode {path} ({exc}); the file may be corrupt or truncated") from None


def open_video(path: str | Path) -> VideoSource:
    """Inspect `path` (video file, frame folder or image) and return a lazy `VideoSource`."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"input not found: {p}")
    if p.is_dir():
        files = _image_files(p)
        if not files:
            raise VideoError(f"{p} holds no frames ({', '.join(IMAGE_EXTENSIONS)}); give a folder of images")
        return VideoSource(p, "frames", 25.0, len(files), [f.stem for f in files])
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return VideoSource(p, "image", 1.0, 1, [p.stem])
    if suffix not in VIDEO_EXTENSIONS:
        raise VideoError(
            f"unsupported input {p.name}: give a video ({', '.join(VIDEO_EXTENSIONS)}), a folder of frames or an image"
        )
    import av

    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoError(f"{p} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25.0)
            count = int(stream.frames or 0)
            if count == 0:  # containers without a frame count: count by demuxing (cheap, no decoding)
                count = sum(1 for packet in container.demux(stream) if packet.size)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"cannot open video {p} ({exc}); the file may be corrupt or not a video") from None
    if count == 0:
        raise VideoError(f"{p} has no frames")
    return VideoSource(p, "video", fps, count)
