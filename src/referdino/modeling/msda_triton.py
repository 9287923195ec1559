"""Multi-scale deformable attention as fused Triton kernels (forward and backward).

Same contract and math as `deformable_attention.ms_deform_attn_reference` (bilinear `grid_sample` per level,
zero padding, `align_corners=False`, then the attention-weighted sum), without materialising the per-level
samples:

- forward: one program per (block of queries, batch, head). For every level and point it computes the pixel
  coordinates (normalised * size - 0.5), the 4 bilinear corners and their weights, gathers the corner rows of
  the value table (masked: a corner outside the map reads zero, like `grid_sample`'s zero padding) and
  accumulates attention * bilinear weight * value in fp32 (fp64 for fp64 inputs).
- backward: the same walk with the incoming gradient row `g` of the output. Per point and corner:
  dot = <g, value[corner]>; grad_attention = sum of bilinear weight * dot; grad_location x / y = attention *
  size * sum of d(bilinear weight)/d(pixel) * dot (the same one-sided derivative as `grid_sample`'s backward at
  integer pixel coordinates); grad_value[corner] += attention * bilinear weight * g with atomic adds into an
  fp32 (fp64) buffer, cast to the value's dtype at the end. Location and attention gradients have one writer
  each, no atomics.

Triton is imported lazily and the kernels are built on first use, so importing this module never needs
Triton, and `TRITON_INTERPRET=1` set before the first call (tests, on a CPU) is honoured even if Triton was
imported earlier. `MultiScaleDeformableAttention` uses these kernels for CUDA tensors when Triton is
importable; set `REFERDINO_MSDA=reference` (or `msda_triton.ENABLED = False`) to turn them off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import torch

ENABLED = True  # module switch; the environment variable REFERDINO_MSDA=reference turns the kernels off too

_TRITON_IMPORTABLE: bool | None = None
_KERNELS: dict[bool, Any] = {}
_SHAPES_CACHE: dict[tuple[tuple[tuple[int, int], ...], torch.device], torch.Tensor] = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _triton_importable() -> bool:
    global _TRITON_IMPORTABLE
    if _TRITON_IMPORTABLE is None:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _TRITON_IMPORTABLE = True
        except Exception:  # ImportError, or a broken install
            _TRITON_IMPORTABLE = False
    return _TRITON_IMPORTABLE


def triton_available(tensor: torch.Tensor | None = None) -> bool:
    """Whether the kernels can run on `tensor`: Triton importable and the tensor on CUDA, or any device under
    the Triton interpreter (`TRITON_INTERPRET=1`, used by the tests on a CPU). Without a tensor: whether Triton
    is importable and either CUDA or the interpreter is usable."""
    if not _triton_importable():
        return False
    if _interpret():
        return True
    if tensor is None:
        return torch.cuda.is_available()
    return tensor.is_cuda


def enabled() -> bool:
    """The switch: `ENABLED` and the environment variable `REFERDINO_MSDA` (anything but `reference`/`off`)."""
    mode = os.environ.get("REFERDINO_MSDA", "auto").strip().lower()
    return ENABLED and mode not in ("reference", "off", "0", "false", "none")


def use_triton(value: torch.Tensor) -> bool:
    """The model's choice: CUDA tensors, Triton importable, not switched off. CPU tensors keep their paths."""
    return value.is_cuda and enabled() and triton_available(value)


def _kernels() -> Any:
    """(forward, backward) kernels. `triton.jit` fixes the interpreter mode when it decorates, so the kernel
    file is loaded as its own module once per mode (a test may set TRITON_INTERPRET=1 after Triton was
    imported, in the same process)."""
    mode = _interpret()
    if mode not in _KERNELS:
        name = f"{__package__}._msda_kernels" + ("_interpreted" if mode else "")
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_msda_kernels.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        _KERNELS[mode] = (module.msda_fwd_kernel, module.msda_bwd_kernel)
    return _KERNELS[mode]


