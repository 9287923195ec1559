"""Training losses and the sequence matcher of ReferDINO (account §3.5-3.6)."""

from .boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
)
from .config import LOSS_NAMES, LOSS_PRESETS, LossConfig, LossWeights, get_loss_preset
from .criterion import Criterion, LossTargets, OutputSet, TargetBatch
from .matcher import SequenceMatcher

__all__ = [
    "LOSS_NAMES",
    "LOSS_PRESETS",
    "Criterion",
    "LossConfig",
    "LossTargets",
    "LossWeights",
    "OutputSet",
    "SequenceMatcher",
    "TargetBatch",
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "elementwise_box_iou",
    "elementwise_generalized_box_iou",
    "generalized_box_iou",
    "get_loss_preset",
]
