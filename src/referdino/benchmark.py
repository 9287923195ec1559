"""Model-only speed measurement (`referdino benchmark`), as the paper measures it.

Frames are random, already "decoded and resized"; the weights are random at the preset's full size. One timed
run is the whole inference path for a clip: the Swin backbone once per frame (shared by the expressions), the
text encoder once per expression, grounding, tracking, temporal decoder, masks, and the post-processing to a
binary mask per frame at the frame size. Warm-up runs come first; the reported time is the median.

Besides time it reports, for the same clip:
- FLOPs per frame counted by `torch.utils.flop_counter` (matmuls, convolutions, attention; the sampling in
  deformable attention is not a FLOP-counted op and is negligible), and the decoder's share;
- the matmul rate of this machine in the run's dtype at the same thread count, and the "floor" = FLOPs / rate;
- peak memory: RSS on a CPU (process high-water mark), `torch.cuda.max_memory_allocated` on a GPU;
- optionally (`--compare transformers`) transformers' GroundingDINO (its default = grounding-dino-tiny layout,
  random weights) run per frame in the same process and conditions, and the ratio ours / theirs.

`--dtype auto|fp32|bf16|fp16` (`referdino.precision`): the weights are cast to the dtype and the model runs in it
(float32 islands in the model code); `--autocast` instead keeps fp32 weights under `torch.autocast`, for comparison.
`--baseline fp32` also times a second copy of the same model in that dtype, its runs interleaved with ours in the
same process (a fair speed-up on a shared, noisy machine).

`--compile` (experimental): the per-frame grounding call `model.ground` is wrapped with `torch.compile`; the
warm-up run then includes the compilation (several warm-ups are made, see `COMPILE_WARMUP`).
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import PRESETS, get_preset
from .modeling.referdino import ReferDino
from .precision import NAMES, autocast, cast_model, describe, resolve_dtype
from .processing.postprocess import best_query, binary_masks

EXPRESSIONS = (
    "the red ball rolling to the left",
    "a small dog jumping over the fence",
    "the person in a white shirt riding a bike",
    "the cat that stays still on the sofa",
)

#: warm-up runs with --compile (the first compiles; the last chunk of a clip may recompile for its frame count)
COMPILE_WARMUP = 3

#: `--config swint` / `swinb` are the Ref-YouTube-VOS presets (the paper's speed figures)
CONFIG_ALIASES = {"swint": "ytvos_swint", "swinb": "ytvos_swinb"}


@dataclass
class BenchmarkResult:
    preset: str
    device: str
    dtype: str
    threads: int
    frames: int
    height: int
    width: int
    expressions: int
    pruning: bool
    seconds_per_run: list[float]
    ms_per_frame: float
    frames_per_second: float
    peak_memory_gib: float
    memory_kind: str  #: "rss" (CPU) or "cuda_max_allocated"
    gflop_per_frame: float | None = None
    decoder_gflop_per_frame: float | None = None
    matmul_gflops: float | None = None  #: measured matmul rate in the run's dtype (GFLOP/s)
    floor_ms_per_frame: float | None = None  #: gflop_per_frame / matmul rate
    floor_ratio: float | None = None  #: ms_per_frame / floor_ms_per_frame
    transformers_ms_per_frame: float | None = None
    ratio: float | None = None  #: ours / transformers
    notes: list[str] = field(default_factory=list)
    precision: str = "weights"  #: "weights" (cast to `dtype`) or "autocast" (fp32 weights under torch.autocast)
    compiled: bool = False  #: `model.ground` wrapped with torch.compile (--compile, experimental)
    baseline_dtype: str | None = None
    baseline_seconds_per_run: list[float] | None = None  #: interleaved with ours, run by run
    baseline_ms_per_frame: float | None = None
    speedup: float | None = None  #: baseline / ours (medians)
    speedup_best: float | None = None  #: baseline / ours (fastest runs: robust to load from other processes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ours_ms_per_frame"] = self.ms_per_frame
        return d

    def __str__(self) -> str:
        lines = [
            f"{self.preset} on {self.device} ({self.dtype}{', autocast' if self.precision == 'autocast' else ''}, "
            f"{self.threads} threads), {self.frames} frames "
            f"{self.height}x{self.width}, {self.expressions} expression(s), pruning {'on' if self.pruning else 'off'}",
            f"  ours: {self.ms_per_frame:.1f} ms/frame ({self.frames_per_second:.2f} frames/s); runs "
            + ", ".join(f"{s:.2f}" for s in self.seconds_per_run) + " s; peak "
            + f"{'RSS' if self.memory_kind == 'rss' else 'CUDA allocated'} {self.peak_memory_gib:.2f} GiB",
        ]
        if self.gflop_per_frame is not None:
            lines.append(f"  {self.gflop_per_frame:.1f} GFLOP/frame (decoder {self.decoder_gflop_per_frame:.2f})")
        if self.floor_ms_per_frame is not None:
            lines.append(
                f"  {self.dtype} matmul {self.matmul_gflops:.0f} GFLOP/s -> floor {self.floor_ms_per_frame:.1f} "
                f"ms/frame; "
                f"ours = {self.floor_ratio:.2f}x floor"
            )
        if self.baseline_ms_per_frame is not None:
            lines.append(
                f"  baseline {self.baseline_dtype} (same model, runs interleaved): {self.baseline_ms_per_frame:.1f} "
                f"ms/frame; runs " + ", ".join(f"{s:.2f}" for s in self.baseline_seconds_per_run or []) +
                f" s; speed-up {self.dtype} vs {self.baseline_dtype} = {self.speedup:.2f}x (medians), "
                f"{self.speedup_best:.2f}x (fastest runs)"
            )
        if self.transformers_ms_per_frame is not None:
            lines.append(
                f"  transformers GroundingDINO: {self.transformers_ms_per_frame:.1f} ms/frame; "
                f"ratio ours/transformers = {self.ratio:.2f}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def resolve_preset(name: str) -> str:
    name = CONFIG_ALIASES.get(name, name)
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; use swint, swinb or one of {sorted(PRESETS)}")
    return name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    fns: list[Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> list[list[float]]:
    """Like `time_calls` for several functions, called in turn within each repeat (load drifts hit all alike)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - start)
    return times


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Rate of a large matmul in `dtype` at the current thread count (the best of `repeats`)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = min(time_calls(lambda: a @ b, device, repeats, warmup=2))
    return 2 * n**3 / best / 1e9


