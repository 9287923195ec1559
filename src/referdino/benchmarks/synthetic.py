"""The learning proof: train ReferDINO from scratch on the synthetic world, on a CPU, and show it learns,
including the motion-only expressions that need the temporal enhancer.

    python -m referdino.benchmarks.synthetic --out DIR [--image-minutes 16] [--minutes 14]
        [--train-videos 250] [--valid-videos 20]

The recipe follows the official one (image pretraining on RefCOCO, then video training), scaled down:
1. image phase: single frames (T = 1, batch 8) of the synthetic training videos, from random weights, at the
   preset's lr (1e-3 after a 200-step linear warm-up). Per-frame grounding (boxes, masks, text matching) is
   learned without a tracker; the temporal decoder does not run;
2. video phase, twice from the same image-phase weights, lr 5e-4 after a 100-step warm-up: 4-frame clips
   with the tracker and the temporal decoder ("temporal"), and the same with the temporal decoder switched
   off ("no_temporal").
Each configuration's training time is image + video minutes. Starting the video phase from random weights
does not work: the tracker then aligns meaningless query sets, and the sequence matcher locks onto whichever
query slot the classifier already prefers (the class loss goes to ~0 while boxes stay wrong).

Writes DIR/world (the data), DIR/runs/{image,temporal,no_temporal} (checkpoints, logs), DIR/results.json and
DIR/learning_curves.png. An interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..weights import atomic_write_bytes


def _train(world: Path, out: Path, minutes: float, extra: list[str], progress: bool):  # type: ignore[no-untyped-def]
    from ..training.config import resolve_train_config
    from ..training.trainer import Trainer

    config = resolve_train_config(
        "synthetic_tiny",
        [f"data_root={world}", f"out_dir={out}", f"max_minutes={minutes}", "epochs=1000", "lr_drop=1000", *extra],
    )
    trainer = Trainer(config, progress=progress)
    last = out / "checkpoints" / "last.pt"
    if last.is_file():  # an interrupted benchmark continues where it stopped
        trainer.resume(last)
    start = time.perf_counter()
    state = trainer.fit()
    return trainer, state, (time.perf_counter() - start) / 60


def _evaluate(model, world: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from ..evaluation.offline import evaluate_split

    params = json.loads((world / "world.json").read_text())["params"]
    short_side = min(params["height"], params["width"])  # the frames' own size: the model trained on it
    scores = evaluate_split(model, str(world), "valid", short_side=short_side)
    kinds = json.loads((world / "valid" / "expression_kinds.json").read_text())
    by_kind: dict[str, list[tuple[str, str]]] = {"static": [], "motion": []}
    for video, exps in kinds.items():
        for exp_id, kind in exps.items():
            by_kind[kind].append((video, exp_id))
    return {kind: scores.summary(keys)["J&F"] for kind, keys in by_kind.items()} | {"all": scores.summary()["J&F"]}


def _plot(path: Path, curves: dict[str, list[float]], bars: dict[str, float]) -> None:
    """Loss curves (log scale) and J&F bars, drawn with Pillow (no plotting dependency)."""
    import math

    from PIL import Image, ImageDraw

    w, h, pad = 900, 420, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    colours = {"temporal": (200, 30, 30), "no_temporal": (30, 80, 200)}
    lw = 560
    d.text((pad, 10), "training loss (log scale) vs step", fill="black")
    d.rectangle([pad, pad, lw, h - pad], outline="black")
    values = [v for c in curves.values() for v in c if v > 0]
    if values:
        lo, hi = math.log10(min(values)), math.log10(max(values))
        hi = hi if hi > lo else lo + 1
        steps = max(len(c) for c in curves.values())
        for name, c in curves.items():
            pts = [
                (pad + (lw - pad) * i / max(steps - 1, 1), h - pad - (h - 2 * pad) * (math.log10(max(v, 1e-9)) - lo) / (hi - lo))
                for i, v in enumerate(c)
            ]
            if len(pts) > 1:
                d.line(pts, fill=colours.get(name, "black"), width=1)
        d.text((pad + 5, pad + 5), f"{10**hi:.3g}", fill="black")
        d.text((pad + 5, h - pad - 15), f"{10**lo:.3g}", fill="black")
        d.text((lw - 60, h - pad + 5), f"{steps} steps", fill="black")
    x0 = lw + 40
    d.text((x0, 10), "held-out J&F", fill="black")
    names = list(bars)
    bw = (w - x0 - 20) / max(len(names), 1)
    for i, name in enumerate(names):
        v = bars[name]
        top = h - pad - (h - 2 * pad) * max(0.0, min(1.0, v))
        colour = colours["no_temporal" if "no_temporal" in name else "temporal"]
        d.rectangle([x0 + i * bw + 5, top, x0 + (i + 1) * bw - 5, h - pad], fill=colour)
        d.text((x0 + i * bw + 5, top - 14), f"{v:.2f}", fill="black")
        label = name.replace("jf_", "").replace("_no_temporal", "\n-temp")
        d.multiline_text((x0 + i * bw + 5, h - pad + 5), label, fill="black")
    for name, colour in colours.items():
        d.text((pad + 10, h - 20 if name == "temporal" else h - 35), f"- {name}", fill=colour)
    atomic_write_bytes(path, lambda p: img.save(p, format="PNG"))


def main(argv: list[str] | None = None) -> int:
    from ..synth import generate_world

    parser = argparse.ArgumentParser(prog="python -m referdino.benchmarks.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image-minutes", type=float, default=16.0, help="image-phase training time (shared)")
    parser.add_argument("--minutes", type=float, default=14.0, help="video-phase training time per configuration")
    parser.add_argument("--train-videos", type=int, default=250)
    parser.add_argument("--valid-videos", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra training overrides key=value (all phases)")
    args = parser.parse_args(argv)
    import torch

    from ..training.export import export_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    world = out / "world"
    if not (world / "world.json").is_file():
        generate_world(world, videos={"train": args.train_videos, "valid": args.valid_videos}, seed=args.seed)
    results: dict[str, float | int | str] = {}
    image_dir = out / "runs" / "image"
    image_model = image_dir / "model"
    image_minutes = 0.0
    image_steps = 0
    image_curve: list[float] = []
    done = image_dir / "done.json"
    if args.image_minutes > 0 and done.is_file():  # finished before an interruption: reuse it
        record = json.loads(done.read_text())
        image_minutes, image_steps, image_curve = record["minutes"], record["steps"], record["curve"]
    elif args.image_minutes > 0:
        progress = not args.no_progress
        trainer, state, image_minutes = _train(
            world, image_dir, args.image_minutes,
            ["num_frames=1", "batch_size=8", *args.overrides], progress,
        )
        image_steps, image_curve = state.global_step, [row["loss"] for row in state.history]
        export_checkpoint(str(image_dir / "checkpoints" / "last.pt"), str(image_model))
        record = {"minutes": image_minutes, "steps": image_steps, "curve": image_curve}
        atomic_write_bytes(done, lambda p: Path(p).write_text(json.dumps(record)))
        del trainer
        print(f"image phase: {image_steps} steps in {image_minutes:.1f} min", flush=True)
    curves: dict[str, list[float]] = {}
    for name, extra in (("temporal", []), ("no_temporal", ["model.temporal_layers=0"])):
        init = [f"init_weights={image_model}"] if args.image_minutes > 0 else []
        video = ["lr=5e-4", "warmup_steps=100"]
        trainer, state, minutes = _train(world, out / "runs" / name, args.minutes,
                                         [*init, *video, *args.overrides, *extra], not args.no_progress)
        scores = _evaluate(trainer.model, world)
        suffix = "" if name == "temporal" else "_no_temporal"
        results[f"jf_static{suffix}"] = scores["static"]
        results[f"jf_motion{suffix}"] = scores["motion"]
        results[f"jf_all{suffix}"] = scores["all"]
        results[f"train_minutes{suffix}"] = image_minutes + minutes
        results[f"train_steps{suffix}"] = image_steps + state.global_step
        results[f"video_minutes{suffix}"] = minutes
        curves[name] = image_curve + [row["loss"] for row in state.history]
        print(f"{name}: {image_steps} image + {state.global_step} video steps in {image_minutes + minutes:.1f} min; "
              f"held-out J&F static {scores['static']:.3f}, motion {scores['motion']:.3f}", flush=True)
    results["image_minutes"] = image_minutes
    results["image_steps"] = image_steps
    results["command"] = "python -m referdino.benchmarks.synthetic " + " ".join(argv if argv is not None else sys.argv[1:])
    results["torch_threads"] = torch.get_num_threads()
    atomic_write_bytes(out / "results.json", lambda p: Path(p).write_text(json.dumps(results, indent=2)))
    bars = {k: float(results[k]) for k in ("jf_static", "jf_motion", "jf_static_no_temporal", "jf_motion_no_temporal")}
    _plot(out / "learning_curves.png", curves, bars)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
