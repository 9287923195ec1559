"""Official ReferDINO / GroundingDINO state dicts <-> ours.

The official model registers some modules under several names; the converter checks that the copies are
equal and keeps one. LoRA adapters are folded (W + B @ A * scale) or kept as adapters. Every source key is
used exactly once or ignored by name; everything else is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..config import ReferDinoConfig
from ..modeling.swin import relative_position_index
from ..weights import CheckpointError

#: (official pattern, our replacement) applied in order, first match wins.
_TO_OURS: list[tuple[str, str]] = [
    (r"^transformer\.encoder\.", "encoder."),
    (r"^transformer\.decoder\.bbox_embed\.0\.", "decoder.bbox_embed."),
    (r"^transformer\.decoder\.", "decoder."),
    (r"^transformer\.level_embed$", "level_embed"),
    (r"^transformer\.tgt_embed\.", "query_embed."),
    (r"^transformer\.(enc_output|enc_output_norm|enc_out_bbox_embed)\.", r"query_selection.\1."),
    (r"^bert\.", "text_encoder.bert."),
    (r"^feat_map\.", "text_encoder.projection."),
    (r"^input_proj\.", "input_proj."),
    (r"^backbone\.0\.", "backbone."),
    (r"^pixel_decoder\.", "pixel_decoder."),
    (r"^mask_decoder\.(\d+)\.", r"mask_decoder.layers.\1."),
    (r"^temporal_decoder\.0\.layer\.(\d+)\.", r"temporal_decoder.blocks.\1."),
    (r"^temporal_decoder\.0\.norm\.(\d+)\.", r"temporal_decoder.blocks.\1.out_norm."),
]

_TO_OFFICIAL: list[tuple[str, str]] = [
    (r"^encoder\.", "transformer.encoder."),
    (r"^decoder\.bbox_embed\.", "transformer.decoder.bbox_embed.0."),
    (r"^decoder\.", "transformer.decoder."),
    (r"^level_embed$", "transformer.level_embed"),
    (r"^query_embed\.", "transformer.tgt_embed."),
    (r"^query_selection\.", "transformer."),
    (r"^text_encoder\.bert\.", "bert."),
    (r"^text_encoder\.projection\.", "feat_map."),
    (r"^input_proj\.", "input_proj."),
    (r"^backbone\.", "backbone.0."),
    (r"^pixel_decoder\.", "pixel_decoder."),
    (r"^mask_decoder\.layers\.(\d+)\.", r"mask_decoder.\1."),
    (r"^temporal_decoder\.blocks\.(\d+)\.out_norm\.", r"temporal_decoder.0.norm.\1."),
    (r"^temporal_decoder\.blocks\.(\d+)\.", r"temporal_decoder.0.layer.\1."),
]

#: official keys that are aliases of another key (the first one in state-dict order)
_ALIASES: list[tuple[str, str]] = [
    (r"^transformer\.decoder\.bbox_embed\.[1-9]\d*\.(.*)$", r"transformer.decoder.bbox_embed.0.\1"),
    (r"^bbox_embed\.\d+\.(.*)$", r"transformer.decoder.bbox_embed.0.\1"),
    (r"^ref_point_head\.(.*)$", r"transformer.decoder.ref_point_head.\1"),
    (r"^temporal_decoder\.[1-9]\d*\.(.*)$", r"temporal_decoder.0.\1"),
]

#: official keys we do not load: the unused BERT pooler and buffers we recompute (checked when present)
IGNORED_OFFICIAL = (r"^bert\.pooler\.", r"\.relative_position_index$", r"^bert\.embeddings\.(position_ids|token_type_ids)$")


def _rename(name: str, table: list[tuple[str, str]]) -> str | None:
    for pattern, repl in table:
        if re.search(pattern, name):
            return re.sub(pattern, repl, name, count=1)
    return None


def to_ours(name: str) -> str | None:
    return _rename(name, _TO_OURS)


def to_official(name: str) -> str:
    out = _rename(name, _TO_OFFICIAL)
    if out is None:
        raise KeyError(f"no official name for {name}")
    return out


def alias_target(name: str) -> str | None:
    return _rename(name, _ALIASES)


@dataclass
class ConversionReport:
    used: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    folded_lora: int = 0


def _lora_scale(config: ReferDinoConfig) -> float:
    return config.lora.scale


def convert_official(
    state: dict[str, torch.Tensor], config: ReferDinoConfig, *, keep_lora: bool = False
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Official ReferDINO `model_state_dict` -> our state dict.

    keep_lora: keep `lora_A`/`lora_B` as adapters (for training); otherwise fold them into the weights.
    """
    report = ConversionReport()
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    not_equal: list[str] = []
    consumed: set[str] = set()
    for name, value in state.items():
        target = alias_target(name)
        if target is not None:
            if target in state and not torch.equal(state[target], value):
                not_equal.append(f"{name} != {target}")
            elif target not in state:
                unknown.append(f"{name} (its first copy {target} is missing)")
            report.aliases.append(name)
            continue
        if any(re.search(p, name) for p in IGNORED_OFFICIAL):
            if name.endswith("relative_position_index"):
                window = int(round(value.shape[0] ** 0.5))
                if not torch.equal(value.long(), relative_position_index(window)):
                    raise CheckpointError(f"{name} differs from the standard Swin relative position index")
            report.ignored.append(name)
            continue
        if name.endswith((".lora_A", ".lora_B")):
            continue  # handled with their weight
        ours = to_ours(name)
        if ours is None:
            unknown.append(name)
            continue
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base is not None and f"{base}.lora_A" in state:
            a, b = state[f"{base}.lora_A"], state[f"{base}.lora_B"] if f"{base}.lora_B" in state else None
            if b is None:
                raise CheckpointError(f"{base}.lora_A has no lora_B partner")
            consumed.update({f"{base}.lora_A", f"{base}.lora_B"})
            if keep_lora:
                stem = ours[: -len(".weight")]
                out[f"{stem}.lora_A"], out[f"{stem}.lora_B"] = a, b
                out[ours] = value
            else:
                out[ours] = value + (b @ a) * _lora_scale(config)
                report.folded_lora += 1
        else:
            out[ours] = value
        report.used.append(name)
    orphans = [
        k for k in state if k.endswith((".lora_A", ".lora_B")) and k not in consumed and alias_target(k) is None
    ]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} unknown key(s): {', '.join(unknown[:8])}")
    if not_equal:
        problems.append(f"shared copies differ: {', '.join(not_equal[:4])}")
    if orphans:
        problems.append(f"LoRA adapters without a weight: {', '.join(orphans[:4])}")
    if problems:
        raise CheckpointError("not an official ReferDINO state dict: " + "; ".join(problems))
    report.used.extend(sorted(consumed))
    return out, report


