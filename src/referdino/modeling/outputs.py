"""Model outputs with documented shapes. Letters: B videos (= expressions), T frames, Q queries, L tokens,
C channels, H/W the stride-4 mask grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerPrediction:
    """Predictions from one decoder layer after tracking and temporal enhancement."""

    logits: torch.Tensor  #: (B, T, Q, 1) referring logit (max over text tokens)
    boxes: torch.Tensor  #: (B, T, Q, 4) cx, cy, w, h in [0, 1]
    masks: torch.Tensor | None  #: (B, T, Q, H, W) mask logits at stride 4


@dataclass
class ForcedSelections:
    """Discrete choices to replay instead of computing them (parity checks against recorded runs)."""

    topk: torch.Tensor | None = None  #: (B*T, num_queries) two-stage indices, rank order
    kept: list[torch.Tensor] | None = None  #: per decoder layer (B*T, K_l) indices into the incoming list
    track: torch.Tensor | None = None  #: (B, T-1, Q) tracker permutations of the last decoder layer
    #: per decoder layer (B, T-1, K_l) tracker permutations (training: every layer is tracked on its own);
    #: when given, it overrides `track`
    track_layers: list[torch.Tensor] | None = None


@dataclass
class ReferDinoOutput:
    pred_logits: torch.Tensor  #: (B, T, Q, 1)
    pred_boxes: torch.Tensor  #: (B, T, Q, 4)
    pred_masks: torch.Tensor | None  #: (B, T, Q, H, W)
    aux: list[LayerPrediction] = field(default_factory=list)  #: earlier decoder layers (training)
    interm_logits: torch.Tensor | None = None  #: (B, T, num_queries, 1) two-stage proposal logits
    interm_boxes: torch.Tensor | None = None  #: (B, T, num_queries, 4) two-stage proposal boxes
    interm_masks: torch.Tensor | None = None  #: (B, T, num_queries, H, W) proposal masks (training)
    #: (B, T, num_queries, 4) the fixed anchors of the selected proposals: the official matcher matches the
    #: interm set on these (and the mask decoder is referenced on them), while its box loss uses `interm_boxes`
    interm_anchor_boxes: torch.Tensor | None = None
    selections: ForcedSelections | None = None  #: the discrete choices that were made
    tracker_state: Any = None  #: tracker memory after the last frame (continue a long video in windows)
