"""The ReferDINO training criterion (official `models/criterion.py`, account §3.5-3.6).

For each output set (the final decoder layer, each earlier decoder layer with suffix `_0`, `_1`, ..., and the
two-stage encoder proposals with suffix `_interm`) the matcher picks one query track per sample, independently
per set, and six losses are computed on it:

- `loss_ce`: sigmoid focal over *all* B*T*Q logits; the matched query is positive in the frames where the
  target is visible, everything else negative; sum / num_boxes.
- `loss_bbox`, `loss_giou`: L1 and 1 - GIoU of the matched query's boxes over *all* T frames; an invisible
  frame's target box is all zeros (as given by the data), so the loss pulls towards it, as in the official code.
- `loss_mask`: focal on the stride-4 logits vs the GT sampled at [2::4, 2::4], mean over non-padded pixels.
- `loss_dice`: Dice (+1 smoothing) over T*h*w with the predicted probability zeroed on padding.
- `loss_proj`: BoxInst projection Dice, no padding mask.

`num_boxes` is the number of visible frames in the batch (DDP-averaged, >= 1) and divides every loss.
The result is a dict of the unweighted losses plus `loss`, their weighted sum (the same six weights for
every set).

Choices where the official code has no counterpart:
- A set without masks (`LayerPrediction.masks` or `ReferDinoOutput.interm_masks` is None) gets no mask
  losses, and its matching uses only the class and box costs.
- The interm set is matched, as in the official code, on the *fixed anchors* of the selected proposals
  (`ReferDinoOutput.interm_anchor_boxes`) and its box losses use the refined encoder boxes (`interm_boxes`);
  an output without anchors is matched on `interm_boxes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..modeling.outputs import LayerPrediction, ReferDinoOutput
from .config import LossConfig
from .functional import (
    box_giou_loss,
    box_l1_loss,
    classification_loss,
    dice_loss,
    downsample_targets,
    mask_focal_loss,
    num_visible_frames,
    projection_loss,
)
from .matcher import SequenceMatcher


class TargetBatch(Protocol):
    """What the criterion reads from a batch (`referdino.data.records.ClipBatch` has these fields)."""

    masks: torch.Tensor  #: (B, T, H, W) bool, at the padded input resolution
    boxes: torch.Tensor  #: (B, T, 4) normalised cx, cy, w, h; zeros where invisible
    valid: torch.Tensor  #: (B, T) bool, target visible
    pixel_mask: torch.Tensor | None  #: (B, H, W) bool, True on padding


@dataclass
class LossTargets:
    """A plain `TargetBatch`."""

    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    pixel_mask: torch.Tensor | None = None


@dataclass
class OutputSet:
    """One supervised set of predictions."""

    suffix: str  #: "" (final), "_0".."_4" (earlier decoder layers), "_interm"
    prediction: LayerPrediction  #: the losses are computed on this
    for_matching: LayerPrediction  #: the matcher sees this (differs only for interm, see module docstring)


@dataclass
class _GridTargets:
    boxes: torch.Tensor  #: (B, T, 4)
    valid: torch.Tensor  #: (B, T) bool
    masks: torch.Tensor | None  #: (B, T, h, w) float on the prediction grid
    padding: torch.Tensor | None  #: (B, h, w) bool


class Criterion(nn.Module):
    """Matching + the six ReferDINO losses on every output set. No parameters."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = (config or LossConfig()).validate()
        self.matcher = SequenceMatcher.from_config(self.config)

    # ------------------------------------------------------------------------------------------- sets
    def output_sets(self, outputs: ReferDinoOutput) -> list[OutputSet]:
        final = LayerPrediction(outputs.pred_logits, outputs.pred_boxes, outputs.pred_masks)
        sets = [OutputSet("", final, final)]
        if self.config.aux_loss:
            sets += [OutputSet(f"_{i}", p, p) for i, p in enumerate(outputs.aux)]
        if self.config.interm_loss and outputs.interm_logits is not None and outputs.interm_boxes is not None:
            masks = outputs.interm_masks
            pred = LayerPrediction(outputs.interm_logits, outputs.interm_boxes, masks)
            anchors = outputs.interm_anchor_boxes
            match = LayerPrediction(outputs.interm_logits, outputs.interm_boxes if anchors is None else anchors, masks)
            sets.append(OutputSet("_interm", pred, match))
        return sets

    # ------------------------------------------------------------------------------------------- steps
    def _grid_targets(
        self, targets: TargetBatch, cache: dict[tuple[int, int] | None, _GridTargets], masks: torch.Tensor | None
    ) -> _GridTargets:
        size = None if masks is None else (int(masks.shape[-2]), int(masks.shape[-1]))
        if size not in cache:
            if size is None:
                cache[size] = _GridTargets(targets.boxes, targets.valid.bool(), None, None)
            else:
                tgt, pad = downsample_targets(
                    targets.masks, targets.pixel_mask, size, stride=self.config.mask_stride
                )
                cache[size] = _GridTargets(targets.boxes, targets.valid.bool(), tgt, pad)
        return cache[size]

    def match(self, prediction: LayerPrediction, grid: _GridTargets) -> torch.Tensor:
        return self.matcher(
            prediction.logits, prediction.boxes, prediction.masks,
            target_boxes=grid.boxes, valid=grid.valid, target_masks=grid.masks, padding=grid.padding,
        )

    def set_losses(
        self, prediction: LayerPrediction, indices: torch.Tensor, grid: _GridTargets, num_boxes: float
    ) -> dict[str, torch.Tensor]:
        """The six (or three, without masks) unweighted losses of one set for matched query `indices` (B,)."""
        c = self.config
        logits = prediction.logits
        b, _, q = logits.shape[:3]
        rows = torch.arange(b, device=indices.device)
        positive = nn.functional.one_hot(indices, q).bool()[:, None, :] & grid.valid[:, :, None]  # B, T, Q
        losses = {
            "loss_ce": classification_loss(
                logits, positive[..., None].expand_as(logits), num_boxes, alpha=c.focal_alpha, gamma=c.focal_gamma
            ),
        }
        boxes = prediction.boxes[rows, :, indices]  # B, T, 4
        target_boxes = grid.boxes.to(boxes.dtype)
        losses["loss_bbox"] = box_l1_loss(boxes, target_boxes, num_boxes)
        losses["loss_giou"] = box_giou_loss(boxes, target_boxes, num_boxes)
        if prediction.masks is not None and grid.masks is not None:
            masks = prediction.masks[rows, :, indices]  # B, T, h, w
            target = grid.masks.to(masks.dtype)
            padding = grid.padding
            flat_pad = None if padding is None else padding[:, None].expand_as(masks).flatten(1)
            losses["loss_mask"] = mask_focal_loss(
                masks.flatten(1), target.flatten(1), num_boxes, flat_pad, alpha=c.focal_alpha, gamma=c.focal_gamma
            )
            losses["loss_dice"] = dice_loss(masks.flatten(1), target.flatten(1), num_boxes, flat_pad)
            losses["loss_proj"] = projection_loss(masks, target, num_boxes)
        return losses

    # ------------------------------------------------------------------------------------------- forward
    def forward(
        self, outputs: ReferDinoOutput, targets: TargetBatch, forced_matches: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses named `loss_<term><suffix>` and their weighted sum `loss`.

        forced_matches: matched query indices `(B,)` per set suffix to use instead of the matcher's (parity
        checks against recorded runs replay the recorded matches)."""
        self._check_shapes(outputs, targets)
        num_boxes = num_visible_frames(targets.valid)
        cache: dict[tuple[int, int] | None, _GridTargets] = {}
        losses: dict[str, torch.Tensor] = {}
        for out_set in self.output_sets(outputs):
            pred, match = out_set.prediction, out_set.for_matching
            grid = self._grid_targets(targets, cache, pred.masks)
            if forced_matches is not None and out_set.suffix in forced_matches:
                indices = forced_matches[out_set.suffix].to(pred.logits.device)
            else:
                indices = self.match(match, grid)
            for name, value in self.set_losses(pred, indices, grid, num_boxes).items():
                losses[name + out_set.suffix] = value
        total = outputs.pred_logits.new_zeros(())
        for name, value in losses.items():
            total = total + self.config.weight_of(name) * value
        losses["loss"] = total
        return losses

    def match_all(self, outputs: ReferDinoOutput, targets: TargetBatch) -> dict[str, torch.Tensor]:
        """The matched query index `(B,)` of every output set, keyed by suffix ("" for the final layer)."""
        cache: dict[tuple[int, int] | None, _GridTargets] = {}
        return {
            s.suffix: self.match(s.for_matching, self._grid_targets(targets, cache, s.prediction.masks))
            for s in self.output_sets(outputs)
        }

    @staticmethod
    def _check_shapes(outputs: ReferDinoOutput, targets: TargetBatch) -> None:
        b, t = outputs.pred_logits.shape[:2]
        expect = {"boxes": (b, t, 4), "valid": (b, t)}
        for name, shape in expect.items():
            got = tuple(getattr(targets, name).shape)
            if got != shape:
                raise ValueError(f"targets.{name} has shape {got}, expected {shape} for outputs with B={b}, T={t}")
        if tuple(targets.masks.shape[:2]) != (b, t):
            raise ValueError(f"targets.masks has shape {tuple(targets.masks.shape)}, expected ({b}, {t}, H, W)")
