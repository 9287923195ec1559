"""Video-consistent transforms (account 3.4), in torch ops only.

A :class:`Clip` is ``frames`` (T, 3, H, W) float32 in [0, 255] (after :class:`Normalize`: normalised),
``masks`` (T, H, W) bool and the ``caption``. Every transform is ``transform(clip, rng) -> clip``:
all random draws come from the ``random.Random`` passed in, so a clip is a pure function of the
RNG state (see ``base.py`` for how the dataset seeds it). Geometric parameters are drawn once per
clip and applied to every frame; :class:`PhotometricDistort` draws per frame, as upstream.

Boxes are not transformed here: the dataset recomputes them from the final masks.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Clip",
    "ClipTransform",
    "Compose",
    "Normalize",
    "PhotometricDistort",
    "RandomHorizontalFlip",
    "RandomResize",
    "RandomSelect",
    "RandomSizeCrop",
    "eval_transform",
    "refcoco_train_transform",
    "resize_clip",
    "resized_shape",
    "swap_left_right",
    "video_train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VIDEO_SCALES = (288, 320, 352, 392, 416, 448, 480, 512)
CROP_SCALES = (400, 500, 600)
REFCOCO_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768)
REFCOCO_POST_CROP_SCALES = (296, 328, 360, 392, 416, 448, 480, 512)


@dataclass(frozen=True)
class Clip:
    frames: torch.Tensor
    masks: torch.Tensor
    caption: str


class ClipTransform(Protocol):
    def __call__(self, clip: Clip, rng: random.Random) -> Clip: ...


# -------------------------------------------------------------------------------------- functional


def resized_shape(height: int, width: int, short_side: int, max_size: int | None = None) -> tuple[int, int]:
    """(H, W) with the short side at ``short_side`` and the long side at most ``max_size`` (DETR rule)."""
    short, long = min(height, width), max(height, width)
    if max_size is not None and long / short * short_side > max_size:
        short_side = int(round(max_size * short / long))
    if short == short_side:
        return height, width
    if width < height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def resize_clip(clip: Clip, size: tuple[int, int]) -> Clip:
    """Resize frames (bilinear, antialiased) and masks (nearest) to ``size`` = (H, W)."""
    if tuple(clip.frames.shape[-2:]) == tuple(size):
        return clip
    frames = F.interpolate(clip.frames, size=size, mode="bilinear", align_corners=False, antialias=True)
    masks = F.interpolate(clip.masks[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    return replace(clip, frames=frames, masks=masks)


_LEFT_RIGHT = re.compile(r"\b(left|right)(?=(?:most)?\b)", re.IGNORECASE)


def swap_left_right(caption: str) -> str:
    """Swap the whole words "left"/"right" (also in "leftmost"/"rightmost"), keeping their case.

    Unlike upstream's ``str.replace`` chain this leaves "bright" or "lefty" alone.
    """

    def swap(match: re.Match[str]) -> str:
        word = match.group(1)
        new = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return new.upper()
        if word[0].isupper():
            return new.capitalize()
        return new

    return _LEFT_RIGHT.sub(swap, caption)


# ------------------------------------------------------------------------------------- transforms


class Compose:
    def __init__(self, transforms: Sequence[ClipTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        for transform in self.transforms:
            clip = transform(clip, rng)
        return clip


class RandomSelect:
    """Apply ``first`` with probability ``p``, otherwise ``second``."""

    def __init__(self, first: ClipTransform, second: ClipTransform, p: float = 0.5) -> None:
        self.first, self.second, self.p = first, second, p

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        return self.first(clip, rng) if rng.random() < self.p else self.second(clip, rng)


class RandomResize:
    """Resize the short side to a size drawn from ``sizes``, long side capped at ``max_size``."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None) -> None:
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        h, w = clip.frames.shape[-2:]
        return resize_clip(clip, resized_shape(h, w, rng.choice(self.sizes), self.max_size))


class RandomSizeCrop:
    """Crop a region of random size in [min_size, max_size] (clamped to the frame) at a random place."""

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        h, w = clip.frames.shape[-2:]
        tw = rng.randint(min(self.min_size, w), min(w, self.max_size))
        th = rng.randint(min(self.min_size, h), min(h, self.max_size))
        top, left = rng.randint(0, h - th), rng.randint(0, w - tw)
        return replace(clip, frames=clip.frames[..., top:top + th, left:left + tw],
                       masks=clip.masks[..., top:top + th, left:left + tw])


