"""One training step, shared by the trainer and the training-parity check (`referdino parity --train`).

The official step (account §3; `train/README.md` of the fixtures): `outputs = model(frames, text)` with every
decoder layer supervised, `losses = criterion(outputs, targets)`, `total = sum(weight * loss)`, backward, then
`clip_grad_norm_(model.parameters(), max_norm)` before the optimizer step.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ..losses.criterion import Criterion, TargetBatch
from ..modeling.outputs import ForcedSelections, ReferDinoOutput
from ..processing.text import TokenizedText


def forward_losses(
    model: nn.Module,
    criterion: Criterion,
    frames: torch.Tensor,
    text: TokenizedText,
    targets: TargetBatch,
    *,
    autocast_dtype: torch.dtype | None = None,
    forced: ForcedSelections | None = None,
    forced_matches: dict[str, torch.Tensor] | None = None,
    record: dict | None = None,
) -> tuple[ReferDinoOutput, dict[str, torch.Tensor]]:
    """Training forward (all decoder layers) and the criterion; `losses["loss"]` is the weighted total.
    The batch padding (`targets.pixel_mask`) is masked in the grounding stages, as the official model does.

    frames (B, T, 3, H, W); autocast_dtype: run under `torch.autocast` in that dtype (None: float32);
    forced / forced_matches replay recorded discrete choices and `record` collects intermediate tensors
    (parity checks only)."""
    device_type = frames.device.type
    context = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with context:
        kwargs = {"all_layers": True, "pixel_mask": targets.pixel_mask}
        if forced is not None:
            kwargs["forced"] = forced
        if record is not None:
            kwargs["record"] = record
        outputs = model(frames, text, **kwargs)
        losses = criterion(outputs, targets, forced_matches=forced_matches)
    return outputs, losses


def backward_and_clip(
    loss: torch.Tensor, model: nn.Module, max_norm: float, scaler: torch.amp.GradScaler | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> torch.Tensor | None:
    """Backward of `loss` (scaled by `scaler` when enabled), then the global gradient-norm clip over all of
    `model`'s parameters. Returns the pre-clip global norm (None when `max_norm <= 0`)."""
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if optimizer is not None:
            scaler.unscale_(optimizer)
    else:
        loss.backward()
    if max_norm <= 0:
        return None
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
