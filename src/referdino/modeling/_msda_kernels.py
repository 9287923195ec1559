"""Triton kernels of `msda_triton` (multi-scale deformable attention, forward and backward).

Imports Triton at the top: `msda_triton` loads this file only when the kernels are first needed, once per
interpreter mode (`TRITON_INTERPRET` is read when `triton.jit` decorates), so do not import it directly.

Only built-in `tl` operations are used (`tl.full`, `tl.reduce`, not the `@jit` helpers `tl.zeros`, `tl.sum`):
the interpreter can run these kernels even when Triton itself was imported without `TRITON_INTERPRET`, as in a
test suite that also compiles kernels for a GPU. The sum's combine function is Triton's own where it can be
used (the interpreter recognises it and reduces with numpy; the compiler needs it compiled, not interpreted, i.e.
Triton imported without `TRITON_INTERPRET`), a local one otherwise.
"""

import triton
import triton.language as tl
from triton.runtime.jit import JITFunction


@triton.jit
def _add(a, b):
    return a + b


_TRITON_SUM = getattr(getattr(tl, "standard", None), "_sum_combine", None)
_COMPILED = isinstance(_add, JITFunction)  # this copy of the file is compiled (not interpreted)
_SUM = _TRITON_SUM if _TRITON_SUM is not None and (not _COMPILED or isinstance(_TRITON_SUM, JITFunction)) else _add


