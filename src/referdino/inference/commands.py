"""`referdino segment`: a video file, frame folder or image plus sentences in, masks/JSON/overlays out."""

from __future__ import annotations

import argparse
import logging
import time

logger = logging.getLogger(__name__)


def add_segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (.mp4/.avi/.mov/.webm), folder of frames, or one image")
    p.add_argument("--text", action="append", required=True, help="referring expression (repeat for several)")
    p.add_argument("--checkpoint", default=None, help="folder from `referdino convert` / save_pretrained")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--multi", action="store_true", help="keep every query above --threshold (MeViS style)")
    p.add_argument("--threshold", type=float, default=0.2, help="mean-score threshold for --multi")
    p.add_argument("--window", type=int, default=36, help="frames per window (bounded memory on long videos)")
    p.add_argument("--short-side", type=int, default=360, help="frames go to the model at this short side")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--no-video", action="store_true", help="skip the overlay MP4")
    p.add_argument("--no-progress", action="store_true")


def load_model(checkpoint: str | None, device: str):  # type: ignore[no-untyped-def]
    from ..modeling.referdino import ReferDino
    from ..weights import CheckpointError

    if checkpoint is None:
        from ..demo_model import demo_model_path

        path = demo_model_path()
        if path is None:
            raise CheckpointError("no --checkpoint given and this install has no embedded demo model")
        print(f"no --checkpoint given: using the embedded demo model ({path.name}), trained on synthetic shapes only")
        checkpoint = str(path)
    return ReferDino.from_pretrained(checkpoint, device=device)


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..processing.text import normalize_caption
    from .segment import segment_frames
    from .video_io import open_video
    from .writers import SegmentationWriter

    for text in args.text:
        normalize_caption(text)  # empty expressions fail before any work
    source = open_video(args.video)
    model = load_model(args.checkpoint, args.device)
    writer = SegmentationWriter(args.out, args.text, source.fps, write_video=not args.no_video)
    bar = None if args.no_progress else tqdm(total=source.num_frames, desc="segmenting", unit="frame",
                                              dynamic_ncols=True)
    start = time.perf_counter()
    try:
        result = segment_frames(
            model, source.frames(), args.text, window=args.window, short_side=args.short_side, multi=args.multi,
            threshold=args.threshold, device=args.device, keep_masks=False, on_frame_masks=writer.add,
            replay=source.frames, progress=bar, fps=source.fps,
        )
        out = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    print(f"segmented {len(result.frame_names)} frames x {len(args.text)} expression(s) in {seconds:.1f} s -> {out}")
    for r, d in zip(result.expressions, writer.dirs):
        print(f"  {d}: query {r.queries}, mean score {float(r.scores.mean()):.3f}")
    return 0