def official_key_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The official state-dict names and shapes of a model built with adapters (not folded), aliases and
    ignored keys included: what an official checkpoint of this configuration holds."""
    config: ReferDinoConfig = model.config  # type: ignore[assignment]
    shapes: dict[str, tuple[int, ...]] = {}
    for name, value in model.state_dict().items():
        shapes[to_official(name)] = tuple(value.shape)
    # aliases
    for name in list(shapes):
        if name.startswith("transformer.decoder.bbox_embed.0."):
            rest = name[len("transformer.decoder.bbox_embed.0.") :]
            for i in range(config.dec_layers):
                shapes[f"transformer.decoder.bbox_embed.{i}.{rest}"] = shapes[name]
                shapes[f"bbox_embed.{i}.{rest}"] = shapes[name]
        elif name.startswith("transformer.decoder.ref_point_head."):
            shapes["ref_point_head." + name[len("transformer.decoder.ref_point_head.") :]] = shapes[name]
        elif name.startswith("temporal_decoder.0."):
            for i in range(1, config.dec_layers):
                shapes[f"temporal_decoder.{i}." + name[len("temporal_decoder.0.") :]] = shapes[name]
    h = config.text.hidden_size
    shapes["bert.pooler.dense.weight"] = (h, h)
    shapes["bert.pooler.dense.bias"] = (h,)
    w2 = config.swin.window_size**2
    for s, depth in enumerate(config.swin.depths):
        for b in range(depth):
            shapes[f"backbone.0.layers.{s}.blocks.{b}.attn.relative_position_index"] = (w2, w2)
    return shapes
