"""Swin Transformer backbone (Liu et al. 2021) with GroundingDINO's padding behaviour.

Parameter names follow the upstream layout (`patch_embed`, `layers.{s}.blocks.{b}`, `layers.{s}.downsample`,
`norm{s}`) so converting official weights is a rename of the prefix only. Behaviour that matters for parity:
windows pad with zeros *after* the first LayerNorm and padded keys are not masked; every odd block uses
shifted windows whatever the resolution; patch merging pads odd sizes by one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import SwinConfig
from .drop_path import drop_path
from .row_chunks import rowwise


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the (2w-1)^2 relative-bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B * nW, window^2, C), windows row-major, tokens row-major inside."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


def shift_mask(hp: int, wp: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask (nW, window^2, window^2): 0 inside a region, -100 across regions of the rolled grid."""
    labels = torch.zeros(1, hp, wp, 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in cuts:
        for ws in cuts:
            labels[:, hs, ws, :] = region
            region += 1
    lw = _partition(labels, window).squeeze(-1)
    diff = lw[:, None, :] - lw[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B * nW, n, C) windows; mask (nW, n, n) additive shift mask or None."""
        bw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if mask is None:
            additive = bias[None]
        else:  # windows of one image share the shift mask
            nw = mask.shape[0]
            additive = (bias[None] + mask[:, None]).repeat(bw // nw, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive.to(q.dtype), scale=self.scale)
        return self.proj(out.reshape(bw, heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class SwinMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop: float = 0.0) -> None:
        super().__init__()
        self.window, self.shift, self.drop = window, shift, drop
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwinMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, c = x.shape
        win = self.window
        y = self.norm1(x).view(b, h, w, c)
        hp, wp = -(-h // win) * win, -(-w // win) * win
        y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h))
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = _merge(self.attn(_partition(y, win), mask if self.shift else None), win, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(y[:, :h, :w, :].reshape(b, h * w, c), self.drop, self.training)
        if self.drop and self.training:
            return x + drop_path(self.mlp(self.norm2(x)), self.drop, self.training)
        return rowwise(self._mlp_residual, x)

    def _mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, downsample: bool,
        drops: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.window = window
        drops = drops or [0.0] * depth
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, drops[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        win = self.window
        mask = shift_mask(-(-h // win) * win, -(-w // win) * win, win, win // 2, x.device).to(x.dtype)
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        x = F.pad(x, (0, (p - x.shape[-1] % p) % p, 0, (p - x.shape[-2] % p) % p))
        return self.proj(x)


class SwinBackbone(nn.Module):
    """Returns the 4 stage outputs (after `norm0..norm3`) as (N, C_s, H_s, W_s) maps, strides 4 to 32."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        chans = config.stage_channels
        n = len(config.depths)
        total = sum(config.depths)
        rates = [config.drop_path * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(config.depths[:i]) for i in range(n)]
        self.layers = nn.ModuleList(
            SwinStage(
                chans[i], config.depths[i], config.num_heads[i], config.window_size, config.mlp_ratio, i < n - 1,
                rates[starts[i] : starts[i] + config.depths[i]],
            )
            for i in range(n)
        )
        for i, c in enumerate(chans):
            self.add_module(f"norm{i}", nn.LayerNorm(c))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)
        h, w = x.shape[-2:]
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        outs = []
        for i, stage in enumerate(self.layers):
            x = stage(x, h, w)
            out = getattr(self, f"norm{i}")(x)
            outs.append(out.view(-1, h, w, out.shape[-1]).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return outs
