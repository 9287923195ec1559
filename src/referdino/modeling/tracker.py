"""Memory-augmented tracker (ReferDINO Sec. 3.3): aligns each frame's queries to a running memory.

For frames t = 1..T-1: Hungarian matching on 1 - cosine(memory, queries) (scipy, on the CPU, no gradient)
permutes the frame's queries into memory order; the memory then moves toward the aligned queries,
M <- (1 - a c) M + a c O, weighted by a per-query confidence c.

`box_cost` w > 0 (not official; the official tracker is w = 0) adds w * L1(previous aligned box, box) to the
matching cost: two objects that look the same (twins) have nearly the same query features, so appearance alone
swaps them when they pass each other, and the track then jumps between objects.

In a bf16/fp16 model the tracker is a float32 island: the memory, the cosine costs, the confidences and the
matching are computed in float32 (the memory is carried over a whole video); the aligned queries keep the
model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from .heads import token_similarity


@dataclass
class TrackerState:
    """Memory carried across windows of a long video: (B, Q, C)."""

    memory: torch.Tensor
    boxes: torch.Tensor | None = None  #: (B, Q, 4) each slot's last aligned box (used by the box cost)


def match_to_memory(
    memory: torch.Tensor,
    queries: torch.Tensor,
    memory_boxes: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
    box_cost: float = 0.0,
) -> torch.Tensor:
    """(B, Q, C) memory and queries -> (B, Q) permutation: slot j takes query perm[j]. With box_cost > 0 and
    the (B, Q, 4) boxes of the slots and of the queries, the L1 distance between them is added to the cost."""
    memory, queries = memory.float(), queries.float()
    cost = 1 - F.normalize(memory, dim=-1, eps=1e-12) @ F.normalize(queries, dim=-1, eps=1e-12).transpose(1, 2)
    if box_cost > 0 and memory_boxes is not None and boxes is not None:
        cost = cost + box_cost * torch.cdist(memory_boxes.float(), boxes.float(), p=1)
    cost_np = cost.detach().float().cpu().numpy()
    perms = [linear_sum_assignment(c)[1] for c in cost_np]
    return torch.as_tensor(np.stack(perms), dtype=torch.long, device=queries.device)


def tracking_confidence(
    aligned: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, mode: str
) -> torch.Tensor:
    """(B, Q) confidence in [0, 1] of each aligned query for the memory update.

    official: max over text tokens of the dot product, min-max normalised over the queries (no epsilon:
    the official code divides by zero when all queries tie; we return 0 there instead of NaN).
    Padded tokens are excluded (the official code only ever runs one unpadded caption at inference).
    paper: cosine similarity with the sentence ([CLS]) feature, clamped to [0, 1].
    """
    if mode == "paper":
        return F.cosine_similarity(aligned, text[:, :1], dim=-1).clamp(0, 1)
    c = token_similarity(aligned, text, text_mask).max(-1).values
    lo, hi = c.min(-1, keepdim=True).values, c.max(-1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 0, (c - lo) / span.where(span > 0, torch.ones_like(span)), torch.zeros_like(c))


def track(
    queries: torch.Tensor,
    boxes: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    alpha: float,
    confidence: str = "official",
    box_cost: float = 0.0,
    state: TrackerState | None = None,
    forced_perm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TrackerState]:
    """Align a clip's queries over time.

    Args:
        queries: (B, T, Q, C); boxes: (B, T, Q, 4); text: (B, T, L, C) per-frame enhanced text.
        box_cost: weight of the box distance in the matching cost (0: official, appearance only).
        state: memory from a previous window; None starts a new video (frame 0 initialises the memory).
        forced_perm: (B, T', Q) permutations to use instead of matching (T' = frames that are matched).
    Returns:
        aligned queries (B, T, Q, C), aligned boxes (B, T, Q, 4), permutations (B, T', Q), new state.
    """
    b, t = queries.shape[:2]
    start = 0
    aligned_q, aligned_b, perms = [], [], []
    if state is None:
        memory, last_boxes = queries[:, 0].float(), boxes[:, 0]
        aligned_q.append(queries[:, 0])
        aligned_b.append(boxes[:, 0])
        start = 1
    else:
        memory, last_boxes = state.memory.float(), state.boxes
    for i in range(start, t):
        k = len(perms)
        if forced_perm is not None:
            perm = forced_perm[:, k].to(queries.device)
        else:
            perm = match_to_memory(memory, queries[:, i], last_boxes, boxes[:, i], box_cost)
        q = torch.gather(queries[:, i], 1, perm[..., None].expand(-1, -1, queries.shape[-1]))
        bx = torch.gather(boxes[:, i], 1, perm[..., None].expand(-1, -1, 4))
        c = tracking_confidence(q.float(), text[:, i].float(), text_mask, confidence)[..., None]
        memory = (1 - alpha * c) * memory + alpha * c * q.float()
        last_boxes = bx
        aligned_q.append(q)
        aligned_b.append(bx)
        perms.append(perm)
    perm_t = torch.stack(perms, 1) if perms else queries.new_zeros((b, 0, queries.shape[2]), dtype=torch.long)
    new_state = TrackerState(memory.detach(), None if last_boxes is None else last_boxes.detach())
    return torch.stack(aligned_q, 1), torch.stack(aligned_b, 1), perm_t, new_state
