"""Ref-DAVIS17 annotations (converted to the Ref-YouTube-VOS layout) -> records.

Layout (peers 5.3): ``<root>/{train,valid}/{JPEGImages,Annotations}/<vid>/<frame>``,
``<root>/meta_expressions/{train,valid}/meta_expressions.json`` and optionally
``<root>/{train,valid}/meta.json``. Each object has 4 expressions in order (annotator 1 first-frame,
annotator 1 full-video, annotator 2 first-frame, annotator 2 full-video); the k-th expression of a
video (ids sorted numerically) gets ``extra["annotator"] = k % 4`` and ``extra["object_index"] = k // 4``,
the grouping the evaluation averages over.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .records import DatasetRecords
from .ytvos import read_ytvos_layout

__all__ = ["read_davis"]

SPLIT_ALIASES = {"val": "valid"}


def read_davis(root: str | Path, split: str = "valid") -> DatasetRecords:
    """Ref-DAVIS17 ``split`` ("train" or "valid"; "val" is accepted) under ``root`` (``ref-davis/``)."""
    if not (Path(root) / "meta_expressions" / split).is_dir():
        split = SPLIT_ALIASES.get(split, split)
    records = read_ytvos_layout(root, split, name="davis", meta_required=False)
    records.expressions = [
        replace(e, extra={**e.extra, "annotator": e.extra["position"] % 4, "object_index": e.extra["position"] // 4})
        for e in records.expressions
    ]
    return records
