"""The fused Triton deformable-attention kernels (`msda_triton`) equal the `grid_sample` reference: the output
and the gradients of value, sampling locations and attention weights, in fp64, fp32, bf16 and fp16.

They run on the CPU under the Triton interpreter: every test sets `TRITON_INTERPRET=1` for its own duration
only. Triton is imported here first, in its ordinary (compiling) mode, so that whatever else runs in the same
process keeps a normal Triton; the kernels use only Triton built-ins, which the interpreter patches at launch
whatever the import order, and `msda_triton` loads its kernel file once per mode (see its docstring).
The whole file takes about 6 s on one CPU thread (the interpreter runs each program in numpy; compiling for
sm_90 without a GPU, the last test, is half of it).
"""

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton cannot be imported (dev extra: pip install -e '.[dev]')")

from referdino.modeling import msda_triton  # noqa: E402
from referdino.modeling.deformable_attention import (  # noqa: E402
    MultiScaleDeformableAttention,
    ms_deform_attn_reference,
)
from referdino.modeling.msda_triton import ms_deform_attn_triton  # noqa: E402

SHAPES = [(5, 7), (3, 4)]

# normalised (x, y): exactly on the borders (pixel -0.5 and size - 0.5), far outside, and on level 1 (W = 4)
# x pixels that are exactly integers (-1, 0, 4 = W): dyadic, so the kernel and grid_sample see the same number
EDGES = [
    [0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.3], [-3.0, 0.5], [0.5, 4.5],
    [-0.125, 0.4], [0.125, 0.6], [1.125, 0.2], [0.375, 1.0], [1.0, -0.2], [-0.2, 1.2],
]


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("REFERDINO_MSDA", raising=False)


def _inputs(seed: int, *, batch=2, queries=5, heads=2, dim=8, points=3, shapes=SHAPES):
    """fp64 value, locations (uniform in [-0.2, 1.2] with the EDGES planted on both levels), attention."""
    g = torch.Generator().manual_seed(seed)
    levels = len(shapes)
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, generator=g, dtype=torch.float64)
    loc = torch.rand(batch, queries, heads, levels, points, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    edges = torch.tensor(EDGES, dtype=torch.float64)
    for b, lvl in ((0, levels - 1), (batch - 1, 0)):
        flat = loc[b, :, :, lvl].reshape(-1, 2).clone()
        n = min(len(edges), flat.shape[0])
        flat[:n] = edges[:n]
        loc[b, :, :, lvl] = flat.view(queries, heads, points, 2)
    attn = torch.rand(batch, queries, heads, levels * points, generator=g, dtype=torch.float64).softmax(-1)
    return value, loc, attn.view(batch, queries, heads, levels, points)


def _run(fn, shapes, tensors, grad_out, needs=(True, True, True)):
    """Output and the gradients (None where not needed) of sum(out * grad_out)."""
    leaves = [t.detach().clone().requires_grad_(n) for t, n in zip(tensors, needs)]
    out = fn(leaves[0], shapes, leaves[1], leaves[2])
    wanted = [t for t in leaves if t.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, grad_out.to(out.dtype)))
    return out, [next(grads) if t.requires_grad else None for t in leaves]


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """max |actual - expected| <= rel * max |expected| (a scale-aware bound, same for every element)."""
    assert actual.shape == expected.shape, what
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= rel * scale + 1e-300, f"{what}: max|diff| {err:.3g} > {rel:g} * max|ref| {scale:.3g}"


def _check(tensors, dtype, ref_dtype, rel, *, shapes=SHAPES, needs=(True, True, True), seed=1):
    """Kernel on `tensors` cast to `dtype` vs the reference on the same (rounded) numbers in `ref_dtype`."""
    low = [t.to(dtype) for t in tensors]
    ref_in = [t.to(ref_dtype) for t in low]
    b, q, heads = tensors[1].shape[:3]
    grad_out = torch.randn(b, q, heads * tensors[0].shape[-1], generator=torch.Generator().manual_seed(seed))
    grad_out = grad_out.to(tensors[0].device, dtype)
    out, grads = _run(ms_deform_attn_triton, shapes, low, grad_out, needs)
    ref, ref_grads = _run(ms_deform_attn_reference, shapes, ref_in, grad_out.to(ref_dtype), needs)
    assert out.dtype == dtype
    _close(out, ref, rel, "output")
    for name, t, g, rg in zip(("value", "sampling_locations", "attention_weights"), low, grads, ref_grads):
        if rg is None:
            assert g is None, name
            continue
        assert g.dtype == t.dtype, name
        _close(g, rg, rel, f"grad {name}")


def test_fp64_matches_reference() -> None:
    """Native fp64 (fp64 accumulation and atomics): equal to rounding."""
    _check(_inputs(0), torch.float64, torch.float64, 1e-12)


def test_fp32_matches_fp64_reference() -> None:
    """fp32 inputs, fp32 accumulation, against the fp64 reference on the same fp32 numbers."""
    _check(_inputs(2, queries=6, points=4), torch.float32, torch.float64, 2e-6)


