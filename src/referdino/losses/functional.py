"""Loss functions of the official ReferDINO criterion (account §3.6) as pure tensor functions.

Normalisation follows the official code (`models/criterion.py`, `models/GroundingDINO/segmentation.py`):
every loss is a *sum over instances* divided by `num_boxes`, the number of visible (target present) frames in
the batch, averaged over DDP ranks and clamped to at least 1 (`num_visible_frames`). An "instance" is one
matched query track of one sample, i.e. one row of the `(N, ...)` inputs below, N = batch size. Note that the
mask, Dice and projection losses are computed once per *clip* (over T*h*w) but are still divided by the
number of visible *frames*, exactly as in the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist

from .boxes import box_cxcywh_to_xyxy, official_loss_giou

#: Added inside the logs of the focal *matching cost* (official `models/matcher.py`; the losses use the
#: numerically stable `binary_cross_entropy_with_logits` instead).
COST_LOG_EPS = 1e-8


# ------------------------------------------------------------------------------------------- elementwise
def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Elementwise sigmoid focal loss (Lin et al. 2017), no reduction.

    `alpha_t * (1 - p_t) ** gamma * BCE(logits, targets)` with `alpha_t = alpha` for positives and
    `1 - alpha` for negatives; `alpha < 0` disables the alpha weighting.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def focal_class_cost(logits: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Matching cost of declaring each logit positive: focal(positive) - focal(negative), elementwise."""
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob**gamma * -(1 - prob + COST_LOG_EPS).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + COST_LOG_EPS).log()
    return pos - neg


def dice_coefficient(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice coefficient with +1 smoothing over the last dim (inputs broadcast): `(2|P.T| + 1) / (|P| + |T| + 1)`."""
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (numerator + 1) / (denominator + 1)


def max_projections(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BoxInst projections of `(..., T, h, w)` masks or logits.

    Returns `(along_h, along_w)`: the max over the height axis, flattened to `(..., T*w)`, and the max over the
    width axis, flattened to `(..., T*h)`. (The max commutes with the sigmoid, so projecting logits and then
    applying the sigmoid equals projecting probabilities.)
    """
    along_h = masks.amax(dim=-2).flatten(-2)
    along_w = masks.amax(dim=-1).flatten(-2)
    return along_h, along_w


# ------------------------------------------------------------------------------------------------ losses
def classification_loss(
    logits: torch.Tensor, positive: torch.Tensor, num_boxes: float, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """`loss_ce`: sigmoid focal over *all* logits, summed, divided by `num_boxes`.

    logits: any shape, e.g. (B, T, Q, 1); positive: bool, same shape (the matched query in visible frames).
    """
    return sigmoid_focal_loss(logits, positive.to(logits.dtype), alpha=alpha, gamma=gamma).sum() / num_boxes


def box_l1_loss(pred: torch.Tensor, target: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """`loss_bbox`: L1 between `(..., 4)` cx,cy,w,h boxes, summed, divided by `num_boxes`."""
    return (pred - target).abs().sum() / num_boxes


def box_giou_loss(pred: torch.Tensor, target: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """`loss_giou`: `1 - GIoU` between `(..., 4)` cx,cy,w,h boxes, summed, divided by `num_boxes`.
    The official loss's GIoU epsilons (`official_loss_giou`); an absent frame's zero target box stays finite."""
    giou = official_loss_giou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(target))
    return (1 - giou).sum() / num_boxes


def mask_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_boxes: float,
    padding: torch.Tensor | None = None,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """`loss_mask`: per instance, the focal loss averaged over its non-padded pixels; summed, / `num_boxes`.

    logits, targets: (N, P) (P = T*h*w); padding: bool (N, P), True on padding, or None.
    """
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    if padding is None:
        per_instance = loss.mean(1)
    else:
        kept = (~padding).sum(1).clamp(min=1)  # clamp: a fully padded instance (impossible in practice) gives 0
        per_instance = loss.masked_fill(padding, 0).sum(1) / kept
    return per_instance.sum() / num_boxes


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_boxes: float, padding: torch.Tensor | None = None
) -> torch.Tensor:
    """`loss_dice`: per instance `1 - Dice(sigmoid(logits), targets)` with +1 smoothing; summed, / `num_boxes`.

    logits, targets: (N, P); padding: bool (N, P), True where the predicted probability is zeroed, or None.
    """
    probs = logits.sigmoid()
    if padding is not None:
        probs = probs.masked_fill(padding, 0)
    return (1 - dice_coefficient(probs, targets)).sum() / num_boxes


def projection_loss(logits: torch.Tensor, targets: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """`loss_proj` (BoxInst, Tian et al. 2021): `(Dice loss along H + Dice loss along W) / 2`, / `num_boxes`.

    logits, targets: (N, T, h, w). No padding mask, as in the official code: padded pixels take part in the max.
    """
    src_h, src_w = max_projections(logits)
    tgt_h, tgt_w = max_projections(targets)
    return (dice_loss(src_h, tgt_h, num_boxes) + dice_loss(src_w, tgt_w, num_boxes)) / 2


# ------------------------------------------------------------------------------------------------ targets
def num_visible_frames(valid: torch.Tensor) -> float:
    """`num_boxes`: visible frames in the batch, averaged over DDP ranks when distributed is initialised, >= 1."""
    count = valid.sum().to(torch.float32).reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return max(float(count.item()), 1.0)


def downsample_targets(
    masks: torch.Tensor,
    pixel_mask: torch.Tensor | None,
    size: tuple[int, int],
    *,
    stride: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample full-resolution GT masks onto the stride-`stride` prediction grid.

    masks: (B, T, H, W) bool/float at the padded input resolution; pixel_mask: (B, H, W) bool, True on padding
    (None: no padding). Returns `(targets (B, T, h, w) float, padding (B, h, w) bool)`.

    The official code takes pixels `[stride//2::stride, stride//2::stride]` and asserts that the padded size is a
    multiple of the stride (it pads batches to multiples of 32). For other sizes the sampled grid has
    `floor((H + 1) / 4)` rows while the model's grid has `ceil(H / 4)`: the missing last row/column is filled
    with background and marked as padding (so it is ignored by the focal and Dice losses). A grid that differs
    by more than one row or column means the masks are not at the input resolution, and raises.
    """
    start = stride // 2
    targets = masks[..., start::stride, start::stride]
    if not targets.is_floating_point():
        targets = targets.to(torch.float32)
    b, _, h0, w0 = targets.shape
    if pixel_mask is None:
        padding = torch.zeros(b, h0, w0, dtype=torch.bool, device=masks.device)
    else:
        padding = pixel_mask[..., start::stride, start::stride].bool()
    h, w = size
    if abs(h - h0) > 1 or abs(w - w0) > 1:
        raise ValueError(
            f"GT masks {tuple(masks.shape[-2:])} sampled at stride {stride} give a {h0}x{w0} grid, "
            f"but the predicted masks are {h}x{w}: are the masks at the (padded) input resolution?"
        )
    if (h0, w0) != (h, w):
        targets = F.pad(targets[..., :h, :w], (0, max(w - w0, 0), 0, max(h - h0, 0)), value=0)
        padding = F.pad(padding[..., :h, :w], (0, max(w - w0, 0), 0, max(h - h0, 0)), value=True)
    return targets, padding