def _shapes_tensor(spatial_shapes: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    """(levels, 3) int32 rows (start pixel, H, W) on `device`, cached."""
    key = (spatial_shapes, device)
    t = _SHAPES_CACHE.get(key)
    if t is None:
        rows, start = [], 0
        for h, w in spatial_shapes:
            rows.append([start, h, w])
            start += h * w
        t = torch.tensor(rows, dtype=torch.int32).to(device)
        if len(_SHAPES_CACHE) > 64:
            _SHAPES_CACHE.clear()
        _SHAPES_CACHE[key] = t
    return t


def _blocks(q: int, dim: int) -> tuple[int, int]:
    block_d = max(1, 1 << (dim - 1).bit_length())
    block_q = max(1, min(64, 2048 // block_d))
    block_q = min(block_q, max(1, 1 << (q - 1).bit_length()))
    return block_q, block_d


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(value, spatial_shapes, sampling_locations, attention_weights) -> tuple:
    tensors = (value, sampling_locations, attention_weights)
    if any(t.dtype not in _FLOATS for t in tensors) or any(t.device != value.device for t in tensors):
        raise ValueError(f"float16/bfloat16/float32/float64 tensors on one device expected, got "
                         f"{[(t.dtype, str(t.device)) for t in tensors]}")
    b, s, heads, dim = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        shape = tuple(sampling_locations.shape)
        raise ValueError(f"sampling_locations must be (B, Q, heads, levels, points, 2), got {shape}")
    _, q, _, levels, points, _ = sampling_locations.shape
    if sampling_locations.shape[:3] != (b, q, heads) or tuple(attention_weights.shape) != (b, q, heads, levels, points):
        raise ValueError(
            f"shape mismatch: value {tuple(value.shape)}, sampling_locations {tuple(sampling_locations.shape)}, "
            f"attention_weights {tuple(attention_weights.shape)}"
        )
    if len(spatial_shapes) != levels or sum(h * w for h, w in spatial_shapes) != s:
        raise ValueError(f"spatial_shapes {list(spatial_shapes)} do not match levels={levels}, S={s}")
    return b, s, heads, dim, q, levels, points


def _acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _on_device(tensor: torch.Tensor) -> Any:
    """Triton launches on the current CUDA device: make it the tensor's (a no-op context on the CPU)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _tl_dtype(dtype: torch.dtype) -> Any:
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch(kernel: Any, value: torch.Tensor, shapes: tuple[tuple[int, int], ...], locations: torch.Tensor,
            weights: torch.Tensor, outputs: tuple[torch.Tensor, ...], **constexprs: Any) -> None:
    """Launch a kernel of `_msda_kernels` over (query blocks, batch * heads) on the tensors' device; `outputs` are
    the kernel's pointers after (value, shapes, locations, weights)."""
    b, s, heads, dim = value.shape
    q, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    block_q, block_d = _blocks(q, dim)
    grid = (-(-q // block_q), b * heads)
    with _on_device(value):
        kernel[grid](
            value, _shapes_tensor(shapes, value.device), locations, weights, *outputs, s, q,
            HEADS=heads, D=dim, LEVELS=levels, POINTS=points, BLOCK_Q=block_q, BLOCK_D=block_d,
            enable_fp_fusion=True, **constexprs,
        )


class MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward kernels; gradients for value, locations and attention weights."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, sampling_locations, attention_weights):  # type: ignore[override]
        shapes = tuple((int(h), int(w)) for h, w in spatial_shapes)
        value = value.contiguous()
        sampling_locations = sampling_locations.contiguous()
        attention_weights = attention_weights.contiguous()
        b, _, heads, dim, q, _, _ = _check(value, shapes, sampling_locations, attention_weights)
        out_dtype = torch.promote_types(value.dtype, attention_weights.dtype)
        out = torch.empty(b, q, heads, dim, dtype=out_dtype, device=value.device)
        acc = _acc_dtype(value, sampling_locations, attention_weights)
        if out.numel():
            _launch(_kernels()[0], value, shapes, sampling_locations, attention_weights, (out,), ACC=_tl_dtype(acc))
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        ctx.spatial_shapes = shapes
        return out.view(b, q, heads * dim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        value, sampling_locations, attention_weights = ctx.saved_tensors
        shapes = ctx.spatial_shapes
        acc = _acc_dtype(value, sampling_locations, attention_weights)
        need_value = ctx.needs_input_grad[0]
        grad_out = grad_out.contiguous()
        grad_value = torch.zeros(value.shape, dtype=acc, device=value.device) if need_value else None
        grad_loc = torch.empty_like(sampling_locations)
        grad_attn = torch.empty_like(attention_weights)
        if grad_out.numel():
            grads = (grad_value if need_value else grad_loc, grad_loc, grad_attn)  # a placeholder pointer if unused
            _launch(_kernels()[1], value, shapes, sampling_locations, attention_weights, (grad_out, *grads),
                    ACC=_tl_dtype(acc), VALUE_GRAD=need_value)
        else:
            grad_loc.zero_()
            grad_attn.zero_()
        if grad_value is not None and grad_value.dtype != value.dtype:
            grad_value = grad_value.to(value.dtype)
        return (
            grad_value,
            None,
            grad_loc if ctx.needs_input_grad[2] else None,
            grad_attn if ctx.needs_input_grad[3] else None,
        )


def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Same contract as `ms_deform_attn_reference`: value (B, S, heads, D), spatial_shapes [(H_l, W_l)],
    sampling_locations (B, Q, heads, levels, points, 2) normalised (x, y), attention_weights
    (B, Q, heads, levels, points) -> (B, Q, heads * D), differentiable in the three tensors.

    fp32 / bf16 / fp16 inputs accumulate in fp32, fp64 inputs in fp64. Needs CUDA tensors, or the Triton
    interpreter (`TRITON_INTERPRET=1`) on any device.
    """
    if not triton_available(value):
        raise RuntimeError(
            "ms_deform_attn_triton needs Triton and CUDA tensors (or TRITON_INTERPRET=1); "
            "use ms_deform_attn_reference instead"
        )
    return MSDeformAttnFunction.apply(value, spatial_shapes, sampling_locations, attention_weights)
