"""Multi-scale deformable attention (Zhu et al. 2021, Deformable DETR) in pure PyTorch.

Two implementations of the same sampling, equal to float rounding:

- `ms_deform_attn_reference`: bilinear `grid_sample` per level (zero padding, `align_corners=False`), then a
  weighted sum. Simple and obviously right; training uses it (its backward is the faster one) and the fast
  path is tested against it.
- the inference path of `ms_deform_attn_sample`: each output row is a weighted sum of at most
  levels * points * 4 rows of the value table (the 4 bilinear corners of every sampling point, weighted by
  attention weight * bilinear weight). That is exactly one `F.embedding_bag(mode="sum", per_sample_weights=...)`
  over a zero-bordered copy of the value laid out as (B * rows * heads, D): gather, bilinear interpolation and
  the attention-weighted sum run as one kernel. About 3x faster than the reference on a CPU.

On CUDA with Triton importable, `MultiScaleDeformableAttention` runs the fused Triton kernels of `msda_triton`
instead (forward and backward, training and inference); `REFERDINO_MSDA=reference` turns them off.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import msda_triton as _msda_triton  # fused Triton kernels (CUDA); imports Triton only when used
from .lora import make_linear


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted bilinear sampling of a multi-level value map with `grid_sample` (the reference).

    Args:
        value: (B, S, heads, D) with S = sum of H_l * W_l (levels flattened row-major, concatenated).
        spatial_shapes: [(H_l, W_l)] per level.
        sampling_locations: (B, Q, heads, levels, points, 2), normalised (x, y) in [0, 1].
        attention_weights: (B, Q, heads, levels, points), softmaxed over levels*points.
    Returns:
        (B, Q, heads * D).
    """
    b, _, heads, dim = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        value_l = value_list[lvl].flatten(2).transpose(1, 2).reshape(b * heads, dim, h, w)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*heads, Q, P, 2)
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # (B*heads, D, Q)
    return out.view(b, heads * dim, q).transpose(1, 2)


