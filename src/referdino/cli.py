"""`referdino` command line: one subcommand per job, each a thin layer over the library."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .config import PRESETS
from .precision import CHOICES as PRECISIONS, DTYPE_HELP

logger = logging.getLogger("referdino")
_OVERWRITE_HELP = "write into a folder that holds other files (they are kept; only our own outputs are replaced)"


def _cmd_parity(args: argparse.Namespace) -> int:
    from .parity import format_report, run_parity
    from .parity_train import run_train_parity

    if args.train and args.device != "cpu":
        raise ValueError("parity --train runs on the CPU only (--device applies to forward fixtures)")
    failed = 0
    for path in args.fixtures:
        if args.train:
            results = run_train_parity(path, args.config, threads=args.threads)
        else:
            try:
                results = run_parity(path, args.config, threads=args.threads, device=args.device)
            except RuntimeError as exc:  # e.g. no CUDA device
                raise ValueError(str(exc)) from None
        print(format_report(path, results))
        failed += sum(not r.ok for r in results)
    return 0 if failed == 0 else 1


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert.api import convert_checkpoint

    report = convert_checkpoint(args.src, args.dst, source=args.source, preset=args.config, keep_lora=args.keep_lora,
                                overwrite=args.overwrite)
    print(report)
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark

    try:
        result = run_benchmark(
            preset=args.config, frames=args.frames, size=args.size, threads=args.threads, repeats=args.repeats,
            json_path=args.json, device=args.device, dtype=args.dtype, expressions=args.expressions,
            pruning=not args.no_pruning, compare=args.compare, flops=not args.no_flops, use_autocast=args.autocast,
            baseline=args.baseline, compile=args.compile,
        )
    except RuntimeError as exc:  # e.g. no CUDA device
        raise ValueError(str(exc)) from None
    print(result)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.config import resolve_train_config
    from .training.distributed import cleanup
    from .training.trainer import Trainer

    config = resolve_train_config(args.config, args.overrides)
    trainer = Trainer(config, progress=not args.no_progress, overwrite=args.overwrite)
    try:
        if args.resume:
            trainer.resume()
        state = trainer.fit()
        if trainer.dist.is_main:
            last = state.history[-1] if state.history else {}
            print(f"trained {state.global_step} steps into {config.out_dir}; last loss {last.get('loss', float('nan')):.4f}")
    finally:
        cleanup()
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth.generator import run_synth

    print(run_synth(args))
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from .inference.commands import run_segment

    return run_segment(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .inference.demo import run_demo

    return run_demo(args)


def _cmd_app(args: argparse.Namespace) -> int:
    from .app import run_app

    return run_app(args)


def _cmd_models(args: argparse.Namespace) -> int:
    from .zoo import models_table

    print(models_table())
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from .evaluation.predict_split import predict_split
    from .inference.commands import load_model
    from .training.distributed import cleanup, init_distributed

    from .precision import describe, resolve_dtype
    from .refine.pipeline import resolve_refinement

    # --refine sam2: the SAM2 checkpoint is resolved before any work (one-line error offline)
    refinement = resolve_refinement(args.refine, args.sam2, cli=True)
    dist = init_distributed(args.device)
    try:
        dtype, why = resolve_dtype(args.dtype, dist.device)
        if dist.is_main:
            print(describe(dtype, why))
            if refinement is not None:
                print(f"refining with SAM2 {refinement.size} ({refinement.folder})")
        model = load_model(args.checkpoint, str(dist.device))
        out = predict_split(
            model, args.dataset, args.data_root, args.split, args.out, multi=args.multi, threshold=args.threshold,
            window=args.window, short_side=args.short_side, device=str(dist.device), rank=dist.rank,
            world_size=dist.world_size, progress=not args.no_progress, max_videos=args.max_videos,
            overwrite=args.overwrite, dtype=dtype, refine=args.refine,
            sam2=None if refinement is None else str(refinement.folder),
        )
    finally:
        cleanup()
    if dist.is_main:
        print(f"predictions written: {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .training.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.dst, fold=not args.keep_lora, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="referdino", description="ReferDINO referring video object segmentation")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("parity", help="check the model against recorded official outputs (fixture .npz)")
    p.add_argument("fixtures", nargs="+", help="fixture files (e.g. caseA.npz)")
    p.add_argument("--config", default=None, choices=sorted(PRESETS),
                   help="override the fixture's preset (default: its `config` entry, else ytvos_swint)")
    p.add_argument("--train", action="store_true",
                   help="the fixtures record one official TRAINING step (losses, matches, gradients): replay it "
                        "with our trainer's step and compare")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N: where the model runs a forward fixture (float32, TF32 off; same "
                        "tolerances)")
    p.set_defaults(func=_cmd_parity)

    p = sub.add_parser("convert", help="convert official / GroundingDINO / transformers weights to ours")
    p.add_argument("src", help="source checkpoint (.pth, .safetensors, or a transformers model folder)")
    p.add_argument("dst", help="output folder (config.json + model.safetensors)")
    p.add_argument("--from", dest="source", required=True, choices=["referdino", "groundingdino", "hf"])
    p.add_argument("--config", required=True, choices=sorted(PRESETS), help="model preset of the checkpoint")
    p.add_argument("--keep-lora", action="store_true", help="keep LoRA adapters separate (for fine-tuning)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("benchmark", help="model-only speed on random frames with random full-size weights")
    p.add_argument("--config", default="swint", help="swint, swinb (the ytvos presets) or any preset name")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=PRECISIONS,
                   help="compute dtype: the weights are cast to it (auto: bf16 where the CPU/GPU has bf16 matrix "
                        "units, else fp32)")
    p.add_argument("--autocast", action="store_true",
                   help="keep fp32 weights and run under torch.autocast to --dtype instead (for comparison)")
    p.add_argument("--baseline", default=None, choices=PRECISIONS, metavar="DTYPE",
                   help="also time the same model in DTYPE (e.g. fp32), runs interleaved with ours, and print the "
                        "speed-up")
    p.add_argument("--frames", type=int, default=36, help="frames per clip (the paper times 36-frame clips)")
    p.add_argument("--size", type=int, default=360, help="short side (the long side is 16:9)")
    p.add_argument("--expressions", type=int, default=1, help="expressions segmented on the clip (1-4)")
    p.add_argument("--no-pruning", action="store_true", help="switch confidence-aware query pruning off")
    p.add_argument("--compare", default=None, choices=["transformers"],
                   help="also time transformers' GroundingDINO per frame in the same conditions")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the matmul-rate floor")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (median reported)")
    p.add_argument("--json", default=None, help="write the result as JSON")
    p.add_argument("--compile", action="store_true",
                   help="experimental: wrap the per-frame grounding call (model.ground) with torch.compile")
    p.set_defaults(func=_cmd_benchmark)
    from .training.config import TRAIN_PRESETS

    p = sub.add_parser("train", help="train or fine-tune (torchrun for several GPUs/processes)")
    p.add_argument("config", help=f"preset ({', '.join(sorted(TRAIN_PRESETS))}) or a resolved train_config.json")
    p.add_argument("overrides", nargs="*", help="key=value overrides, model.<field>=value for the model")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="train into an out_dir that holds other files (they are kept)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="training checkpoint (.pt) -> model folder for segment/infer")
    p.add_argument("checkpoint", help="e.g. runs/x/checkpoints/last.pt")
    p.add_argument("dst", help="output folder (config.json + model.safetensors)")
    p.add_argument("--keep-lora", action="store_true", help="keep LoRA adapters separate (default: fold them)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    p.set_defaults(func=_cmd_export)

    from .inference.commands import add_segment_arguments

    p = sub.add_parser("segment", help="segment the object a sentence refers to in a video, frame folder or image")
    add_segment_arguments(p)
    p.set_defaults(func=_cmd_segment)

    from .inference.demo import add_demo_arguments

    p = sub.add_parser("demo", help="segment a generated clip with the embedded demo model (offline)")
    add_demo_arguments(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("models", help="the published models (--model NAME) and whether they are cached")
    p.set_defaults(func=_cmd_models)

    from .app import add_app_arguments

    p = sub.add_parser("app", help='a local web page to segment videos (needs: pip install "referdino[app]")')
    add_app_arguments(p)
    p.set_defaults(func=_cmd_app)

    p = sub.add_parser("infer", help="run a checkpoint over a benchmark split; writes PNGs and the submission zip")
    p.add_argument("dataset", choices=["ytvos", "mevis", "davis"])
    from .zoo import ModelName

    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", dest="checkpoint", type=ModelName, metavar="NAME",
                       help="a published model by name (`referdino models`), downloaded and converted once")
    which.add_argument("--checkpoint", metavar="PATH", help="a checkpoint on disk (any layout `segment` accepts)")
    p.add_argument("--data-root", required=True, help="dataset folder in its official layout")
    p.add_argument("--split", default="valid")
    p.add_argument("--out", required=True)
    p.add_argument("--multi", action="store_true", help="MeViS: every query above --threshold")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--window", type=int, default=36)
    p.add_argument("--short-side", type=int, default=360)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=PRECISIONS, help=DTYPE_HELP)
    p.add_argument("--max-videos", type=int, default=0, help="only the first N videos (smoke tests)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    from .refine.commands import add_refine_arguments

    add_refine_arguments(p)  # --refine sam2 [--sam2 SIZE]: the refined masks are the predictions
    p.set_defaults(func=_cmd_infer)

    from .evaluation.cli import add_evaluate_arguments

    add_evaluate_arguments(sub)

    from .synth.generator import add_synth_arguments

    p = sub.add_parser("synth", help="write the synthetic RVOS world (Ref-YouTube-VOS layout)")
    add_synth_arguments(p)
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .parity import FixtureError
    from .processing.text import ExpressionError
    from .inference.video_io import VideoError
    from .inference.writers import OutputError
    from .training.config import ConfigError
    from .weights import CheckpointError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, FixtureError, ExpressionError, ConfigError, VideoError, OutputError, FileNotFoundError,
            ValueError) as exc:
        print(f"referdino {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
