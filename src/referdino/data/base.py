"""The one dataset class: clip sampling, loading, target building and transforms for every dataset.

Sampling (account 3.3)
    Training: one item per expression per anchor frame. Anchors are the expression's explicit
    ``anchors`` (A2D, JHMDB) or every ``anchor_stride``-th frame of the video (YTVOS/DAVIS:
    ``num_frames``; MeViS: 64). A clip is the anchor, two local frames at -U(1,3) and +U(1,3)
    (clamped), and ``num_frames - 3`` global frames from outside the local span (from anywhere, or
    with repetition, when the video is short); sorted, then reversed with probability 0.3. When the
    target is invisible in every frame after augmentation another random item is drawn, at most
    ``max_retries`` times. Image-level datasets (RefCOCO, A2D, JHMDB) give T=1 clips.
    Evaluation (``train=False``): one item per expression with all frames of the video in order
    (per expression and anchor frame, T=1, for image-level datasets), short side resized to 360.

Randomness
    Every random draw of an item (frames, reversal, retries, augmentation) comes from one
    ``random.Random`` created for that item. With an integer ``seed`` it is seeded from the string
    ``"{seed}:{epoch}:{index}"`` (sha512-based, stable across processes and Python versions), so an
    item is a pure function of (seed, epoch, index): resuming at any step, in any worker, with any
    DataLoader order reproduces it exactly; call :meth:`set_epoch` each epoch for fresh draws. With
    ``seed=None`` the item seed is drawn from torch's global RNG, i.e. it follows the DataLoader's
    ``generator``/worker seeding. NumPy's global RNG is never used.
"""

from __future__ import annotations

import logging
import random
import numpy as np
import torch
from torch.utils.data import Dataset

from .loading import load_frames, load_masks
from .records import ClipSample, DatasetError, DatasetRecords, ExpressionRecord
from .transforms import Clip, ClipTransform, eval_transform, video_train_transform

__all__ = ["ReferringVideoDataset", "masks_to_boxes", "sample_clip_indices"]

logger = logging.getLogger(__name__)