@triton.jit
def _level_point(shapes_ptr, loc_ptr, attn_ptr, k, l, qmask, ACC: tl.constexpr):
    """Shared setup of one (level, point) for a block of queries: level start / size, attention, pixel
    coordinates split into integer corner (x0, y0) and fraction (fx, fy)."""
    start = tl.load(shapes_ptr + 3 * l)
    hl = tl.load(shapes_ptr + 3 * l + 1)
    wl = tl.load(shapes_ptr + 3 * l + 2)
    a = tl.load(attn_ptr + k, mask=qmask, other=0.0).to(ACC)
    lx = tl.load(loc_ptr + 2 * k, mask=qmask, other=0.0).to(ACC)
    ly = tl.load(loc_ptr + 2 * k + 1, mask=qmask, other=0.0).to(ACC)
    wf = wl.to(ACC)
    hf = hl.to(ACC)
    x = lx * wf - 0.5
    y = ly * hf - 0.5
    # far outside (or NaN): move to -2, where both corners are outside too (keeps the int conversion sane);
    # inside (-1, size) nothing changes
    x = tl.where((x > -2.0) & (x < wf + 1.0), x, -2.0)
    y = tl.where((y > -2.0) & (y < hf + 1.0), y, -2.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    return start, hl, wl, wf, hf, a, x0, y0, fx, fy


@triton.jit
def _corner(start, hl, wl, x0, y0, fx, fy, qmask, C: tl.constexpr):
    """Corner C (0..3: x0/x0+1 by C % 2, y0/y0+1 by C // 2) of the bilinear cell: its validity, value-table row
    (pixel index of the level) and bilinear weights along x and y."""
    xc = x0 + C % 2
    yc = y0 + C // 2
    wx = fx if C % 2 == 1 else 1.0 - fx
    wy = fy if C // 2 == 1 else 1.0 - fy
    valid = qmask & (xc >= 0) & (xc < wl) & (yc >= 0) & (yc < hl)
    pix = tl.where(valid, start + yc * wl + xc, 0).to(tl.int64)
    return valid, pix, wx, wy


@triton.jit
def _program_block(Q, HEADS: tl.constexpr, D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's (batch, head), its block of queries and channels with their masks, and the (B, Q, heads)
    row of every query in the block (grid: query blocks x batch*heads)."""
    pid_q = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HEADS
    h = bh % HEADS
    qs = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    ds = tl.arange(0, BLOCK_D)
    qmask = qs < Q
    dmask = ds < D
    row = (b * Q + qs).to(tl.int64) * HEADS + h
    return b, h, qs, ds, qmask, dmask, row


@triton.jit
def msda_fwd_kernel(
    value_ptr, shapes_ptr, loc_ptr, attn_ptr, out_ptr,
    S, Q,
    HEADS: tl.constexpr, D: tl.constexpr, LEVELS: tl.constexpr, POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    b, h, qs, ds, qmask, dmask, row = _program_block(Q, HEADS, D, BLOCK_Q, BLOCK_D)
    vbase = value_ptr + b.to(tl.int64) * S * (HEADS * D) + h * D + ds[None, :]
    acc = tl.full((BLOCK_Q, BLOCK_D), 0.0, dtype=ACC)
    for l in range(LEVELS):
        for p in range(POINTS):
            k = row * (LEVELS * POINTS) + (l * POINTS + p)
            start, hl, wl, wf, hf, a, x0, y0, fx, fy = _level_point(shapes_ptr, loc_ptr, attn_ptr, k, l, qmask, ACC)
            for c in tl.static_range(4):
                valid, pix, wx, wy = _corner(start, hl, wl, x0, y0, fx, fy, qmask, c)
                v = tl.load(vbase + pix[:, None] * (HEADS * D), mask=valid[:, None] & dmask[None, :], other=0.0)
                acc += (a * wx * wy)[:, None] * v.to(ACC)
    out_ptrs = out_ptr + row[:, None] * D + ds[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=qmask[:, None] & dmask[None, :])


@triton.jit
def msda_bwd_kernel(
    value_ptr, shapes_ptr, loc_ptr, attn_ptr, grad_out_ptr,
    grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
    S, Q,
    HEADS: tl.constexpr, D: tl.constexpr, LEVELS: tl.constexpr, POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr, VALUE_GRAD: tl.constexpr,
):
    b, h, qs, ds, qmask, dmask, row = _program_block(Q, HEADS, D, BLOCK_Q, BLOCK_D)
    tile = qmask[:, None] & dmask[None, :]
    g = tl.load(grad_out_ptr + row[:, None] * D + ds[None, :], mask=tile, other=0.0).to(ACC)
    batch_head = b.to(tl.int64) * S * (HEADS * D) + h * D + ds[None, :]
    vbase = value_ptr + batch_head
    gvbase = grad_value_ptr + batch_head
    for l in range(LEVELS):
        for p in range(POINTS):
            k = row * (LEVELS * POINTS) + (l * POINTS + p)
            start, hl, wl, wf, hf, a, x0, y0, fx, fy = _level_point(shapes_ptr, loc_ptr, attn_ptr, k, l, qmask, ACC)
            ga = tl.full((BLOCK_Q,), 0.0, dtype=ACC)
            gx = tl.full((BLOCK_Q,), 0.0, dtype=ACC)
            gy = tl.full((BLOCK_Q,), 0.0, dtype=ACC)
            for c in tl.static_range(4):
                valid, pix, wx, wy = _corner(start, hl, wl, x0, y0, fx, fy, qmask, c)
                cmask = valid[:, None] & dmask[None, :]
                offs = pix[:, None] * (HEADS * D)
                v = tl.load(vbase + offs, mask=cmask, other=0.0).to(ACC)
                dot = tl.reduce(g * v, 1, _SUM)
                ga += wx * wy * dot
                # d(wx)/dx = +1 for the x0 + 1 corner, -1 for x0; same in y
                if c % 2 == 1:
                    gx += wy * dot
                else:
                    gx -= wy * dot
                if c // 2 == 1:
                    gy += wx * dot
                else:
                    gy -= wx * dot
                if VALUE_GRAD:
                    tl.atomic_add(gvbase + offs, (a * wx * wy)[:, None] * g, mask=cmask)
            tl.store(grad_attn_ptr + k, ga.to(grad_attn_ptr.dtype.element_ty), mask=qmask)
            tl.store(grad_loc_ptr + 2 * k, (a * wf * gx).to(grad_loc_ptr.dtype.element_ty), mask=qmask)
            tl.store(grad_loc_ptr + 2 * k + 1, (a * hf * gy).to(grad_loc_ptr.dtype.element_ty), mask=qmask)
