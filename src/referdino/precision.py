"""Inference precision policy: which dtype a run uses (`--dtype auto|fp32|bf16|fp16`) and how the model gets there.

How reduced precision runs (chosen by measurement, `benchmarks/RESULTS.md`, 2026-12-05): the weights are cast
(`cast_model`: `model.to(bfloat16)`) and the activations stay in that dtype from the backbone to the mask logits,
with explicit float32 islands in the model code. `torch.autocast` on fp32 weights was measured too
(`referdino benchmark --autocast`): it re-casts every weight (inference weights need no grad, so autocast's cast
cache does not apply) and the fp32 activations around every matmul. Full Swin-T, 4 frames 360x640, 2 threads of an
AMX CPU, runs interleaved in one process: fp32 906-933 ms/frame, cast bf16 weights 428-443, autocast 491-530; the
cast model also holds half the weight memory. Autocast is kept here only for that comparison.

What stays float32 in a reduced-precision model (each island is a cast in the model code, all cheap):
- sampling locations of deformable attention and everything in box space: reference points, anchors, boxes in
  inverse-sigmoid space and their refinement, the sigmoid of boxes (a bf16 pixel coordinate of 100.5 would be off
  by up to 0.5 pixel; a box logit carries ~3 significant digits in bf16);
- the bilinear corner weights of deformable attention (computed in fp32 from the fp32 locations);
- the discrete decisions and what feeds them: query-selection scores (top-900 of ~19k tokens: bf16 rounding would
  make ties), the pruning confidences, the class logits that choose the referred query;
- the tracker: cosine costs, Hungarian matching and the memory carried across frames and windows;
- the final mask upsampling and threshold (mask logits are upsampled in fp32; a bf16 logit keeps its sign, so the
  threshold itself is exact);
- position embeddings (sin/cos computed in fp32, then cast to the activation dtype);
- the temporal decoder's motion encodings (`temporal_position=time_box`, `motion_logit`): box offsets and their
  small MLPs;
- softmax and LayerNorm/GroupNorm statistics: PyTorch's CPU and CUDA kernels accumulate them in fp32 for bf16/fp16
  inputs (no cast needed).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", *DTYPES)
NAMES = {v: k for k, v in DTYPES.items()}
DTYPE_HELP = ("compute dtype (default auto: bf16 on a GPU or CPU with bf16 matrix units, else fp32; the choice "
              "and why are printed)")
#: /proc/cpuinfo flags of x86 bf16 matrix / dot-product instructions, best first
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The `flags` of /proc/cpuinfo (empty where there is none, e.g. macOS or Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _torch_cpu_bf16() -> bool:
    """PyTorch's own probe (cpuinfo library), where /proc/cpuinfo is not available."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(torch.cpu, p)()) for p in probes if hasattr(torch.cpu, p))
    except Exception:  # pragma: no cover - private API
        return False


def cpu_bf16_support() -> str | None:
    """The bf16 matrix instructions this CPU has (a flag name), or None. Never assumed: /proc/cpuinfo flags first,
    then PyTorch's probe (`torch.cpu._is_amx_tile_supported` / `_is_avx512_bf16_supported`)."""
    flags = _cpu_flags()
    for flag in CPU_BF16_FLAGS:
        if flag in flags:
            return flag
    if not flags and _torch_cpu_bf16():
        return "amx_bf16/avx512_bf16 (torch.cpu probe)"
    return None


def parse_dtype(name: str | torch.dtype | None) -> str:
    """'auto' | 'fp32' | 'bf16' | 'fp16' from a name or a torch dtype (None: 'auto')."""
    if name is None:
        return "auto"
    if isinstance(name, torch.dtype):
        if name not in NAMES:
            raise ValueError(f"unsupported dtype {name}; use one of {', '.join(CHOICES)}")
        return NAMES[name]
    key = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}.get(name, name)
    if key not in CHOICES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(CHOICES)}")
    return key


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) for `--dtype name` on `device`.

    auto: bf16 on a CUDA device that supports it (compute capability >= 8.0) and on a CPU with bf16 matrix
    instructions (AMX-BF16 or AVX512-BF16), else fp32. An explicit name is used as given; the reason then says when
    it is likely to be slow (bf16/fp16 on a CPU without matrix units for it)."""
    key = parse_dtype(name)
    dev = torch.device(device)
    if key != "auto":
        dtype, why = DTYPES[key], "requested"
        if dev.type == "cpu" and key == "bf16" and cpu_bf16_support() is None:
            why += "; this CPU has no bf16 matrix instructions, so bf16 may be slower than fp32"
        elif dev.type == "cpu" and key == "fp16":
            why += "; fp16 matmuls on a CPU are emulated on most machines (bf16 is the CPU format)"
        return dtype, why
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return torch.float32, "auto: no CUDA device available"
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16, f"auto: {torch.cuda.get_device_name(dev)} supports bf16"
        return torch.float32, f"auto: {torch.cuda.get_device_name(dev)} has no native bf16"
    if dev.type == "cpu":
        flag = cpu_bf16_support()
        if flag is not None:
            return torch.bfloat16, f"auto: this CPU has bf16 matrix instructions ({flag})"
        return torch.float32, "auto: this CPU has no bf16 matrix instructions (no amx_bf16 / avx512_bf16)"
    return torch.float32, f"auto: reduced precision is not set up for {dev.type} devices"


def describe(dtype: torch.dtype, why: str) -> str:
    """The one line the commands print."""
    hint = "" if dtype == torch.float32 else "; --dtype fp32 for full precision"
    return f"precision: {NAMES.get(dtype, str(dtype))} ({why}{hint})"


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model computes in: its `dtype` property (ReferDino), else that of its first floating weight
    (float32 for a model without floating parameters)."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every weight (in place) so that the model computes in `dtype`; the float32 islands are casts in the
    model code (see this module's docstring). Returns the model."""
    return model.to(dtype)


def autocast(device: str | torch.device, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """`torch.autocast` to `dtype` on `device` (a no-op context for fp32): for running fp32 weights in mixed
    precision, which `referdino benchmark --autocast` measures against casting the weights."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
