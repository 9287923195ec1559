"""Box conversions, IoU and generalized IoU: the one copy used by the whole package.

Boxes are `(..., 4)` tensors, either `cx, cy, w, h` or `x0, y0, x1, y1`. "Pairwise" functions take `(N, 4)` and
`(M, 4)` and return `(N, M)`; "elementwise" functions take two broadcastable `(..., 4)` tensors and return `(...)`.

Generalized IoU follows Rezatofighi et al. 2019 (and `facebookresearch/detr:util/box_ops.py`), with one
deliberate difference: the union and the enclosing area are clamped to `EPS` before dividing. For boxes with
positive area this changes nothing; it only keeps degenerate pairs finite. Such pairs do occur in training: the
target box of a frame where the object is invisible is all zeros (account §3.6), and a collapsed prediction
against it would otherwise give 0/0 = NaN. DETR also asserts `x1 >= x0`; we do not (it forces a device sync).
"""

from __future__ import annotations

import torch

#: Smallest area used as a divisor in IoU/GIoU (see the module docstring).
EPS = 1e-7


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """`(cx, cy, w, h)` -> `(x0, y0, x1, y1)`, any leading shape."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """`(x0, y0, x1, y1)` -> `(cx, cy, w, h)`, any leading shape."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of `(..., 4)` xyxy boxes -> `(...)`."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_parts(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union of broadcastable xyxy boxes."""
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter, union


def _enclosing_area(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    top_left = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _giou_from_parts(
    boxes1: torch.Tensor, boxes2: torch.Tensor, inter: torch.Tensor, union: torch.Tensor
) -> torch.Tensor:
    iou = inter / union.clamp(min=EPS)
    enclosing = _enclosing_area(boxes1, boxes2)
    return iou - (enclosing - union) / enclosing.clamp(min=EPS)


def elementwise_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of broadcastable xyxy boxes `(..., 4)` -> `(...)`."""
    inter, union = _iou_parts(boxes1, boxes2)
    return inter / union.clamp(min=EPS)


def elementwise_generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalized IoU of broadcastable xyxy boxes `(..., 4)` -> `(...)`, in [-1, 1]."""
    inter, union = _iou_parts(boxes1, boxes2)
    return _giou_from_parts(boxes1, boxes2, inter, union)


#: Epsilon of the two official GIoU copies (`util/box_ops.py` for the losses, `util/misc.py` for the matcher).
OFFICIAL_GIOU_EPS = 1e-6


def official_loss_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU as the official *loss* computes it (`util.box_ops.generalized_box_iou`), elementwise on xyxy boxes:
    `iou = inter / (union + eps)`, `giou = iou - (enclosing - union) / (enclosing + eps)`, eps = 1e-6."""
    inter, union = _iou_parts(boxes1, boxes2)
    enclosing = _enclosing_area(boxes1, boxes2)
    eps = OFFICIAL_GIOU_EPS
    return inter / (union + eps) - (enclosing - union) / (enclosing + eps)


def official_matcher_giou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """GIoU as the official *matcher* computes it (`util.misc.generalized_box_iou`), elementwise on xyxy boxes:
    `iou = (inter + eps) / (union + eps)`, `giou = iou - (enclosing - union + eps) / (enclosing + eps)`."""
    inter, union = _iou_parts(boxes1, boxes2)
    enclosing = _enclosing_area(boxes1, boxes2)
    eps = OFFICIAL_GIOU_EPS
    return (inter + eps) / (union + eps) - (enclosing - union + eps) / (enclosing + eps)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes `(N, 4)` x `(M, 4)` -> `(N, M)`."""
    return elementwise_box_iou(boxes1[:, None, :], boxes2[None, :, :])


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU of xyxy boxes `(N, 4)` x `(M, 4)` -> `(N, M)`."""
    return elementwise_generalized_box_iou(boxes1[:, None, :], boxes2[None, :, :])