class RandomHorizontalFlip:
    """Mirror every frame and mask with probability ``p``; swaps "left"/"right" in the caption."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        if rng.random() >= self.p:
            return clip
        return Clip(clip.frames.flip(-1), clip.masks.flip(-1), swap_left_right(clip.caption))


_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


class PhotometricDistort:
    """SSD-style colour jitter drawn independently for every frame (upstream ``PhotometricDistort``).

    Per frame: brightness +U(-32, 32) (p=0.5); then either contrast x U(.5, 1.5) (p=0.5) before a
    saturation x U(.5, 1.5) (p=0.5), or the saturation first and the contrast after; then a random
    channel permutation (p=0.5). No hue jitter. Values are clamped to [0, 255] after each step, where
    upstream let uint8 conversion wrap around.

    `channel_swap=False` leaves out the channel permutation: it turns a yellow square cyan or magenta (in
    one frame of a clip and not the next), which contradicts any expression that names a colour.
    """

    def __init__(self, brightness: float = 32.0, contrast: tuple[float, float] = (0.5, 1.5),
                 saturation: tuple[float, float] = (0.5, 1.5), channel_swap: bool = True) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.channel_swap = channel_swap

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        return replace(clip, frames=torch.stack([self._distort(frame, rng) for frame in clip.frames]))

    def _distort(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        if rng.random() < 0.5:
            img = (img + rng.uniform(-self.brightness, self.brightness)).clamp(0, 255)
        contrast_first = rng.random() < 0.5
        if contrast_first:
            img = self._contrast(img, rng)
        if rng.random() < 0.5:
            img = _scale_saturation(img, rng.uniform(*self.saturation))
        if not contrast_first:
            img = self._contrast(img, rng)
        if self.channel_swap and rng.random() < 0.5:
            img = img[list(_PERMUTATIONS[rng.randrange(len(_PERMUTATIONS))])]
        return img

    def _contrast(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        if rng.random() < 0.5:
            img = (img * rng.uniform(*self.contrast)).clamp(0, 255)
        return img


def _scale_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Multiply HSV saturation by ``factor`` (clipped at 1) keeping hue and value.

    In HSV each channel is ``V - V * S * g(hue)``, so scaling S scales every channel's distance to V.
    """
    value = img.amax(0, keepdim=True)
    spread = value - img.amin(0, keepdim=True)
    max_factor = torch.where(spread > 0, value / spread.clamp_min(1e-6), torch.full_like(value, math.inf))
    scale = max_factor.clamp(max=factor)
    return value - (value - img) * scale


class Normalize:
    """[0, 255] -> ImageNet-normalised."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean).view(3, 1, 1) * 255.0
        self.std = torch.tensor(std).view(3, 1, 1) * 255.0

    def __call__(self, clip: Clip, rng: random.Random) -> Clip:
        return replace(clip, frames=(clip.frames - self.mean) / self.std)


# ---------------------------------------------------------------------------------------- presets


def _random_resize_or_crop(scales: Sequence[int], max_size: int, post_crop_scales: Sequence[int] | None = None,
                           post_crop_max_size: int | None = None) -> RandomSelect:
    return RandomSelect(
        RandomResize(scales, max_size=max_size),
        Compose([
            RandomResize(CROP_SCALES),
            RandomSizeCrop(384, 600),
            RandomResize(post_crop_scales or scales, max_size=post_crop_max_size or max_size),
        ]),
    )


def video_train_transform(*, flip_first: bool = False, max_size: int = 640,
                          scales: Sequence[int] = VIDEO_SCALES) -> Compose:
    """Training augmentation of the video datasets (account 3.4).

    RandomSelect(p=0.5) between RandomResize(scales, max 640) and RandomResize{400,500,600} ->
    RandomSizeCrop(384-600) -> RandomResize(scales, max 640); horizontal flip (p=0.5, caption
    left/right swap); per-frame PhotometricDistort; normalise. ``flip_first`` (MeViS) does the flip
    and the photometric distortion before the resize/crop; otherwise (YTVOS, A2D) they come after.
    """
    geometric = _random_resize_or_crop(scales, max_size)
    colour = [RandomHorizontalFlip(), PhotometricDistort()]
    steps: list[ClipTransform] = [*colour, geometric] if flip_first else [geometric, *colour]
    return Compose([*steps, Normalize()])


def refcoco_train_transform() -> Compose:
    """RefCOCO pretraining augmentation: flip, then RandomSelect between RandomResize(480..768, max
    800) and {400,500,600} -> crop 384-600 -> RandomResize(296..512, max 640); normalise."""
    return Compose([
        RandomHorizontalFlip(),
        _random_resize_or_crop(REFCOCO_SCALES, 800, REFCOCO_POST_CROP_SCALES, 640),
        Normalize(),
    ])


def eval_transform(short_side: int = 360, max_size: int | None = None) -> Compose:
    """Evaluation: resize the short side to 360 (no cap by default, as the official eval scripts)."""
    return Compose([RandomResize([short_side], max_size=max_size), Normalize()])
