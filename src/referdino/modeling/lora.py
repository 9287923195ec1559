"""Low-rank adapters (LoRA, Hu et al. 2021) on `nn.Linear`, replacing the `loralib` dependency.

`LoRALinear` keeps the frozen weight and the adapters apart during training:
``y = x W^T + b + scale * (x A^T) B^T``. `fold_lora` folds every adapter into its weight
(``W + scale * B @ A``) and turns the module back into a plain `nn.Linear`, which is what the official
code does in place on `model.eval()`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class LoRALinear(nn.Linear):
    """`nn.Linear` with a rank-`rank` adapter; the state dict adds `lora_A` (rank, in) and `lora_B` (out, rank)."""

    def __init__(self, in_features: int, out_features: int, *, rank: int, scale: float, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank = rank
        self.scale = scale
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def folded_weight(self) -> torch.Tensor:
        return self.weight + (self.lora_B @ self.lora_A) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def effective_weight(linear: nn.Linear) -> torch.Tensor:
    """The weight a linear layer applies: folded with its adapter for a `LoRALinear`."""
    return linear.folded_weight() if isinstance(linear, LoRALinear) else linear.weight


def make_linear(in_features: int, out_features: int, *, lora_rank: int = 0, lora_scale: float = 0.0) -> nn.Linear:
    """A plain `nn.Linear`, or a `LoRALinear` when `lora_rank > 0`."""
    if lora_rank > 0:
        return LoRALinear(in_features, out_features, rank=lora_rank, scale=lora_scale)
    return nn.Linear(in_features, out_features)


def fold_lora(module: nn.Module) -> int:
    """Fold every `LoRALinear` under `module` into a plain `nn.Linear` in place; return how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, LoRALinear):
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain = plain.to(device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                plain.weight.copy_(child.folded_weight())
                if child.bias is not None:
                    plain.bias.copy_(child.bias)
            plain.weight.requires_grad_(child.weight.requires_grad)
            if plain.bias is not None:
                plain.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, plain)
            count += 1
        else:
            count += fold_lora(child)
    return count
