"""Sequence matcher: for each sample, the one query track (same index in every frame) of lowest cost.

Each sample has exactly one ground-truth track (the referred object), so the official "HungarianMatcher"
(`models/matcher.py`) is in fact a min-cost selection over the Q queries; no assignment problem is solved.
Account §3.5. All costs are per sample and per query, `(B, Q)`:

- class: `focal(positive) - focal(negative)` of the query's logit (alpha 0.25, gamma 2, 1e-8 inside the logs),
  averaged over the frames where the target is visible;
- bbox: L1 distance of cx,cy,w,h, averaged over all T frames (invisible frames have zero target boxes);
- giou: `-GIoU` with the matcher's own epsilons (`official_matcher_giou`), averaged over all T frames;
- mask: sigmoid focal, mean over T*h*w;
- dice: `-Dice` with +1 smoothing over T*h*w;
- proj: `-(Dice of the max-projections along H + along W) / 2`.

Before the mask costs the predicted *logits* on padded pixels are set to 0 (probability 0.5), as in the
official matcher; the padded pixels stay in the means and sums.
"""

from __future__ import annotations

import torch
from torch import nn

from .boxes import box_cxcywh_to_xyxy, official_matcher_giou
from .config import LossConfig
from .functional import dice_coefficient, focal_class_cost, max_projections, sigmoid_focal_loss


class SequenceMatcher(nn.Module):
    """Picks, per sample, the query index with the lowest weighted total cost (ties: lowest index)."""

    def __init__(
        self,
        cost_class: float = 1.0,
        cost_bbox: float = 1.0,
        cost_giou: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        cost_proj: float = 1.0,
        *,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.cost_proj = cost_proj
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, config: LossConfig) -> "SequenceMatcher":
        c = config.costs
        return cls(
            c.cls, c.bbox, c.giou, c.mask, c.dice, c.proj,
            focal_alpha=config.focal_alpha, focal_gamma=config.focal_gamma,
        )

    @property
    def weights(self) -> dict[str, float]:
        return {
            "class": self.cost_class, "bbox": self.cost_bbox, "giou": self.cost_giou,
            "mask": self.cost_mask, "dice": self.cost_dice, "proj": self.cost_proj,
        }

    @torch.no_grad()
    def costs(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None,
        *,
        target_boxes: torch.Tensor,
        valid: torch.Tensor,
        target_masks: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted cost terms, each `(B, Q)`. Terms with weight 0, and the mask terms when `masks` or
        `target_masks` is None, are left out.

        logits (B, T, Q, 1); boxes (B, T, Q, 4) cx,cy,w,h; masks (B, T, Q, h, w) logits or None;
        target_boxes (B, T, 4); valid (B, T) bool; target_masks (B, T, h, w) on the same grid as `masks`;
        padding (B, h, w) bool, True on padded pixels, or None.
        """
        out: dict[str, torch.Tensor] = {}
        valid = valid.bool()
        if self.cost_class:
            per_frame = focal_class_cost(logits[..., 0], alpha=self.focal_alpha, gamma=self.focal_gamma)  # B,T,Q
            w = valid.to(per_frame.dtype)[..., None]
            # Mean over visible frames. A sample with no visible frame (the official code would crash; its
            # datasets resample such clips) gets class cost 0 for every query.
            out["class"] = (per_frame * w).sum(1) / w.sum(1).clamp(min=1)
        tgt = target_boxes[:, :, None, :].to(boxes.dtype)  # B,T,1,4
        if self.cost_bbox:
            out["bbox"] = (boxes - tgt).abs().sum(-1).mean(1)
        if self.cost_giou:
            giou = official_matcher_giou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt))
            out["giou"] = -giou.mean(1)
        if masks is not None and target_masks is not None and (self.cost_mask or self.cost_dice or self.cost_proj):
            out.update(self._mask_costs(masks, target_masks.to(masks.dtype), padding))
        return out

    def _mask_costs(
        self, masks: torch.Tensor, target_masks: torch.Tensor, padding: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        # One sample at a time: the (Q, T, h, w) broadcasts would otherwise be B times larger.
        per_sample: dict[str, list[torch.Tensor]] = {"mask": [], "dice": [], "proj": []}
        for b in range(masks.shape[0]):
            src = masks[b].transpose(0, 1)  # Q, T, h, w
            if padding is not None:
                src = src.masked_fill(padding[b], 0.0)
            tgt = target_masks[b]  # T, h, w
            if self.cost_mask:
                focal = sigmoid_focal_loss(src, tgt.expand_as(src), alpha=self.focal_alpha, gamma=self.focal_gamma)
                per_sample["mask"].append(focal.flatten(1).mean(1))
            if self.cost_dice:
                per_sample["dice"].append(-dice_coefficient(src.sigmoid().flatten(1), tgt.flatten()[None]))
            if self.cost_proj:
                src_h, src_w = max_projections(src)
                tgt_h, tgt_w = max_projections(tgt)
                proj = dice_coefficient(src_h.sigmoid(), tgt_h[None]) + dice_coefficient(src_w.sigmoid(), tgt_w[None])
                per_sample["proj"].append(-0.5 * proj)
        return {k: torch.stack(v) for k, v in per_sample.items() if v}

    @torch.no_grad()
    def total_cost(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None,
        *,
        target_boxes: torch.Tensor,
        valid: torch.Tensor,
        target_masks: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted sum of the `costs` terms, `(B, Q)`. Arguments as in `costs`."""
        terms = self.costs(
            logits, boxes, masks,
            target_boxes=target_boxes, valid=valid, target_masks=target_masks, padding=padding,
        )
        return self.combine(terms, logits.new_zeros(logits.shape[0], logits.shape[2]))

    def combine(self, terms: dict[str, torch.Tensor], zero: torch.Tensor) -> torch.Tensor:
        """The weighted sum of `costs` terms, `(B, Q)`, added to `zero` (a `(B, Q)` zero tensor)."""
        weights = self.weights
        total = zero
        for name, value in terms.items():
            total = total + weights[name] * value
        return total

    @torch.no_grad()
    def forward(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None,
        *,
        target_boxes: torch.Tensor,
        valid: torch.Tensor,
        target_masks: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Index of the matched query per sample, `(B,)` int64. Arguments as in `costs`."""
        total = self.total_cost(
            logits, boxes, masks,
            target_boxes=target_boxes, valid=valid, target_masks=target_masks, padding=padding,
        )
        return total.argmin(dim=1)