def _records_grad(*tensors: torch.Tensor) -> bool:
    """Autograd will record ops on these: the embedding_bag path (in-place, inference only) must not run."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _level_sizes(spatial_shapes: list[tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    """(levels, 2) tensor of (W, H) per level, in `like`'s dtype (at least float32: sampling locations of a bf16 or
    fp16 model are computed in float32) and device."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    return torch.tensor([[w, h] for h, w in spatial_shapes], dtype=dtype, device=like.device)


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Same contract as `ms_deform_attn_reference`, computed as one `embedding_bag` (see the module docstring).

    When gradients are needed it falls back to the reference: `embedding_bag`'s backward for the value table
    (a sort and a segmented reduction) is slower than `grid_sample`'s.
    """
    if _records_grad(value, sampling_locations, attention_weights):
        return ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)
    size = _level_sizes(spatial_shapes, sampling_locations)
    pixels = sampling_locations * size[:, None] - 0.5  # align_corners=False: pixel i is centred at i + 0.5
    return _ms_deform_attn_bag(value, spatial_shapes, pixels, attention_weights)


def _ms_deform_attn_bag(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    pixel_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """`pixel_locations` (B, Q, heads, levels, points, 2) are x, y in pixels of each level (pixel i centred at
    i + 0.5, i.e. normalised * size - 0.5). Every level's map gets a zero border (1 before, 2 after) and the pixel coordinates are clamped to
    [-1, size]: a corner outside the map then reads a zero of the border, exactly like `grid_sample`'s zero
    padding (a point clamped at -1 or at `size` has all its weight on border pixels), with no validity masks.

    The elementwise work is laid out (bags, corner, levels * points) with per-(level, point) constants, so every
    op runs over long contiguous rows; row indices are computed in floating point (exact below 2^24, float64
    beyond) and converted once.

    A bf16/fp16 `value` is gathered from a float32 table with float32 weights (the bilinear weights stay exact,
    the sum accumulates in fp32, and on a CPU float32 `embedding_bag` is faster than bf16); the result is cast back.
    """
    b, s, heads, dim = value.shape
    _, q, _, levels, points, _ = pixel_locations.shape
    device = value.device
    padded = [(h + 3, w + 3) for h, w in spatial_shapes]
    rows = sum(h * w for h, w in padded)
    table = value.new_empty(b, rows, heads * dim, dtype=torch.promote_types(value.dtype, torch.float32))
    start = 0
    for m, (h, w), (hp, wp) in zip(value.split([h * w for h, w in spatial_shapes], dim=1), spatial_shapes, padded):
        region = table[:, start : start + hp * wp].view(b, hp, wp, heads * dim)
        region[:, :1].zero_()
        region[:, h + 1 :].zero_()
        region[:, 1 : h + 1, :1].zero_()
        region[:, 1 : h + 1, w + 1 :].zero_()
        region[:, 1 : h + 1, 1 : w + 1] = m.reshape(b, h, w, heads * dim)
        start += hp * wp
    ftype = torch.float32 if b * rows * heads < 2**24 else torch.float64
    lp = levels * points

    def per_point(values: list[float]) -> torch.Tensor:  # one value per level -> (levels * points,)
        return torch.tensor(values, dtype=ftype, device=device).repeat_interleave(points)

    # planar pixel coordinates x, y (bags, levels * points), clamped to [-1, size]
    planar = pixel_locations.reshape(-1, lp, 2).permute(2, 0, 1)
    x, y = torch.empty(planar.shape, dtype=ftype, device=device).copy_(planar)  # a copy: updated in place below
    width, height = per_point([w for _, w in spatial_shapes]), per_point([h for h, _ in spatial_shapes])
    x = torch.minimum(x.clamp_(min=-1.0), width)
    y = torch.minimum(y.clamp_(min=-1.0), height)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x.sub_(x0), y.sub_(y0)
    widths = per_point([w for _, w in padded])
    starts = per_point([float(sum(h * w for h, w in padded[:i])) for i in range(levels)])
    # row of corner (x0, y0) in the table viewed as (B * rows * heads, dim); +1 in x and y for the border
    base = torch.addcmul((starts + widths + 1) * heads, y0, widths * heads).add_(x0, alpha=heads).view(b, q, heads, lp)
    batch_head = torch.arange(b, dtype=ftype, device=device).view(b, 1, 1) * (rows * heads) + torch.arange(
        heads, dtype=ftype, device=device
    )
    itype = torch.int32 if b * rows * heads < 2**31 else torch.long
    base = base.add_(batch_head.view(b, 1, heads, 1)).to(itype).view(-1, 1, lp)
    # the 4 corners (y0 x0, y0 x1, y1 x0, y1 x1) are at +0, +1, +W, +W+1 pixels
    corners = (torch.stack([torch.zeros_like(widths), torch.ones_like(widths), widths, widths + 1]) * heads).to(itype)
    index = base + corners  # (bags, 4, lp)
    a = attention_weights.reshape(-1, lp).to(ftype)
    a1 = a * fy
    a0 = a - a1
    gx = 1 - fx
    weight = torch.empty(a.shape[0], 4, lp, dtype=ftype, device=device)
    torch.mul(a0, gx, out=weight[:, 0])
    torch.mul(a0, fx, out=weight[:, 1])
    torch.mul(a1, gx, out=weight[:, 2])
    torch.mul(a1, fx, out=weight[:, 3])
    bags = a.shape[0]
    out = F.embedding_bag(
        index.view(bags, -1), table.view(-1, dim), per_sample_weights=weight.view(bags, -1).to(table.dtype), mode="sum"
    )
    return out.view(b, q, heads * dim).to(value.dtype)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention module (keys `sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`).

    References are either points (B, Q, levels, 2) in normalised (x, y), with offsets in pixels of each level,
    or boxes (B, Q, levels, 4) (cx, cy, w, h), with offsets scaled by half the box size / points.
    """

    def __init__(
        self, d_model: int, *, num_heads: int, num_levels: int, num_points: int, lora_rank: int = 0, lora_scale: float = 0.0
    ) -> None:
        super().__init__()
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        lin = dict(lora_rank=lora_rank, lora_scale=lora_scale)
        self.sampling_offsets = make_linear(d_model, num_heads * num_levels * num_points * 2, **lin)
        self.attention_weights = make_linear(d_model, num_heads * num_levels * num_points, **lin)
        self.value_proj = make_linear(d_model, d_model, **lin)
        self.output_proj = make_linear(d_model, d_model, **lin)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * torch.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        for i in range(self.num_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        for lin in (self.attention_weights,):
            nn.init.constant_(lin.weight, 0.0)
            nn.init.constant_(lin.bias, 0.0)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.constant_(lin.bias, 0.0)

    def locations(
        self, reference: torch.Tensor, offsets: torch.Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Normalised sampling locations (B, Q, heads, levels, points, 2) of the official formula."""
        if reference.shape[-1] == 2:
            return reference[:, :, None, :, None, :] + offsets / _level_sizes(spatial_shapes, offsets)[:, None]
        ref = reference[:, :, None, :, None, :]
        return ref[..., :2] + offsets / self.num_points * ref[..., 2:] * 0.5

    def forward(
        self,
        query: torch.Tensor,
        reference: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
        value_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query (B, Q, C), reference (B, Q, levels, 2|4), value (B, S, C) -> (B, Q, C)."""
        b, q, _ = query.shape
        v = self.value_proj(value)
        if value_padding_mask is not None:
            v = v.masked_fill(value_padding_mask[..., None], 0.0)
        v = v.view(b, v.shape[1], self.num_heads, -1)
        shape = (b, q, self.num_heads, self.num_levels, self.num_points)
        offsets = self.sampling_offsets(query).view(*shape, 2)
        weights = self.attention_weights(query).view(b, q, self.num_heads, -1).softmax(-1).view(shape)
        if _msda_triton.use_triton(v):  # CUDA + Triton, training and inference; REFERDINO_MSDA=reference: off
            locations = self.locations(reference, offsets, spatial_shapes)
            out = _msda_triton.ms_deform_attn_triton(v, spatial_shapes, locations, weights)
        elif _records_grad(v, offsets, weights):
            out = ms_deform_attn_reference(v, spatial_shapes, self.locations(reference, offsets, spatial_shapes), weights)
        else:  # inference: straight to pixel coordinates (one broadcast op instead of three)
            size = _level_sizes(spatial_shapes, offsets)
            if reference.shape[-1] == 2:
                pixels = (reference * size - 0.5)[:, :, None, :, None, :] + offsets
            else:
                ref = reference[:, :, None, :, None, :]
                start = ref[..., :2] * size[:, None] - 0.5
                pixels = torch.addcmul(start, offsets, ref[..., 2:] * (0.5 / self.num_points) * size[:, None])
            out = _ms_deform_attn_bag(v, spatial_shapes, pixels, weights)
        return self.output_proj(out)
