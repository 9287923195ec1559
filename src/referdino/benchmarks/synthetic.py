"""The learning proof: train ReferDINO from scratch on the synthetic world, on a CPU, and show it learns,
including the motion-only expressions that need the temporal enhancer.

    python -m referdino.benchmarks.synthetic --out DIR [--image-minutes 16] [--minutes 14]
        [--train-videos 250] [--valid-videos 20]
    python -m referdino.benchmarks.synthetic --out DIR --plot-only

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

Writes DIR/world (the data), DIR/runs/{image,temporal,no_temporal} (checkpoints, logs), DIR/results.json,
DIR/loss_curves.json (the per-step training loss of each phase) and DIR/learning_curves.png (matplotlib).
An interrupted run continues where it stopped; `--plot-only` re-draws the figure from the JSON files.
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
    if last.is_file():  # an interrupted benchmark continues where it stopped (--resume)
        trainer.resume(last)
    state = trainer.fit()
    return trainer, state, (state.seconds + trainer._elapsed()) / 60  # minutes over all resumes


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


_COLOURS = {"image": "0.35", "temporal": "tab:red", "no_temporal": "tab:blue"}
_LABELS = {"image": "image phase (T = 1, shared)", "temporal": "video phase, temporal decoder",
           "no_temporal": "video phase, no temporal decoder"}


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the raw per-step loss is too noisy to read)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_learning_curves(path: Path, results: dict, curves: dict[str, list[float]] | None = None) -> None:
    """Draw the learning proof with matplotlib (Agg): per-step training loss of each phase and configuration
    (log scale; faint raw values, a moving average on top) and the held-out J&F of both configurations.

    curves: {"image": [...], "temporal": [...], "no_temporal": [...]}, one loss per step of that phase (the
    video phases start at step results["image_steps"]). Without them only the J&F and the step counts are drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg backend, without touching pyplot's global one
    loss_ax, jf_ax = fig.subplots(1, 2, width_ratios=[1.6, 1])
    image_steps = int(results.get("image_steps", 0) or 0)
    drawn = {k: [float(v) for v in c] for k, c in (curves or {}).items() if c}
    if drawn:
        longest = max(len(c) for c in drawn.values())
        window = max(1, min(100, longest // 40))
        for name in ("image", "temporal", "no_temporal"):
            c = drawn.get(name)
            if not c:
                continue
            start = 1 if name == "image" else image_steps + 1
            x = range(start, start + len(c))
            colour = _COLOURS[name]
            loss_ax.plot(x, c, color=colour, alpha=0.2, linewidth=0.6)
            loss_ax.plot(x, _smooth(c, window), color=colour, linewidth=1.8, label=_LABELS[name])
        if image_steps and ("temporal" in drawn or "no_temporal" in drawn):
            loss_ax.axvline(image_steps + 0.5, color="0.5", linestyle="--", linewidth=1)
            loss_ax.annotate(" video phases start", (image_steps + 0.5, 0.02), xycoords=("data", "axes fraction"),
                             color="0.3", fontsize="small")
        loss_ax.set_yscale("log")
        loss_ax.set_xlabel("training step")
        loss_ax.set_ylabel("training loss (log scale)")
        loss_ax.set_title(f"Training loss (faint: per step; solid: mean of {window} steps)")
        loss_ax.legend(loc="upper right")
        loss_ax.grid(True, which="major", alpha=0.3)
    else:  # a results.json without the loss curves: show how the steps were spent instead
        steps_key = {"temporal": "train_steps", "no_temporal": "train_steps_no_temporal"}
        configs = [n for n in ("temporal", "no_temporal") if steps_key[n] in results]
        for row, name in enumerate(configs):
            total = int(results[steps_key[name]])
            loss_ax.barh(row, image_steps, color=_COLOURS["image"], label=_LABELS["image"] if row == 0 else None)
            loss_ax.barh(row, total - image_steps, left=image_steps, color=_COLOURS[name], label=_LABELS[name])
            loss_ax.text(total, row, f" {total}", va="center")
        loss_ax.set_yticks(range(len(configs)), [n.replace("_", " ") for n in configs])
        loss_ax.set_xlabel("training steps")
        loss_ax.set_title("Training steps per phase (loss curves not recorded in results.json)")
        loss_ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize="small")
        loss_ax.margins(x=0.12)

    kinds = [k for k in ("static", "motion", "all") if f"jf_{k}" in results or f"jf_{k}_no_temporal" in results]
    width = 0.38
    for offset, (name, suffix) in zip((-width / 2, width / 2), (("temporal", ""), ("no_temporal", "_no_temporal"))):
        values = [float(results.get(f"jf_{k}{suffix}", float("nan"))) for k in kinds]
        bars = jf_ax.bar([i + offset for i in range(len(kinds))], values, width, color=_COLOURS[name],
                         label="temporal decoder" if name == "temporal" else "no temporal decoder")
        jf_ax.bar_label(bars, fmt="%.3f", padding=2, fontsize="small")
    jf_ax.set_xticks(range(len(kinds)), kinds)
    jf_ax.set_xlabel("expression kind")
    jf_ax.set_ylim(0, 1)
    jf_ax.set_ylabel("J&F on the held-out videos")
    jf_ax.set_title("Held-out J&F by expression kind")
    jf_ax.legend(loc="upper right")
    jf_ax.grid(True, axis="y", alpha=0.3)
    minutes = results.get("train_minutes")
    fig.suptitle("ReferDINO learning proof on the synthetic world (CPU, from random weights)"
                 + (f": {float(minutes):.0f} min per configuration" if isinstance(minutes, (int, float)) else ""))
    atomic_write_bytes(path, lambda p: fig.savefig(p, format="png"))


def replot(out: Path) -> Path:
    """Re-draw OUT/learning_curves.png from OUT/results.json (and OUT/loss_curves.json when present)."""
    results = json.loads((out / "results.json").read_text())
    curves_file = out / "loss_curves.json"
    curves = json.loads(curves_file.read_text()) if curves_file.is_file() else None
    plot_learning_curves(out / "learning_curves.png", results, curves)
    return out / "learning_curves.png"


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
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted proof in OUT: finished phases are kept, the interrupted one "
                             "continues from its last checkpoint with the rest of its time")
    parser.add_argument("--plot-only", action="store_true",
                        help="only re-draw OUT/learning_curves.png from OUT/results.json (and OUT/loss_curves.json)")
    parser.add_argument("overrides", nargs="*", help="extra training overrides key=value (all phases)")
    args = parser.parse_args(argv)
    if args.plot_only:
        print(replot(Path(args.out)))
        return 0
    import torch

    from ..training.export import export_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if (out / "runs").is_dir() and not args.resume:
        raise SystemExit(f"{out} holds an earlier learning proof: add --resume to continue it (finished phases are "
                         "kept) or choose another --out")
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
        phase_done = out / "runs" / name / "done.json"
        if phase_done.is_file():  # finished before an interruption (--resume): reuse it
            record = json.loads(phase_done.read_text())
        else:
            init = [f"init_weights={image_model}"] if args.image_minutes > 0 else []
            video = ["lr=5e-4", "warmup_steps=100"]
            trainer, state, minutes = _train(world, out / "runs" / name, args.minutes,
                                             [*init, *video, *args.overrides, *extra], not args.no_progress)
            record = {"minutes": minutes, "steps": state.global_step,
                      "curve": [row["loss"] for row in state.history], "scores": _evaluate(trainer.model, world)}
            atomic_write_bytes(phase_done, lambda p, r=record: Path(p).write_text(json.dumps(r)))
            del trainer
        scores, minutes = record["scores"], record["minutes"]
        suffix = "" if name == "temporal" else "_no_temporal"
        results[f"jf_static{suffix}"] = scores["static"]
        results[f"jf_motion{suffix}"] = scores["motion"]
        results[f"jf_all{suffix}"] = scores["all"]
        results[f"train_minutes{suffix}"] = image_minutes + minutes
        results[f"train_steps{suffix}"] = image_steps + record["steps"]
        results[f"video_minutes{suffix}"] = minutes
        curves[name] = record["curve"]
        print(f"{name}: {image_steps} image + {record['steps']} video steps in {image_minutes + minutes:.1f} min; "
              f"held-out J&F static {scores['static']:.3f}, motion {scores['motion']:.3f}", flush=True)
    results["image_minutes"] = image_minutes
    results["image_steps"] = image_steps
    results["command"] = "python -m referdino.benchmarks.synthetic " + " ".join(argv if argv is not None else sys.argv[1:])
    results["torch_threads"] = torch.get_num_threads()
    atomic_write_bytes(out / "results.json", lambda p: Path(p).write_text(json.dumps(results, indent=2)))
    curves = {"image": image_curve, **curves}  # per-step losses; the video phases start after image_steps
    atomic_write_bytes(out / "loss_curves.json", lambda p: Path(p).write_text(json.dumps(curves)))
    plot_learning_curves(out / "learning_curves.png", results, curves)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
