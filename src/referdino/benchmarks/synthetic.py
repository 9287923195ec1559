"""The learning proof: train ReferDINO from scratch on the synthetic world, on a CPU, and show it learns,
including the motion-only expressions that need the temporal enhancer.

    python -m referdino.benchmarks.synthetic --out DIR [--image-minutes 12] [--minutes 48]
        [--train-videos 1000] [--valid-videos 20] [--temporal-position time_box|none]
        [--video-world KEY=VALUE,...] [--resume]
    python -m referdino.benchmarks.synthetic --out DIR --plot-only

The recipe follows the official one (image pretraining on RefCOCO, then video training), scaled down:
1. image phase: single frames (T = 1, batch 8) of the synthetic training videos with their static expressions
   (one frame cannot tell twins apart by their motion, so a motion expression there would teach that its words
   mean nothing), from random weights, at the preset's lr (1e-3 after a 200-step linear warm-up, 10x lower for
   the last quarter of its time). Per-frame grounding (boxes, masks, text matching) is learned without a
   tracker; the temporal decoder does not run;
2. video phase, twice from the same image-phase weights, lr 5e-4 after a 100-step warm-up, 10x lower for the
   last quarter: 4-frame clips with the tracker and the temporal decoder ("temporal"), and the same with the
   temporal decoder switched off ("no_temporal"). The two run side by side, one process and half the threads
   each (the tiny model does not keep two threads busy), unless --sequential.
Each configuration's training time is image + video minutes (12 + 48 = 60 by default: the video phase also
teaches the static expressions and is the only one that teaches motion; measured in benchmarks/RESULTS.md).
The temporal configuration's decoder sees the order of frames (`--temporal-position time_box`, not official):
the official decoder is blind to it, so it cannot tell "moving to the left" from "moving to the right" (see
referdino.modeling.temporal_decoder); the preset's `motion_logit` also lets the class head read each track's
motion directly. Starting the video phase from random weights does not work: the tracker
then aligns meaningless query sets, and the sequence matcher locks onto whichever query slot the classifier
already prefers (the class loss goes to ~0 while boxes stay wrong).

Writes DIR/world (the data), DIR/runs/{image,temporal,no_temporal} (checkpoints, logs), DIR/results.json,
DIR/loss_curves.json (the per-step training loss of each phase) and DIR/learning_curves.png (matplotlib).
An interrupted run continues where it stopped with --resume; `--plot-only` re-draws the figure from the JSON
files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..atomic import atomic_write
from ..synth.io import read_expression_kinds, write_json


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
    return trainer, state, trainer.seconds_spent() / 60  # minutes over all resumes


def _evaluate(model, world: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from ..evaluation.offline import evaluate_split

    params = json.loads((world / "world.json").read_text())["params"]
    short_side = min(params["height"], params["width"])  # the frames' own size: the model trained on it
    scores = evaluate_split(model, str(world), "valid", short_side=short_side)
    kinds = read_expression_kinds(world, "valid")
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
    atomic_write(path, lambda p: fig.savefig(p, format="png"))


def replot(out: Path) -> Path:
    """Re-draw OUT/learning_curves.png from OUT/results.json (and OUT/loss_curves.json when present)."""
    results = json.loads((out / "results.json").read_text())
    curves_file = out / "loss_curves.json"
    curves = json.loads(curves_file.read_text()) if curves_file.is_file() else None
    plot_learning_curves(out / "learning_curves.png", results, curves)
    return out / "learning_curves.png"


def _video_phase(out: Path, world: Path, name: str, overrides: list[str], minutes: float, threads: int,
                 progress: bool, train_world: Path) -> None:
    """Train one video configuration on `train_world` (resuming its checkpoint if any), evaluate it on
    `world`'s held-out split, write runs/NAME/done.json."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    trainer, state, spent = _train(train_world, out / "runs" / name, minutes, overrides, progress)
    record = {"minutes": spent, "steps": state.global_step, "curve": [row["loss"] for row in state.history],
              "scores": _evaluate(trainer.model, world), "threads": torch.get_num_threads()}
    write_json(out / "runs" / name / "done.json", record)


def _last_step(run: Path) -> int:
    """The last logged step of a run in progress (0 before its first log row)."""
    try:
        lines = (run / "log.csv").read_text().strip().splitlines()
        return int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0
    except (OSError, ValueError):
        return 0


