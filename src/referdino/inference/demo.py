"""`referdino demo`: the main job on an embedded default, offline.

Generates a synthetic clip (moving shapes, static and motion-only expressions), segments it with the small
model shipped in the package, writes the outputs of `referdino segment` (PNG masks, masks.json, overlay MP4s,
contact sheet) and prints J&F against the generated ground truth.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="referdino-demo", help="output folder (default: ./referdino-demo)")
    p.add_argument("--seed", type=int, default=2024, help="seed of the synthetic clip")
    p.add_argument("--no-video", action="store_true", help="skip the overlay MP4s (contact_sheet.png is still written)")
    p.add_argument("--figure", default=None, metavar="PNG",
                   help="also draw one row per expression, predicted mask against the ground-truth outline")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that holds other files (they are kept; only our outputs are replaced)")


def run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation.metrics import video_jf
    from ..synth import generate_clip
    from .commands import load_model
    from .segmenter import Segmenter
    from .writers import expression_dirs

    if args.figure and Path(args.figure).exists() and not args.overwrite:
        raise SystemExit(f"error: {args.figure} exists; pick another --figure path or pass --overwrite to replace it")
    start = time.perf_counter()
    segmenter = Segmenter(load_model(None, "cpu", model="demo"), dtype="fp32")  # the demo's figures are fp32
    clip = generate_clip(args.seed, name="demo", frames=12, objects=4)
    expressions = [e.text for e in clip.expressions]
    frames = [(name, frame) for name, frame in zip(clip.frame_names, clip.frames)]
    result, out = segmenter.segment_to(
        frames, expressions, args.out, write_video=not args.no_video, overwrite=args.overwrite, fps=5.0,
        keep_masks=True, window=len(frames), short_side=min(clip.frames.shape[1:3]),
    )
    print(f"demo clip: {len(frames)} frames {clip.frames.shape[1]}x{clip.frames.shape[2]}, "
          f"{len(expressions)} expressions -> {out}")
    scores: dict[str, list[float]] = {"static": [], "motion": []}
    each: list[float] = []
    for expr, res, d in zip(clip.expressions, result.expressions, expression_dirs(expressions)):
        j, f = video_jf(res.masks, clip.expression_mask(expr))
        scores[expr.kind].append((j + f) / 2)
        each.append((j + f) / 2)
        print(f"  [{expr.kind:6s}] {expr.text!r:42s} J&F {(j + f) / 2:.3f}  ({d})")
    if args.figure:
        from .truth_figure import draw_truth_figure

        draw_truth_figure(args.figure, clip.frames, expressions, [np.asarray(r.masks) for r in result.expressions],
                          [clip.expression_mask(e) for e in clip.expressions], each)
        print(f"figure (predicted mask against the ground-truth outline): {args.figure}")
    summary = ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items() if v)
    print(f"J&F against the generated ground truth: {summary}; done in {time.perf_counter() - start:.1f} s")
    return 0
