"""`referdino convert`: read a checkpoint of another layout, convert, load strictly, save ours."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..config import get_preset
from ..output_dirs import check_output_dir
from ..weights import (
    CONFIG_NAME,
    MODEL_KIND,
    WEIGHTS_NAME,
    CheckpointError,
    load_state_dict_strict,
    read_torch_checkpoint,
    save_pretrained,
)


def _read_any(path: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if p.is_dir() or p.suffix == ".safetensors":
        from .hf import load_hf_state_dict

        return load_hf_state_dict(str(p))
    return read_torch_checkpoint(str(p))


def convert_checkpoint(
    src: str, dst: str | os.PathLike, *, source: str, preset: str, keep_lora: bool = False, overwrite: bool = False
) -> str:
    """Convert `src` (layout `source`: referdino | groundingdino | hf) to our format in folder `dst`.

    `dst` is new, empty or an earlier model folder; with `overwrite` it may hold other files, which are kept.
    """
    from ..modeling.referdino import ReferDino

    check_output_dir(dst, MODEL_KIND, [WEIGHTS_NAME, CONFIG_NAME], overwrite=overwrite)  # before any work
    config = get_preset(preset)
    if not keep_lora or source == "hf":
        config = config.with_merged_lora()
    state = _read_any(src)
    allow_missing: tuple[str, ...] = ()
    if source == "referdino":
        from .official import convert_official

        ours, report = convert_official(state, config, keep_lora=keep_lora)
        summary = f"{len(report.used)} keys used, {len(report.aliases)} shared copies collapsed, " \
                  f"{len(report.ignored)} ignored, {report.folded_lora} LoRA adapters folded"
    elif source == "groundingdino":
        from .groundingdino import REFERDINO_ONLY, convert_groundingdino

        ours, report = convert_groundingdino(state, config)
        allow_missing = REFERDINO_ONLY
        summary = f"{len(report.used)} keys used, {len(report.aliases)} shared copies collapsed, " \
                  f"{len(report.ignored)} ignored; ReferDINO-only modules keep their initialisation"
    elif source == "hf":
        from .groundingdino import REFERDINO_ONLY
        from .hf import convert_hf

        ours, ignored = convert_hf(state, config)
        allow_missing = REFERDINO_ONLY
        summary = f"{len(state) - len(ignored)} keys used, {len(ignored)} ignored; " \
                  "ReferDINO-only modules keep their initialisation"
    else:
        raise ValueError(f"unknown source layout {source!r}: use referdino, groundingdino or hf")
    torch.manual_seed(0)
    model = ReferDino(config)
    load_report = load_state_dict_strict(model, ours, allow_missing=allow_missing, source=f"{src} ({source})")
    out = save_pretrained(model, dst, overwrite=overwrite)
    kept = len(load_report.ignored)
    return f"converted {src} -> {out}: {summary}" + (f"; {kept} model keys initialised fresh" if kept else "")