@pytest.mark.parametrize("dtype, rel", [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
def test_half_precision_matches_fp32_reference(dtype: torch.dtype, rel: float) -> None:
    """bf16 / fp16 inputs (fp32 accumulation, one rounding of each result): dtypes kept, loose tolerance.
    D = 12 is not a power of two: the channel mask of the kernels is exercised."""
    _check(_inputs(3, batch=1, queries=6, dim=12, points=2), dtype, torch.float32, rel)


def test_partial_gradients_single_level() -> None:
    """One level, value without gradient (no atomics), then attention weights only (the mask decoder's use)."""
    shapes = [(5, 7)]
    tensors = _inputs(4, batch=1, queries=3, dim=16, points=4, shapes=shapes)
    _check(tensors, torch.float64, torch.float64, 1e-12, shapes=shapes, needs=(False, True, True))
    _check(tensors, torch.float32, torch.float64, 2e-6, shapes=shapes, needs=(False, False, True))


def test_module_runs_the_kernels(monkeypatch) -> None:
    """`MultiScaleDeformableAttention` takes the kernels when `use_triton` says so (CUDA in real use; here the
    interpreter on the CPU), in training and inference, and equals its reference path
    (REFERDINO_MSDA=reference) in the output and every parameter gradient."""
    torch.manual_seed(0)
    m = MultiScaleDeformableAttention(16, num_heads=2, num_levels=2, num_points=2).double()
    with torch.no_grad():  # non-trivial offsets and attention weights
        for p in (m.sampling_offsets.weight, m.attention_weights.weight):
            p.normal_(0, 0.5)
    g = torch.Generator().manual_seed(1)
    s = sum(h * w for h, w in SHAPES)
    query = torch.randn(1, 4, 16, generator=g, dtype=torch.float64)
    points = torch.rand(1, 4, 2, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([points, 0.2 + 0.3 * torch.rand(1, 4, 2, 2, generator=g, dtype=torch.float64)], -1)
    value = torch.randn(1, s, 16, generator=g, dtype=torch.float64)

    calls = []

    def counted(*args):
        calls.append(1)
        return ms_deform_attn_triton(*args)

    monkeypatch.setattr(msda_triton, "use_triton", lambda v: msda_triton.enabled() and msda_triton.triton_available(v))
    monkeypatch.setattr(msda_triton, "ms_deform_attn_triton", counted)

    def train_step():
        m.zero_grad()
        out = m(query, points, value, SHAPES)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
        return out.detach(), [p.grad.clone() for p in m.parameters()]

    out, grads = train_step()
    with torch.no_grad():
        infer = m(query, boxes, value, SHAPES)
    assert len(calls) == 2
    monkeypatch.setenv("REFERDINO_MSDA", "reference")
    ref_out, ref_grads = train_step()
    with torch.no_grad():
        ref_infer = m(query, boxes, value, SHAPES)
    assert len(calls) == 2
    _close(out, ref_out, 1e-12, "training output")
    _close(infer, ref_infer, 1e-6, "inference output")  # the embedding_bag path computes coordinates in fp32
    for (name, _), a, b in zip(m.named_parameters(), grads, ref_grads):
        _close(a, b, 1e-11, f"grad {name}")


def test_switches(monkeypatch) -> None:
    """CPU tensors keep their paths (kernels only for CUDA), the env variable and the module flag turn the kernels
    off, and the kernels refuse a CPU tensor outside the interpreter."""
    cpu = torch.zeros(1)
    assert msda_triton.triton_available(cpu)  # the interpreter is on
    assert not msda_triton.use_triton(cpu)
    assert msda_triton.enabled()
    monkeypatch.setenv("REFERDINO_MSDA", "reference")
    assert not msda_triton.enabled()
    monkeypatch.delenv("REFERDINO_MSDA")
    monkeypatch.setattr(msda_triton, "ENABLED", False)
    assert not msda_triton.enabled()
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not msda_triton.triton_available(cpu)
    value, loc, attn = _inputs(0, batch=1, queries=1)
    with pytest.raises(RuntimeError, match="CUDA"):
        ms_deform_attn_triton(value, SHAPES, loc, attn)


def test_kernels_compile_for_cuda(monkeypatch, tmp_path) -> None:
    """The interpreter does not type-check like the compiler: compile both kernels (fp32, all features on) for an
    H100 (sm_90) through Triton's own ptxas, no GPU needed. About 3 s."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    fwd, bwd = msda_triton._kernels()
    const = dict(HEADS=8, D=32, LEVELS=4, POINTS=4, BLOCK_Q=64, BLOCK_D=32, ACC=triton.language.float32)
    cases = [
        (fwd, ["*fp32", "*i32", "*fp32", "*fp32", "*fp32", "i32", "i32"], const),
        (bwd, ["*fp32", "*i32"] + ["*fp32"] * 6 + ["i32", "i32"], dict(const, VALUE_GRAD=True)),
    ]
    for kernel, pointer_types, constexprs in cases:
        names = kernel.arg_names
        signature = dict(zip(names, pointer_types + ["constexpr"] * len(constexprs)))
        assert len(signature) == len(names)
        src = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constexprs.items()})
        compiled = compile(src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": True})
        assert compiled.asm["cubin"]


def test_kernels_on_cuda_match_reference(monkeypatch, device) -> None:
    """`pytest --device cuda` only: the compiled kernels on the real GPU (no interpreter) equal the `grid_sample`
    reference on the same device, output and gradients, in fp32 (against fp64) and bf16 (against fp32), at a
    model-like size (8 heads, 32 channels, 4 levels, 4 points)."""
    if device.type != "cuda":
        pytest.skip("needs --device cuda (the CPU runs these kernels under the interpreter, above)")
    monkeypatch.delenv("TRITON_INTERPRET")
    shapes = [(23, 40), (12, 20), (6, 10), (3, 5)]
    tensors = [t.to(device) for t in _inputs(5, batch=2, queries=300, heads=8, dim=32, points=4, shapes=shapes)]
    assert msda_triton.use_triton(tensors[0].float())
    _check(tensors, torch.float32, torch.float64, 2e-5, shapes=shapes)
    _check(tensors, torch.bfloat16, torch.float32, 3e-2, shapes=shapes)
