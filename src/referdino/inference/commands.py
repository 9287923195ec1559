"""`referdino segment`: a video file, frame folder or image plus sentences in, masks/JSON/overlays out."""

from __future__ import annotations

import argparse
import logging
import time

logger = logging.getLogger(__name__)


def add_segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (.mp4/.avi/.mov/.webm), folder of frames, or one image")
    p.add_argument("--text", action="append", required=True, help="referring expression (repeat for several)")
    from ..zoo import DEFAULT_MODEL, ModelName

    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", dest="checkpoint", type=ModelName, metavar="NAME", default=None,
                       help=f"a published model by name (default {DEFAULT_MODEL}, downloaded and converted once; "
                            "`referdino models` lists them; `demo` is the embedded offline model)")
    which.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="a checkpoint on disk: our folder, official ReferDINO / GroundingDINO .pth, "
                            "transformers GroundingDINO folder or safetensors (layout and preset recognised)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier `segment` output)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that holds other files (they are kept; only our outputs are replaced)")
    p.add_argument("--multi", action="store_true", help="keep every query above --threshold (MeViS style)")
    p.add_argument("--threshold", type=float, default=0.2, help="mean-score threshold for --multi")
    p.add_argument("--window", type=int, default=36, help="frames per window (bounded memory on long videos)")
    p.add_argument("--short-side", type=int, default=360, help="frames go to the model at this short side")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    from ..precision import CHOICES, DTYPE_HELP

    p.add_argument("--dtype", default="auto", choices=CHOICES, help=DTYPE_HELP)
    p.add_argument("--no-video", action="store_true", help="skip the overlay MP4s (contact_sheet.png is still written)")
    p.add_argument("--no-progress", action="store_true")
    # --- SAM2 refinement (issue 13): --refine sam2 [--sam2 SIZE] ---
    from ..refine.commands import add_refine_arguments

    add_refine_arguments(p)
    # --- end SAM2 refinement ---


def load_model(checkpoint: str | None, device: str, *, model: str | None = None):  # type: ignore[no-untyped-def]
    """The model of `--model NAME` (a `ModelName` in `checkpoint`, or `model`) or `--checkpoint PATH`; with
    neither, the published default (`referdino.zoo.DEFAULT_MODEL`)."""
    from ..modeling.referdino import ReferDino
    from ..weights import CheckpointError
    from ..zoo import DEFAULT_MODEL, ModelName, get_entry, known_names

    if isinstance(checkpoint, ModelName):
        checkpoint, model = None, str(checkpoint)
    if checkpoint is not None:
        from pathlib import Path

        if not Path(checkpoint).exists():
            hint = f" (to use the published model {checkpoint!r}, give --model {checkpoint})" \
                if checkpoint in known_names() else ""
            raise CheckpointError(f"checkpoint not found: {checkpoint}{hint}")
        loaded = ReferDino.from_pretrained(checkpoint, device=device)
        logger.info("loaded %s", getattr(loaded, "resolved_from", checkpoint))
        return loaded
    entry = get_entry(model or DEFAULT_MODEL)
    loaded = ReferDino.from_pretrained(ModelName(entry.name), device=device)  # a name, even if such a path exists
    if entry.embedded:
        print("using the embedded demo model, trained on synthetic shapes only (not for real videos; for trying"
              " the tools)")
    else:
        print(f"using the published model {entry.name} ({entry.location}; {entry.backbone}, trained on "
              f"{entry.trained_on})" + ("" if model else "; --model or --checkpoint choose another"))
    return loaded


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..output_dirs import check_output_dir
    from ..processing.text import normalize_caption
    from .segmenter import Segmenter
    from .video_io import open_video
    from .writers import KIND, SegmentationWriter, output_entries

    for text in args.text:
        normalize_caption(text)  # empty expressions fail before any work
    check_output_dir(args.out, KIND, output_entries(args.text, write_video=not args.no_video),  # ... and --out too
                     overwrite=args.overwrite)
    source = open_video(args.video)
    from ..precision import describe, resolve_dtype

    dtype, why = resolve_dtype(args.dtype, args.device)
    print(describe(dtype, why))
    # --- SAM2 refinement (issue 13): its checkpoint is resolved before any model loads (one-line error offline) ---
    from ..refine.commands import prepare_refiner

    refiner = prepare_refiner(args, dtype)
    # --- end SAM2 refinement ---
    segmenter = Segmenter(load_model(args.checkpoint, args.device), device=args.device, dtype=dtype)
    writer = SegmentationWriter(args.out, args.text, source.fps, write_video=not args.no_video,
                                overwrite=args.overwrite)
    bar = None if args.no_progress else tqdm(total=source.num_frames, desc="segmenting", unit="frame",
                                              dynamic_ncols=True)
    start = time.perf_counter()
    try:
        if refiner is not None:  # --- SAM2 refinement (issue 13): ReferDINO, then SAM2, into the same writer ---
            result = refiner.segment(segmenter.model, source, writer, bar)
        else:
            result = segmenter.segment(
                source, args.text, window=args.window, short_side=args.short_side, multi=args.multi,
                threshold=args.threshold, keep_masks=False, on_frame_masks=writer.add, progress=bar,
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