def segment_clip(model: ReferDino, pixels: torch.Tensor, expressions: list[str]) -> list[torch.Tensor]:
    """The timed work: the inference path for a clip plus masks at the frame size for each expression."""
    from .inference.predictor import run_expressions

    out = run_expressions(model, pixels, expressions)
    size = (pixels.shape[-2], pixels.shape[-1])
    return [binary_masks(out.pred_masks[i, :, best_query(out.pred_logits[i])], size) for i in range(len(expressions))]


def count_flops(fn: Callable[[], object]) -> tuple[float, dict[str, float]]:
    """Total FLOPs of `fn()` and per outermost module entered (keyed by class name, e.g. 'CrossModalityDecoder':
    the inference path calls the model's stages, not its forward, so the stages are the outermost modules)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_module = {
        name: float(sum(counts.values()))
        for name, counts in counter.get_flop_counts().items()
        if "." not in name and name != "Global"
    }
    return float(counter.get_total_flops()), per_module


def build_model(preset: str, pruning: bool = True) -> ReferDino:
    config = get_preset(preset).with_merged_lora()
    if not pruning:
        from dataclasses import replace

        config = replace(config, query_decay=1.0)
    return ReferDino(config).eval().requires_grad_(False)


def transformers_ms_per_frame(
    height: int, width: int, expression: str, device: torch.device, dtype: torch.dtype, repeats: int
) -> float:
    """transformers' GroundingDINO (default config = grounding-dino-tiny layout, random weights), one frame per
    call as its API works (text encoder included in every call); reduced precision through torch.autocast."""
    try:
        from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise RuntimeError(f"--compare transformers needs the transformers package ({exc})") from None
    from .processing.text import tokenize

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval().to(device)
    text = tokenize([expression]).to(device)
    pixels = torch.randn(1, 3, height, width, device=device)
    inputs = dict(
        pixel_values=pixels, input_ids=text.input_ids, attention_mask=text.token_mask.long(),
        token_type_ids=torch.zeros_like(text.input_ids), pixel_mask=torch.ones(1, height, width, dtype=torch.long,
                                                                                device=device),
    )

    def run() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(**inputs)

    times = time_calls(run, device, repeats)
    del model
    return statistics.median(times) * 1000


def run_benchmark(
    preset: str = "ytvos_swint",
    frames: int = 36,
    size: int = 360,
    threads: int | None = None,
    repeats: int = 3,
    json_path: str | None = None,
    *,
    device: str = "cpu",
    dtype: str = "fp32",
    expressions: int = 1,
    pruning: bool = True,
    compare: str | None = None,
    flops: bool = True,
    use_autocast: bool = False,
    baseline: str | None = None,
    compile: bool = False,
) -> BenchmarkResult:
    """dtype: auto | fp32 | bf16 | fp16 (`referdino.precision.resolve_dtype`); the weights are cast to it, or with
    `use_autocast` stay fp32 and run under torch.autocast. baseline: also time the same model (same weights) cast
    to this dtype, interleaved with ours, and report the speed-up."""
    preset = resolve_preset(preset)
    if threads:
        torch.set_num_threads(threads)
    if not 1 <= expressions <= len(EXPRESSIONS):
        raise ValueError(f"--expressions must be between 1 and {len(EXPRESSIONS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    torch_dtype, why = resolve_dtype(dtype, dev)
    torch.manual_seed(0)
    model = build_model(preset, pruning)
    model.to(dev)
    if not use_autocast:
        cast_model(model, torch_dtype)
    if compile:  # experimental: the per-frame grounding (backbone features -> decoder) through torch.compile
        model.ground = torch.compile(model.ground)
    height, width = size, int(round(size * 16 / 9))
    pixels = torch.randn(frames, 3, height, width, device=dev)
    exprs = list(EXPRESSIONS[:expressions])

    def run(mixed: bool = use_autocast) -> None:
        with torch.inference_mode(), (autocast(dev, torch_dtype) if mixed else contextlib.nullcontext()):
            segment_clip(model, pixels, exprs)

    runs: list[Callable[[], object]] = [run]
    if baseline is not None:
        base_dtype, _ = resolve_dtype(baseline, dev)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            base_model = cast_model(build_model(preset, pruning).to(dev), base_dtype)  # the same weights

        def run_baseline() -> None:
            with torch.inference_mode():
                segment_clip(base_model, pixels, exprs)

        runs.append(run_baseline)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, *base_times = time_interleaved(runs, dev, repeats, warmup=COMPILE_WARMUP if compile else 1)
    if dev.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(dev) / 2**30, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss"
    per_frame = statistics.median(times) / frames
    result = BenchmarkResult(
        preset, str(dev), NAMES[torch_dtype], torch.get_num_threads(), frames, height, width, expressions, pruning,
        times, per_frame * 1000, 1 / per_frame, peak, kind, precision="autocast" if use_autocast else "weights",
        compiled=compile,
    )
    if compile:
        result.notes.append("model.ground wrapped with torch.compile (experimental)")
    result.notes.append(describe(torch_dtype, why))
    if base_times:
        result.baseline_dtype = NAMES[base_dtype]
        result.baseline_seconds_per_run = base_times[0]
        result.baseline_ms_per_frame = statistics.median(base_times[0]) / frames * 1000
        result.speedup = result.baseline_ms_per_frame / result.ms_per_frame
        result.speedup_best = min(base_times[0]) / min(times)
        result.notes.append("peak memory holds both models (--baseline)")
    if flops:
        # the count does not depend on the dtype; autocast is left out of it (FlopCounterMode decomposes einsum
        # below the autocast layer, which then meets mixed dtypes)
        total, per_module = count_flops(lambda: run(mixed=False))
        result.gflop_per_frame = total / frames / 1e9
        result.decoder_gflop_per_frame = per_module.get(type(model.decoder).__name__, 0.0) / frames / 1e9
        result.matmul_gflops = matmul_gflops(dev, dtype=torch_dtype)
        result.floor_ms_per_frame = result.gflop_per_frame / result.matmul_gflops * 1000
        result.floor_ratio = result.ms_per_frame / result.floor_ms_per_frame
    if compare == "transformers":
        theirs = transformers_ms_per_frame(height, width, exprs[0], dev, torch_dtype, repeats)
        result.transformers_ms_per_frame = theirs
        result.ratio = result.ms_per_frame / theirs
        result.notes.append("transformers runs one frame per call (its text encoder in every call)")
    elif compare:
        raise ValueError(f"--compare supports only 'transformers', got {compare!r}")
    if json_path:
        from .atomic import atomic_write

        atomic_write(Path(json_path), lambda p: Path(p).write_text(json.dumps(result.to_dict(), indent=2)))
    return result
