"""Training-step speed in float32 and under bf16 autocast, measured in one run (interleaved).

    python benchmarks/train_speed.py --preset tiny --size 96 160 --frames 4 --batch 2 --repeats 5
    python benchmarks/train_speed.py --preset ytvos_swint --size 192 256 --frames 2 --batch 1 --repeats 2
    python benchmarks/train_speed.py --device cuda --preset ytvos_swint --size 360 640 --frames 2 --batch 1

One step = the trainer's step functions (`referdino.training.step`: training forward, criterion, backward,
gradient clip) plus an AdamW step, on random frames and a random ellipse target, official trainable set.
Prints a table and writes --json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from referdino.config import get_preset
from referdino.losses import Criterion, get_loss_preset
from referdino.losses.criterion import LossTargets
from referdino.modeling.referdino import ReferDino
from referdino.precision import cpu_bf16_support
from referdino.processing.text import tokenize
from referdino.training.freezing import apply_official_freezing
from referdino.training.step import backward_and_clip, forward_losses


def make_batch(b: int, t: int, h: int, w: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, LossTargets]:
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(b, t, 3, h, w, generator=g).to(device)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks = (((xs - w / 2) / (w / 5)) ** 2 + ((ys - h / 2) / (h / 4)) ** 2 <= 1).expand(b, t, h, w).to(device)
    boxes = torch.tensor([0.5, 0.5, 0.4, 0.5]).expand(b, t, 4).to(device)
    return frames, LossTargets(masks=masks, boxes=boxes, valid=torch.ones(b, t, dtype=torch.bool, device=device),
                               pixel_mask=torch.zeros(b, h, w, dtype=torch.bool, device=device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--losses", default="ytvos_swint")
    p.add_argument("--size", type=int, nargs=2, default=(96, 160))
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bf16 = torch.autocast on that device)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ReferDino(get_preset(args.preset)).train().to(device)
    apply_official_freezing(model)
    params = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6)
    criterion = Criterion(get_loss_preset(args.losses))
    frames, targets = make_batch(args.batch, args.frames, *args.size, device=device)
    text = tokenize(["the red square on the left"] * args.batch).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    modes = {"fp32": None, "bf16": torch.bfloat16}

    def step(dtype: torch.dtype | None) -> float:
        start = time.perf_counter()
        _, losses = forward_losses(model, criterion, frames, text, targets, autocast_dtype=dtype)
        optimizer.zero_grad(set_to_none=True)
        backward_and_clip(losses["loss"], model, 0.1)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for dtype in modes.values():  # warm-up
        step(dtype)
    times: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(args.repeats):
        for name, dtype in modes.items():
            times[name].append(step(dtype))
    result = {
        "preset": args.preset, "size": list(args.size), "frames": args.frames, "batch": args.batch,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_bf16_support(), "torch": torch.__version__, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
        "all_times": times,
    }
    result["steps_per_s"] = {k: 1 / v for k, v in result["seconds_per_step"].items()}
    result["bf16_speedup"] = result["seconds_per_step"]["fp32"] / result["seconds_per_step"]["bf16"]
    where = result["gpu"] or f"{result['threads']} threads, bf16 units: {result['cpu_bf16']}"
    print(f"{args.preset} {args.batch}x{args.frames}x{args.size[0]}x{args.size[1]} on {device}, {where}")
    for k, v in result["seconds_per_step"].items():
        print(f"  {k}: {v:.3f} s/step ({1 / v:.2f} steps/s)")
    print(f"  bf16 autocast speed-up: {result['bf16_speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
