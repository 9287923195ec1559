"""Offline J&F of a model on a split that has ground truth (Ref-YouTube-VOS layout, e.g. the synthetic world).

Per expression: J and F averaged over its frames (target = union of its objects); then averaged over
expressions. Expressions of one video share the backbone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from ..inference.predictor import predict_expressions
from ..modeling.referdino import ReferDino
from .metrics import video_jf


@dataclass
class SplitScores:
    per_expression: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)  #: (video, exp) -> (J, F)

    def summary(self, keys: list[tuple[str, str]] | None = None) -> dict[str, float]:
        items = [self.per_expression[k] for k in (keys if keys is not None else self.per_expression)]
        if not items:
            return {"J": float("nan"), "F": float("nan"), "J&F": float("nan"), "expressions": 0}
        j = float(np.mean([i[0] for i in items]))
        f = float(np.mean([i[1] for i in items]))
        return {"J": j, "F": f, "J&F": (j + f) / 2, "expressions": len(items)}


def evaluate_split(
    model: ReferDino, root: str, split: str = "valid", *, short_side: int | None = None, device: str = "cpu",
    progress: bool = False,
) -> SplitScores:
    """J and F of every expression of `root`/`split` (frames at `short_side`, masks compared at full size)."""
    from ..data import build_dataset

    options = {"train": False}
    if short_side:
        options["eval_short_side"] = short_side
    dataset = build_dataset("ytvos", root, split, **options)
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(dataset.expressions):
        by_video[e.video_id].append(i)
    scores = SplitScores()
    model.eval().to(device)
    videos = list(by_video.items())
    if progress:
        from tqdm import tqdm

        videos = tqdm(videos, desc=f"evaluating {split}", dynamic_ncols=True)
    for video_id, indices in videos:
        samples = [dataset[i] for i in indices]
        frames = samples[0].frames.to(device)
        preds = predict_expressions(model, frames, [s.caption for s in samples], samples[0].masks.shape[-2:])
        for sample, pred in zip(samples, preds):
            gt = sample.masks.numpy()
            scores.per_expression[(sample.video_id, sample.expression_id)] = video_jf(pred.masks.numpy(), gt)
    return scores