def _run_video_phases(out: Path, world: Path, phases: dict[str, list[str]], args: argparse.Namespace,
                      train_world: Path) -> dict:
    """The video configurations, finished ones (done.json) reused. Side by side, one process each with half
    the threads, unless --sequential: the tiny model does not keep two threads busy (measured: 0.25 s/step
    with 2 threads, 0.32 s/step per process with two 1-thread processes side by side on 2 cores)."""
    import torch

    todo = [n for n in phases if not (out / "runs" / n / "done.json").is_file()]
    threads = args.threads or torch.get_num_threads()
    if args.sequential or len(todo) < 2 or threads < 2:
        for name in todo:
            _video_phase(out, world, name, phases[name], args.minutes, args.threads, not args.no_progress,
                         train_world)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        children = {n: ctx.Process(target=_video_phase, args=(out, world, n, phases[n], args.minutes,
                                                               max(1, threads // len(todo)), False, train_world))
                    for n in todo}
        for child in children.values():
            child.start()
        _watch(out, children, args.minutes, not args.no_progress)
        failed = [n for n, c in children.items() if c.exitcode != 0]
        if failed:
            raise SystemExit(f"video phase(s) {', '.join(failed)} failed (see the messages above); rerun with "
                             "--resume to continue from their last checkpoints")
    return {n: json.loads((out / "runs" / n / "done.json").read_text()) for n in phases}


def _watch(out: Path, children: dict, minutes: float, progress: bool) -> None:
    """Wait for the side-by-side phases; with progress, one bar over their training time and their steps."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=round(minutes * 60), desc="video phases (side by side)", unit="s", dynamic_ncols=True)
    start = time.perf_counter()
    while any(c.is_alive() for c in children.values()):
        for c in children.values():
            c.join(timeout=5 / len(children))
        if bar is not None:
            bar.n = min(bar.total, round(time.perf_counter() - start))
            bar.set_postfix({n: f"step {_last_step(out / 'runs' / n)}" for n in children})
            bar.refresh()
    if bar is not None:
        bar.close()


def _video_world(out: Path, world: Path, args: argparse.Namespace) -> Path:
    """The world the video phases train on: `world`, or with --video-world OUT/video_world (training split
    only, same seed and video count), generated once and reused on --resume if its parameters match."""
    from ..synth import SynthConfig, generate_world

    if not args.video_world:
        return world
    try:
        config = SynthConfig.parse(args.video_world)
    except ValueError as exc:
        raise SystemExit(f"--video-world: {exc}") from None
    video_world = out / "video_world"
    wanted = {"seed": args.seed, "params": config.to_dict()}
    if (video_world / "world.json").is_file():
        have = json.loads((video_world / "world.json").read_text())
        if {k: have.get(k) for k in wanted} != wanted:
            raise SystemExit(f"{video_world} was generated with other parameters than --video-world "
                             f"{args.video_world!r} (and --seed): pass the same ones to --resume, or choose another "
                             "--out")
        return video_world
    generate_world(video_world, videos={"train": args.train_videos}, splits=["train"], seed=args.seed,
                   config=config)
    return video_world


def main(argv: list[str] | None = None) -> int:
    from ..synth import generate_world

    parser = argparse.ArgumentParser(prog="python -m referdino.benchmarks.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--image-minutes", type=float, default=12.0, help="image-phase training time (shared)")
    parser.add_argument("--minutes", type=float, default=48.0, help="video-phase training time per configuration")
    parser.add_argument("--lr-drop-time", type=float, default=0.75,
                        help="in each phase, the lr drops 10x once this fraction of its time is spent (0: never)")
    parser.add_argument("--train-videos", type=int, default=1000)
    parser.add_argument("--valid-videos", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--sequential", action="store_true",
                        help="train the two video configurations one after the other with all threads (default: "
                             "side by side, half the threads each)")
    parser.add_argument("--temporal-position", choices=("none", "time_box"), default="time_box",
                        help="temporal decoder input of the temporal configuration: time_box (default here: frame "
                             "time and tracked box encoded, so the order of frames is seen) or none (official)")
    parser.add_argument("--video-world", default="", metavar="KEY=VALUE,...",
                        help="train the video phases on a second world generated with these synthetic-world "
                             "parameters (a curriculum, e.g. objects=3-4,near_miss=1,near_miss_field=colour); the "
                             "held-out split stays the standard world's")
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
            ["num_frames=1", "batch_size=8", "expressions=static", f"lr_drop_time={args.lr_drop_time}",
             f"model.temporal_position={args.temporal_position}", *args.overrides], progress,
        )
        image_steps, image_curve = state.global_step, [row["loss"] for row in state.history]
        export_checkpoint(str(image_dir / "checkpoints" / "last.pt"), str(image_model))
        record = {"minutes": image_minutes, "steps": image_steps, "curve": image_curve}
        write_json(done, record)
        del trainer
        print(f"image phase: {image_steps} steps in {image_minutes:.1f} min", flush=True)
    video = [*([f"init_weights={image_model}"] if args.image_minutes > 0 else []), "lr=5e-4", "warmup_steps=100",
             f"lr_drop_time={args.lr_drop_time}", *args.overrides]
    phases = {"temporal": [*video, f"model.temporal_position={args.temporal_position}"],
              "no_temporal": [*video, "model.temporal_layers=0"]}
    records = _run_video_phases(out, world, phases, args, _video_world(out, world, args))
    curves: dict[str, list[float]] = {}
    for name, record in records.items():
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
    results["temporal_position"] = args.temporal_position
    results["video_world"] = args.video_world
    results["image_minutes"] = image_minutes
    results["image_steps"] = image_steps
    results["command"] = "python -m referdino.benchmarks.synthetic " + " ".join(argv if argv is not None else sys.argv[1:])
    results["torch_threads"] = torch.get_num_threads()
    write_json(out / "results.json", results)
    curves = {"image": image_curve, **curves}  # per-step losses; the video phases start after image_steps
    atomic_write(out / "loss_curves.json", lambda p: Path(p).write_text(json.dumps(curves)))
    plot_learning_curves(out / "learning_curves.png", results, curves)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
