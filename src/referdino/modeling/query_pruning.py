"""Confidence-aware query pruning (ReferDINO Sec. 3.4).

After a decoder layer with N queries, keep the ceil(N * decay) most confident ones, in descending order of
confidence. Two confidence scores:

* ``official`` (what the released checkpoints were trained with): mean of
  softmax_over_queries(max_token <query, text>) on the pre-norm layer output and
  softmax_over_queries(attention each query *receives* from the other queries, head-averaged, summed).
* ``paper``: s_j = mean_{i != j} A^s_ij + max_k A^c_jk with the text cross-attention weights A^c.

``distinct_iou`` > 0 (not official; 0 = off) keeps distinct objects: going down the queries in order of
confidence, a query whose box overlaps an already kept one by more than that IoU is passed over (and only
used to fill the quota when too few distinct ones remain). Without it the few queries left after the last
pruning are often several copies of one object and none of another in some frames, so the tracker's slots,
matched one-to-one frame to frame, have to jump between objects.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..losses.boxes import box_cxcywh_to_xyxy, elementwise_box_iou
from .heads import contrastive_logit


def distinct_top(confidence: torch.Tensor, boxes: torch.Tensor, k: int, max_iou: float) -> torch.Tensor:
    """(N, Q) confidence and (N, Q, 4) cx, cy, w, h boxes -> (N, k) kept indices, descending confidence: the
    most confident queries whose boxes overlap no more confident kept one by more than max_iou, then, if
    fewer than k are left, the most confident of those passed over."""
    xyxy = box_cxcywh_to_xyxy(boxes.detach().float())
    overlap = (elementwise_box_iou(xyxy[:, :, None], xyxy[:, None, :]) > max_iou).cpu().numpy()
    scores = confidence.detach().float().cpu().numpy()
    rows = []
    for n, order in enumerate(np.argsort(-scores, axis=-1, kind="stable")):
        kept: list[int] = []
        passed: list[int] = []
        for j in order.tolist():
            if len(kept) == k:
                break
            (passed if kept and overlap[n, j, kept].any() else kept).append(j)
        chosen = np.array(kept + passed[: k - len(kept)])
        rows.append(torch.from_numpy(chosen[np.argsort(-scores[n, chosen], kind="stable")]))
    return torch.stack(rows).to(confidence.device)


class QueryPruner(nn.Module):
    def __init__(self, decay: float, score: str = "official", token_reduce: str = "max",
                 distinct_iou: float = 0.0) -> None:
        super().__init__()
        self.decay = decay
        self.distinct_iou = distinct_iou
        self.score = score
        self.token_reduce = token_reduce

    @property
    def enabled(self) -> bool:
        return self.decay < 1.0

    def keep_count(self, n: int) -> int:
        return max(1, math.ceil(n * self.decay))

    def confidence(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        self_weights: torch.Tensor,
        text_weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """(N, Q) float32 confidence of each query (a top-k decision: computed in float32 for a bf16/fp16 model);
        x is the layer output before the decoder's final norm."""
        x, text, self_weights = x.float(), text.float(), self_weights.float()
        text_weights = None if text_weights is None else text_weights.float()
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        received = self_weights.masked_fill(eye, 0.0).sum(dim=1)  # column sums: attention received
        if self.score == "official":
            return (contrastive_logit(x, text, text_mask, self.token_reduce).softmax(-1) + received.softmax(-1)) / 2
        assert text_weights is not None
        return received / (x.shape[1] - 1) + text_weights.max(dim=-1).values

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        self_weights: torch.Tensor | None,
        text_weights: torch.Tensor | None,
        forced: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (kept indices (N, K) in descending confidence, confidence (N, Q) or None). boxes (N, Q, 4):
        the queries' boxes, needed when distinct_iou > 0."""
        n, q = x.shape[:2]
        if not self.enabled:
            return torch.arange(q, device=x.device).expand(n, q), None
        gate = self.confidence(x, text, text_mask, self_weights, text_weights)  # type: ignore[arg-type]
        if forced is not None:
            return forced.to(x.device), gate
        if self.distinct_iou > 0:
            if boxes is None:
                raise ValueError("distinct_iou pruning needs the queries' boxes")
            return distinct_top(gate, boxes, self.keep_count(q), self.distinct_iou), gate
        return gate.topk(self.keep_count(q), dim=-1).indices, gate