def sample_clip_indices(anchor: int, length: int, num_frames: int, rng: random.Random,
                        reverse_prob: float = 0.3) -> list[int]:
    """Frame positions of one training clip around ``anchor`` in a video of ``length`` frames.

    The anchor, up to two local frames at anchor - U(1,3) and anchor + U(1,3) (clamped to the video),
    then global frames sampled without replacement from strictly outside the local span; if there are
    too few, from the whole video; if the video is shorter than that, every frame plus random repeats.
    Sorted, then reversed with probability ``reverse_prob``.
    """
    if not 0 <= anchor < length:
        raise ValueError(f"anchor {anchor} outside a video of {length} frames")
    indices = [anchor]
    if num_frames >= 2:
        before, after = rng.randint(1, 3), rng.randint(1, 3)
        local = [max(0, anchor - before), min(length - 1, anchor + after)]
        indices += local if num_frames >= 3 else [local[rng.randrange(2)]]
    n_global = num_frames - len(indices)
    if n_global > 0:
        lo, hi = min(indices), max(indices)
        outside = [*range(lo), *range(hi + 1, length)]
        if len(outside) >= n_global:
            indices += rng.sample(outside, n_global)
        elif length >= n_global:
            indices += rng.sample(range(length), n_global)
        else:
            indices += [*range(length), *(rng.randrange(length) for _ in range(n_global - length))]
    indices.sort()
    if num_frames > 1 and rng.random() < reverse_prob:
        indices.reverse()
    return indices


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(T, H, W) bool -> (T, 4) normalised cx, cy, w, h of the pixel extent; zeros for empty masks.

    A mask covering columns x0..x1 and rows y0..y1 gives the box [x0, y0, x1 + 1, y1 + 1] / (W, H).
    """
    t, h, w = masks.shape
    boxes = torch.zeros(t, 4)
    rows, cols = masks.any(2), masks.any(1)
    for i in range(t):
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        if len(ys) == 0:
            continue
        x0, x1, y0, y1 = xs[0].item(), xs[-1].item() + 1, ys[0].item(), ys[-1].item() + 1
        boxes[i] = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    return boxes


class ReferringVideoDataset(Dataset[ClipSample]):
    """Referring video (or image) segmentation dataset over parsed :class:`DatasetRecords`.

    Args:
        records: what a reader (``read_ytvos`` ...) parsed.
        train: training sampling and augmentation; False = evaluation (whole videos, resize 360).
        num_frames: frames per training clip (6; must be 1 for image-level datasets).
        anchor_stride: spacing of anchor frames; defaults to ``records.anchor_stride`` or ``num_frames``.
        transform: training transform; defaults to :func:`video_train_transform`.
        seed: base seed (see the module docstring); None follows torch's global RNG.
        reverse_prob: probability of reversing a training clip.
        max_retries: redraws allowed when the target is invisible in a whole training clip.
        eval_short_side, eval_max_size: evaluation resize.
    """

    def __init__(self, records: DatasetRecords, *, train: bool = True, num_frames: int | None = None,
                 anchor_stride: int | None = None, transform: ClipTransform | None = None, seed: int | None = 0,
                 reverse_prob: float = 0.3, max_retries: int = 10, eval_short_side: int = 360,
                 eval_max_size: int | None = None) -> None:
        self.records = records
        self.train = train
        self.num_frames = num_frames if num_frames is not None else (6 if records.temporal else 1)
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if not records.temporal and self.num_frames != 1:
            raise ValueError(f"{records.name} is an image-level dataset: num_frames must be 1, got {self.num_frames}")
        self.anchor_stride = anchor_stride or records.anchor_stride or self.num_frames
        self.transform = transform if transform is not None else (
            video_train_transform() if train else eval_transform(eval_short_side, eval_max_size))
        self.seed = seed
        self.epoch = 0
        self.reverse_prob = reverse_prob
        self.max_retries = max_retries
        if train:
            for expression in records.expressions:
                if expression.masks is None:
                    raise DatasetError(f"{records.name} {records.split}: expression {expression.expression_id!r} of "
                                       f"video {expression.video_id!r} has no mask annotations; use train=False")
        self._items = self._build_items()
        logger.info("%s %s: %d videos, %d expressions, %d items", records.name, records.split,
                    len(records.videos), len(records.expressions), len(self._items))

    @property
    def expressions(self) -> list[ExpressionRecord]:
        return self.records.expressions

    def _build_items(self) -> np.ndarray:
        """(N, 2) int64 of (expression index, anchor position; -1 = whole video)."""
        items: list[tuple[int, int]] = []
        whole_videos = not self.train and self.records.temporal
        for e, expression in enumerate(self.records.expressions):
            length = len(self.records.videos[expression.video_id].frame_ids)
            if whole_videos:
                items.append((e, -1))
                continue
            anchors = expression.anchors if expression.anchors is not None else range(0, length, self.anchor_stride)
            for anchor in anchors:
                if not 0 <= anchor < length:
                    raise DatasetError(f"expression {expression.expression_id!r} of video {expression.video_id!r}: "
                                       f"anchor frame {anchor} outside the video's {length} frames")
                items.append((e, anchor))
        return np.asarray(items, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream (seeded mode)."""
        self.epoch = int(epoch)

    def item_rng(self, index: int) -> random.Random:
        """The RNG of item ``index`` in the current epoch."""
        if self.seed is None:
            return random.Random(int(torch.randint(0, 2**62, (1,)).item()))
        return random.Random(f"{self.seed}:{self.epoch}:{index}")

    def __getitem__(self, index: int) -> ClipSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        rng = self.item_rng(index)
        if not self.train:
            return self.load(index, rng)
        tried: list[str] = []
        for _ in range(self.max_retries + 1):
            sample = self.load(index, rng)
            if bool(sample.valid.any()):
                return sample
            tried.append(f"{sample.video_id}/{sample.expression_id}")
            index = rng.randrange(len(self))
        raise DatasetError(f"{self.records.name}: target invisible in every frame of {len(tried)} clips in a row, "
                           f"starting with video/expression {tried[0]} (tried {', '.join(tried[:5])}); check its masks")

    def clip_positions(self, index: int, rng: random.Random) -> list[int]:
        """Frame positions of item ``index`` (training: sampled; evaluation: all frames or the anchor)."""
        e, anchor = (int(v) for v in self._items[index])
        length = len(self.records.videos[self.records.expressions[e].video_id].frame_ids)
        if anchor < 0:
            return list(range(length))
        if not self.train:
            return [anchor]
        return sample_clip_indices(anchor, length, self.num_frames, rng, self.reverse_prob)

    def load(self, index: int, rng: random.Random) -> ClipSample:
        """Load, transform and package item ``index`` without the visibility retry."""
        expression = self.records.expressions[int(self._items[index][0])]
        video = self.records.videos[expression.video_id]
        positions = self.clip_positions(index, rng)
        frames = load_frames(video, positions)
        h, w = frames[0].shape[:2]
        masks = load_masks(expression.masks, positions, expression.object_ids, (h, w))
        clip = Clip(
            frames=torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float(),
            masks=torch.from_numpy(masks),
            caption=" ".join(expression.caption.lower().split()),
        )
        clip = self.transform(clip, rng)
        masks_t = clip.masks.bool()
        valid = masks_t.flatten(1).any(1)
        return ClipSample(
            frames=clip.frames.float().contiguous(),
            caption=clip.caption,
            masks=masks_t,
            boxes=masks_to_boxes(masks_t),
            valid=valid,
            video_id=video.video_id,
            expression_id=expression.expression_id,
            frame_ids=[video.frame_ids[p] for p in positions],
            orig_size=(int(h), int(w)),
            dataset=str(expression.extra.get("dataset", self.records.name)),
        )
