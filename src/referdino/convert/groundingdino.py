"""Official GroundingDINO checkpoints (`groundingdino_swint_ogc.pth`, `groundingdino_swinb_cogcoor.pth`) -> ours.

GroundingDINO uses the same names as official ReferDINO for the shared parts, so this is the official
converter plus the declared differences: ReferDINO-only modules are absent (they keep their
initialisation), the Swin stage-1..3 norms are named `norm1..3` as in ReferDINO, and upstream has no
stride-4 `norm0`.
"""

from __future__ import annotations

import re

import torch

from ..config import ReferDinoConfig
from .official import ConversionReport, convert_official

#: our keys an upstream GroundingDINO checkpoint cannot provide
REFERDINO_ONLY = (
    "backbone.norm0.*",
    "pixel_decoder.*",
    "mask_decoder.*",
    "temporal_decoder.*",
    "*.lora_A",
    "*.lora_B",
)

#: upstream keys with no counterpart here (denoising label embedding, unused in ReferDINO)
_IGNORED_UPSTREAM = (r"^label_enc\.",)


def convert_groundingdino(
    state: dict[str, torch.Tensor], config: ReferDinoConfig
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    ignored = [k for k in state if any(re.search(p, k) for p in _IGNORED_UPSTREAM)]
    kept = {k: v for k, v in state.items() if k not in ignored}
    out, report = convert_official(kept, config, keep_lora=False)
    report.ignored.extend(ignored)
    return out, report
