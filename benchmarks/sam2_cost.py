"""What SAM2 refinement (`referdino segment --refine sam2`) adds per frame, for each SAM2.1 size.

Random weights of the published sizes (`referdino.refine.published_config`: the Hiera trunks of
sam2.1_hiera_{t,s,b+,l}, nothing downloaded), run by the same `Sam2VideoRunner` the refinement uses: one object,
prompted with an elliptic mask on the middle frame, propagated forward to the end then in reverse to the start
(the recipe's two passes: T + 1 frame steps for T frames). Each size runs in its own process (clean peak-memory
figures): build the model, one warm-up track on 2 frames, then `--repeats` timed tracks (the fastest is
reported: this VM's two cores are shared, so the spread comes from other load). Peak memory is the process's
peak resident set during the timed tracks (VmHWM, reset just before them) minus its resident set before them,
i.e. what SAM2's activations, session state and masks add on top of its weights; the weights are listed apart.
The image encoder alone (`get_image_features` on one prepared frame, fastest of 3) is timed too: the rest of a
frame step is memory attention over the 7 memory frames and object pointers, the mask decoder and the memory
encoder.

    python benchmarks/sam2_cost.py                              # all sizes, fp32, 16 frames of 360x640, 2 threads
    python benchmarks/sam2_cost.py --sizes tiny --dtypes fp32 bf16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak resident set size (VmHWM)
        f.write("5")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class _RssTrace:
    """A progress object for `track`: the resident set every `every` frame steps."""

    def __init__(self, every: int) -> None:
        self.every, self.steps, self.trace = every, 0, []

    def update(self, n: int) -> None:
        self.steps += n
        if self.every and self.steps % self.every == 0:
            self.trace.append((self.steps, round(_status("VmRSS") / 2**20)))


def run_one(size: str, dtype_name: str, frames: int, height: int, width: int, threads: int, repeats: int,
            trace_every: int = 0) -> dict:
    import numpy as np
    import torch
    from transformers import Sam2VideoModel

    from referdino.refine import Sam2VideoRunner, published_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    start = time.perf_counter()
    model = Sam2VideoModel(published_config(size)).eval()
    build = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    runner = Sam2VideoRunner(model, dtype=dtype)
    video = np.random.default_rng(0).integers(0, 255, (frames, height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    mask = ((yy - height / 2) / (height / 4)) ** 2 + ((xx - width / 2) / (width / 6)) ** 2 <= 1
    runner.track(video[:2], [(0, mask)])  # warm-up
    with torch.inference_mode():
        x = runner.prepare_frame(video[0])[None]
        encoder = []
        for _ in range(3):
            start = time.perf_counter()
            runner.model.get_image_features(x)
            encoder.append(time.perf_counter() - start)
        del x
    before = _status("VmRSS")
    _reset_peak()
    runs = []
    trace = _RssTrace(trace_every)
    for _ in range(repeats):
        start = time.perf_counter()
        masks = runner.track(video, [(frames // 2, mask)], progress=trace if not runs else None)
        runs.append(time.perf_counter() - start)
    seconds = min(runs)
    peak = _status("VmHWM")
    steps = Sam2VideoRunner.frames_processed(frames, [frames // 2])
    assert masks.filled() == list(range(frames))
    return {
        "size": size, "dtype": dtype_name, "params_M": round(params / 1e6, 1),
        "weights_MiB": round(params * torch.finfo(dtype).bits / 8 / 2**20), "build_s": round(build, 1),
        "frames": frames, "frame_steps": steps, "seconds": round(seconds, 2),
        "ms_per_frame": round(1000 * seconds / frames), "ms_per_step": round(1000 * seconds / steps),
        "runs_s": [round(r, 2) for r in runs], "encoder_ms": round(1000 * min(encoder)),
        "rss_before_MiB": round(before / 2**20), "added_peak_MiB": round((peak - before) / 2**20),
        "rss_trace_MiB": trace.trace,
        "threads": threads,
    }


def main() -> int:
    from referdino.refine import SAM2_SIZES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SAM2_SIZES), choices=list(SAM2_SIZES))
    p.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="timed tracks per size (the fastest is reported)")
    p.add_argument("--json", default=None, help="write the rows as JSON")
    p.add_argument("--trace-rss", type=int, default=0, metavar="N",
                   help="also print the resident set every N frame steps of the first timed track (bounded memory)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # SIZE:DTYPE, in this process
    args = p.parse_args()
    if args.one:
        size, dtype = args.one.split(":")
        print(json.dumps(run_one(size, dtype, args.frames, args.height, args.width, args.threads, args.repeats,
                                 args.trace_rss)))
        return 0
    import torch
    import transformers

    rows = []
    print(f"CPU: {_cpu_model()} ({os.cpu_count()} logical); torch {torch.__version__}, transformers "
          f"{transformers.__version__}; {args.frames} frames of {args.height}x{args.width}, 1 object, "
          f"{args.threads} threads", flush=True)
    print("| size | dtype | params | weights | ms/frame | ms/step | of which image encoder | added peak RSS |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for size in args.sizes:
        for dtype in args.dtypes:
            cmd = [sys.executable, __file__, "--one", f"{size}:{dtype}", "--frames", str(args.frames), "--height",
                   str(args.height), "--width", str(args.width), "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--trace-rss", str(args.trace_rss)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(f"| {size} | {dtype} | {row['params_M']} M | {row['weights_MiB']} MiB | {row['ms_per_frame']} | "
                  f"{row['ms_per_step']} | {row['encoder_ms']} | {row['added_peak_MiB']} MiB |", flush=True)
            if row["rss_trace_MiB"]:
                print("  resident set (MiB) after N frame steps: " +
                      ", ".join(f"{n}: {m}" for n, m in row["rss_trace_MiB"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": _cpu_model(), "torch": torch.__version__, "transformers": transformers.__version__,
                       "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
