"""Row-chunked execution of token-wise sublayers at inference.

A feed-forward sublayer (`norm(x + W2 relu(W1 x))`) treats every token independently, but run on a whole
clip at once it materialises a (tokens x 2048) hidden tensor of hundreds of MB: every such allocation is fresh
memory from the OS (page faults), and every elementwise pass streams it through RAM. Run over chunks of a few
thousand rows, the hidden tensor stays in cache and its allocation is reused. Same values (rows are
independent); used only when no gradient is recorded, so training keeps one autograd node per op.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: rows per chunk: 2048 rows x 2048 hidden x 4 bytes = 16 MiB, below glibc's largest mmap threshold
CHUNK_ROWS = 2048


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """`fn(x)` for a function that maps each row of x (..., C) independently to a row (..., C')."""
    if torch.is_grad_enabled() and x.requires_grad:
        return fn(x)
    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[0]
    if n <= chunk_rows:
        return fn(x)
    first = fn(flat[:chunk_rows])
    out = first.new_empty(n, first.shape[-1])
    out[:chunk_rows] = first
    for start in range(chunk_rows, n, chunk_rows):
        out[start : start + chunk_rows] = fn(flat[start : start + chunk_rows])
    return out.view(*x.shape[:-1], out.shape[-1])
