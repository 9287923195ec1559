"""Reading pixels: frames (image files or a video container) and target masks from mask sources.

Every failure on a file is a one-line :class:`DatasetError` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import rle
from .records import CocoMasks, DatasetError, H5Masks, MaskSource, MatMasks, PaletteMasks, VideoRecord

__all__ = ["load_frames", "load_image", "load_masks"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def _resolve(path: Path) -> Path:
    """``path`` itself, or the same stem with another image suffix (datasets mix .jpg and .png)."""
    if path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{path}: missing frame (expected a JPEG or PNG image)")


def load_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a JPEG/PNG; grayscale, palette, RGBA and 16-bit images are converted."""
    from PIL import Image, UnidentifiedImageError

    path = _resolve(Path(path))
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit grayscale
                values = np.asarray(img).astype(np.float64)
                if img.mode.startswith("I;16") or values.max(initial=0) > 255:
                    values = values / 257.0  # 0..65535 -> 0..255
                gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None


def decode_video(path: Path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Decode the frames at 0-based ``indices`` of a video file with PyAV (imported lazily)."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing video file")
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency
        raise ImportError("decoding videos needs PyAV: pip install av") from e
    wanted, last = set(indices), max(indices)
    frames: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except av.error.FFmpegError as e:
        raise DatasetError(f"{path}: unreadable video ({e})") from None
    missing = sorted(wanted - frames.keys())
    if missing:
        raise DatasetError(f"{path}: video has fewer frames than frame index {missing[0]} (0-based)")
    return frames


def load_frames(video: VideoRecord, positions: Sequence[int]) -> list[np.ndarray]:
    """(H, W, 3) uint8 frames at ``positions`` (indices into ``video.frame_ids``), all of one size."""
    if video.container is not None:
        decoded = decode_video(video.container, [video.container_indices[p] for p in positions])
        frames = [decoded[video.container_indices[p]] for p in positions]
        names = [f"{video.container}#{video.container_indices[p]}" for p in positions]
    else:
        cache: dict[int, np.ndarray] = {}
        for p in positions:
            if p not in cache:
                cache[p] = load_image(video.frame_paths[p])
        frames = [cache[p] for p in positions]
        names = [str(video.frame_paths[p]) for p in positions]
    for frame, name in zip(frames, names):
        if frame.shape != frames[0].shape:
            raise DatasetError(f"{name}: frame size {frame.shape[:2]} differs from {frames[0].shape[:2]} "
                               f"of {names[0]} (all frames of a video must have one size)")
    return frames


# ------------------------------------------------------------------------------------------- masks


def _palette_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"{path}: missing annotation PNG")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"{path}: annotation PNG has mode {img.mode}; expected a palette (P) or "
                                   "single-channel image whose values are object ids")
            return np.asarray(img).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"{path}: unreadable annotation PNG ({e})") from None


@lru_cache(maxsize=4)
def _mat_array(path: Path, key: str) -> np.ndarray:
    import scipy.io

    if not path.is_file():
        raise DatasetError(f"{path}: missing mask file")
    try:
        data = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise DatasetError(f"{path}: unreadable MATLAB file ({e})") from None
    if key not in data:
        raise DatasetError(f"{path}: key {key!r} not found (expected an (H, W, T) mask array)")
    array = np.asarray(data[key])
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise DatasetError(f"{path}: {key!r} has shape {array.shape}; expected (H, W, T)")
    return array


def _h5_instance_mask(path: Path, instance_id: int) -> np.ndarray | None:
    try:
        import h5py
    except ImportError:
        raise ImportError("A2D .h5 masks need h5py (pip install h5py); or provide the COCO-format "
                          "a2d_sentences_<split>_annotations_in_coco_format.json instead") from None
    if not path.is_file():
        raise DatasetError(f"{path}: missing A2D mask file")
    with h5py.File(path, "r") as f:
        instances = [int(i) for i in np.asarray(f["instance"]).ravel()]
        if instance_id not in instances:
            return None
        masks = np.asarray(f["reMask"])
    if len(instances) == 1 and masks.ndim == 2:
        masks = masks[None]
    return masks[instances.index(instance_id)].T > 0  # stored transposed (W, H)


def _frame_mask(source: MaskSource, position: int, object_ids: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    if isinstance(source, PaletteMasks):
        path = source.paths[position]
        mask = np.isin(_palette_png(path), list(object_ids))
        where = path
    elif isinstance(source, CocoMasks):
        mask = np.zeros(shape, dtype=bool)
        for k, track in enumerate(source.tracks):
            segmentation = track[position]
            if segmentation is not None:
                try:
                    mask |= rle.decode_segmentation(segmentation, h, w)
                except (ValueError, KeyError, TypeError) as e:
                    raise DatasetError(f"object {object_ids[k] if k < len(object_ids) else k}, frame {position}: "
                                       f"bad COCO segmentation ({e})") from None
        return mask
    elif isinstance(source, MatMasks):
        array = _mat_array(source.path, source.key)
        index = source.indices[position]
        if not 0 <= index < array.shape[2]:
            return np.zeros(shape, dtype=bool)  # no mask for this frame (JHMDB's last frames)
        mask = array[:, :, index] > 0
        where = source.path
    elif isinstance(source, H5Masks):
        path = source.paths[position]
        found = None if path is None else _h5_instance_mask(path, object_ids[0])
        if found is None:
            return np.zeros(shape, dtype=bool)
        mask, where = found, path
    else:  # pragma: no cover
        raise TypeError(f"unknown mask source {type(source).__name__}")
    if mask.shape != shape:
        raise DatasetError(f"{where}: mask size {mask.shape} differs from the frame size {shape}")
    return mask


def load_masks(source: MaskSource | None, positions: Sequence[int], object_ids: Sequence[int],
               shape: tuple[int, int]) -> np.ndarray:
    """(T, H, W) bool union of the referred objects at ``positions``; all False when ``source`` is None."""
    if source is None:
        return np.zeros((len(positions), *shape), dtype=bool)
    return np.stack([_frame_mask(source, p, object_ids, shape) for p in positions])
