"""Model-only timing on random frames with random weights (`referdino benchmark`)."""

from __future__ import annotations

import json
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import get_preset
from .modeling.referdino import ReferDino
from .processing.text import tokenize


@dataclass
class BenchmarkResult:
    preset: str
    device: str
    threads: int
    frames: int
    height: int
    width: int
    seconds_per_run: list[float]
    seconds_per_frame: float
    frames_per_second: float
    peak_rss_gib: float

    def __str__(self) -> str:
        return (
            f"{self.preset} on {self.device} ({self.threads} threads), {self.frames} frames {self.height}x{self.width}: "
            f"{self.seconds_per_frame:.3f} s/frame ({self.frames_per_second:.2f} frames/s), "
            f"runs {', '.join(f'{s:.2f}' for s in self.seconds_per_run)} s, peak RSS {self.peak_rss_gib:.2f} GiB"
        )


def run_benchmark(
    preset: str = "ytvos_swint",
    frames: int = 8,
    size: int = 360,
    threads: int | None = None,
    repeats: int = 3,
    json_path: str | None = None,
    expression: str = "the red ball rolling to the left",
) -> BenchmarkResult:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = get_preset(preset)
    config = config.with_merged_lora()
    model = ReferDino(config).eval()
    height, width = size, int(round(size * 16 / 9))
    pixels = torch.randn(1, frames, 3, height, width)
    text = tokenize([expression])
    times = []
    with torch.inference_mode():
        model(pixels, text)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            out = model(pixels, text)
            # post-processing to masks at the frame size is part of the measured work
            from .processing.postprocess import best_query, binary_masks

            j = best_query(out.pred_logits[0])
            binary_masks(out.pred_masks[0, :, j], (height, width))
            times.append(time.perf_counter() - start)
    per_frame = statistics.median(times) / frames
    result = BenchmarkResult(
        preset, "cpu", torch.get_num_threads(), frames, height, width, times, per_frame, 1 / per_frame,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )
    if json_path:
        Path(json_path).write_text(json.dumps(asdict(result), indent=2))
    return result
