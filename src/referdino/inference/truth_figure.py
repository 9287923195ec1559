"""A figure that shows, expression by expression, where the predicted mask is against the ground truth.

One row per expression, a few evenly spaced frames per row: the frame dimmed outside the predicted mask (so the
figure reads whatever the colours of the objects), the ground-truth outline in white. Used by `referdino demo --figure PATH`; unlike the contact sheet
(all expressions on one frame), a wrong shape is visible at a glance even when several expressions share one.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes


def draw_truth_figure(path: str | Path, frames: np.ndarray, expressions: list[str], predicted: list[np.ndarray],
                      truth: list[np.ndarray], scores: list[float], columns: int = 4) -> None:
    """Write a PNG: frames (T, H, W, 3) uint8; predicted and truth per expression (T, H, W) bool; scores J&F."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not (len(expressions) == len(predicted) == len(truth) == len(scores)) or not expressions:
        raise ValueError("draw_truth_figure needs one prediction, one ground truth and one score per expression")
    num_frames, h, w = frames.shape[:3]
    shown = sorted({int(round(t)) for t in np.linspace(0, num_frames - 1, min(columns, num_frames))})
    tile_w = 2.6
    fig = Figure(figsize=(len(shown) * tile_w + 0.3, len(expressions) * (tile_w * h / w + 0.5) + 0.5), dpi=100,
                 layout="compressed")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(expressions), len(shown), squeeze=False)
    for row, (text, pred, gt, score) in enumerate(zip(expressions, predicted, truth, scores)):
        for col, t in enumerate(shown):
            ax = axes[row, col]
            image = frames[t].astype(np.float64) / 255
            image[~pred[t]] *= 0.3
            ax.imshow(image, interpolation="nearest")
            if gt[t].any():
                ax.contour(gt[t].astype(np.float32), levels=[0.5], colors="white", linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {t}", fontsize=10)
        title = "\n".join(textwrap.wrap(f'"{text}"  J&F {score:.3f}', 60))
        axes[row, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle("bright: predicted mask (the rest dimmed); white outline: ground truth", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)
    atomic_write_bytes(path, buffer.getvalue())
