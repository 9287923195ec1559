"""What `ReferDino.from_pretrained(name_or_path)` accepts, recognised without being told.

* a model NAME of the zoo (`referdino models`): resolved through the hub cache and converted once
  (`referdino.zoo`);
* a folder of ours (`config.json` + `model.safetensors`, as `save_pretrained` / `referdino convert` write);
* a `transformers` GroundingDINO folder (`config.json` with `model_type: grounding-dino` + safetensors);
* a checkpoint FILE: official ReferDINO `.pth` (`model_state_dict`), official GroundingDINO `.pth`
  (`groundingdino_swint_ogc.pth`, `groundingdino_swinb_cogcoor.pth`), a `referdino train` checkpoint, or a
  safetensors file (ours or `transformers`').

The layout comes from the key names (ours / official ReferDINO / official GroundingDINO / transformers), the
preset from the key names and tensor shapes (Swin patch-embedding width 96 = Swin-T, 128 = Swin-B, blocks
per stage, heads, window, temporal-decoder blocks, LoRA adapters). Files are read as safetensors or with
`torch.load(weights_only=True)`: pickled code is never executed. Every failure is one `CheckpointError` line.

This module knows nothing of the inference layer; the model module imports it lazily.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PRESETS, LoraConfig, ReferDinoConfig, get_preset
from .weights import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, read_json_file, read_safetensors

#: layouts, as `detect_layout` names them
OURS, OFFICIAL, GROUNDINGDINO, HF = "ours", "referdino", "groundingdino", "hf"
LAYOUT_NAMES = {
    OURS: "ours",
    OFFICIAL: "official ReferDINO",
    GROUNDINGDINO: "official GroundingDINO",
    HF: "transformers GroundingDINO",
}

#: presets tried first when several share a backbone (the reported name of a recognised checkpoint)
_PREFERRED = ("ytvos_swint", "ytvos_swinb", "a2d_swint", "a2d_swinb", "tiny")

_OFFICIAL_ONLY = ("mask_decoder.", "temporal_decoder.", "pixel_decoder.")


@dataclass
class Resolved:
    """A checkpoint read and converted to our state-dict names, ready for a strict load."""

    config: ReferDinoConfig
    state: dict[str, torch.Tensor]
    source: str  #: what was read (for messages)
    layout: str  #: OURS | OFFICIAL | GROUNDINGDINO | HF
    preset: str | None = None  #: the preset the checkpoint was recognised as (None: from its config.json)
    allow_missing: tuple[str, ...] = ()  #: our keys the source cannot provide (they keep their initialisation)
    summary: str = ""

    def describe(self) -> str:
        what = LAYOUT_NAMES[self.layout]
        preset = f", preset {self.preset}" if self.preset else ""
        return f"{self.source}: {what} layout{preset}" + (f" ({self.summary})" if self.summary else "")


# ------------------------------------------------------------------------------------------------- files
def _sniff(path: Path) -> str:
    """'safetensors', 'zip' (torch.save), 'pickle' (legacy torch.save) or 'other', from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 0 < n < path.stat().st_size:
            return "safetensors"
    return "other"


def _torch_load(path: Path, kind: str) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt/untrusted files
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        code = next((line for line in lines if "GLOBAL" in line), None)
        if code is not None:
            raise CheckpointError(
                f"refusing {path}: it holds pickled code or objects other than tensors ({code.rstrip('.')}); "
                "it was read with weights_only=True and nothing in it was executed"
            ) from None
        first = lines[0] if lines else type(exc).__name__
        if kind == "zip" or isinstance(exc, EOFError) or "truncated" in first:  # a torch.save zip that fails
            raise CheckpointError(f"{path} is incomplete or corrupt ({first.split('. ')[0]})") from None
        detail = next((line for line in lines if line.startswith("Unsupported")), first)
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({detail.rstrip('.')}); it may be incomplete, not a "
            "checkpoint, or hold pickled objects, which are never executed"
        ) from None


def _state_of(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], ReferDinoConfig | None]:
    """The tensor state dict inside a loaded checkpoint, and the model config of a `referdino train` one."""
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("model_config"), str) and isinstance(obj.get("model"), dict):
        import json

        try:
            config = ReferDinoConfig.from_dict(json.loads(obj["model_config"]))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: its model_config is not a ReferDINO config ({exc})") from None
    for key in ("model_state_dict", "model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = ", ".join(map(str, list(obj)[:5])) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a model checkpoint: it holds no state dict of tensors (found: {keys})")
    return dict(obj), config


def read_checkpoint_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ReferDinoConfig | None]:
    """Read a `.pth`/`.pt`/`.safetensors` file (format from its first bytes, not its name)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = _sniff(p)
    if kind == "safetensors":
        return read_safetensors(p), None
    if kind in ("zip", "pickle"):
        return _state_of(_torch_load(p, kind), p)
    if p.suffix == ".safetensors":
        return read_safetensors(p), None  # gives the safetensors reader's own message
    raise CheckpointError(
        f"{path} is not a checkpoint: neither a PyTorch file (.pth, zip or pickle) nor safetensors"
    )


# ------------------------------------------------------------------------------------------------ layouts
def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def detect_layout(keys) -> str | None:  # type: ignore[no-untyped-def]
    """OURS, OFFICIAL, GROUNDINGDINO or HF from the key names; None for anything else."""
    keys = [k[len("module.") :] if k.startswith("module.") else k for k in keys]
    if any(k.startswith("model.backbone.conv_encoder.") for k in keys):
        return HF
    if any(k.startswith("backbone.0.patch_embed.") for k in keys) and any(k.startswith("transformer.") for k in keys):
        return OFFICIAL if any(k.startswith(_OFFICIAL_ONLY) for k in keys) else GROUNDINGDINO
    if "backbone.patch_embed.proj.weight" in keys and any(k.startswith("encoder.layers.") for k in keys):
        return OURS
    return None


def _not_ours_error(path: str, keys: list[str]) -> CheckpointError:
    shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
    return CheckpointError(
        f"{path} is not a ReferDINO or GroundingDINO checkpoint: its {len(keys)} keys ({shown}) fit none of the "
        "layouts ours / official ReferDINO / official GroundingDINO / transformers GroundingDINO"
    )


# ------------------------------------------------------------------------------------------------ presets
def backbone_name(embed_dim: int) -> str:
    return {96: "Swin-T", 128: "Swin-B"}.get(embed_dim, f"Swin (embed dim {embed_dim})")


def _swin_signature(state: dict[str, torch.Tensor], prefix: str, path: str) -> tuple:
    proj = state.get(prefix + "patch_embed.proj.weight")
    if proj is None:
        raise CheckpointError(f"{path} has no {prefix}patch_embed.proj.weight: cannot tell its backbone")
    depths, heads, window = [], [], 0
    for s in range(4):
        pattern = re.compile(re.escape(f"{prefix}layers.{s}.blocks.") + r"(\d+)\.")
        blocks = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        depths.append(len(blocks))
        table = state.get(f"{prefix}layers.{s}.blocks.0.attn.relative_position_bias_table")
        if table is None or table.ndim != 2:
            raise CheckpointError(f"{path} has no Swin stage {s} (no {prefix}layers.{s}.blocks.0.attn...)")
        heads.append(int(table.shape[1]))
        window = int(round((math.sqrt(table.shape[0]) + 1) / 2))
    return int(proj.shape[0]), tuple(depths), tuple(heads), window


def _preset_for_swin(signature: tuple, path: str) -> str:
    embed, depths, heads, window = signature
    names = list(_PREFERRED) + sorted(n for n in PRESETS if n not in _PREFERRED)
    for name in names:
        s = PRESETS[name].swin
        if (s.embed_dim, tuple(s.depths), tuple(s.num_heads), s.window_size) == signature:
            return name
    raise CheckpointError(
        f"{path}: its backbone (patch-embed width {embed}, blocks {list(depths)}, heads {list(heads)}, window "
        f"{window}) matches no preset (Swin-T has width 96, Swin-B 128); convert it with `referdino convert "
        "--config PRESET`"
    )


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def _lora_from_keys(state: dict[str, torch.Tensor], enc: str, dec: str, base: LoraConfig) -> LoraConfig:
    adapters = [k for k in state if k.endswith(".lora_A")]
    if not adapters:
        return LoraConfig(rank=base.rank, alpha=base.alpha, encoder=base.encoder, decoder=base.decoder, merged=True)
    return LoraConfig(
        rank=int(state[adapters[0]].shape[0]),
        alpha=base.alpha,
        encoder=any(k.startswith(enc) for k in adapters),
        decoder=any(k.startswith(dec) for k in adapters),
        merged=False,
    )


def _name_of(config: ReferDinoConfig, base_name: str) -> str:
    """The preset `config` equals (LoRA merging aside), else the base preset plus what differs."""
    target = config.with_merged_lora()
    for name in list(_PREFERRED) + sorted(PRESETS):
        if PRESETS[name].with_merged_lora() == target:
            return name
    base = PRESETS[base_name]
    diffs = [f"temporal_layers={config.temporal_layers}"] if config.temporal_layers != base.temporal_layers else []
    if (config.lora.encoder, config.lora.decoder) != (base.lora.encoder, base.lora.decoder):
        diffs.append(f"LoRA encoder={config.lora.encoder} decoder={config.lora.decoder}")
    return base_name + (f" ({', '.join(diffs)})" if diffs else "")


def detect_config(state: dict[str, torch.Tensor], layout: str, path: str = "checkpoint") -> tuple[ReferDinoConfig, str]:
    """The model config of an OURS / OFFICIAL / GROUNDINGDINO state dict, and the name of its preset."""
    prefix = "backbone." if layout == OURS else "backbone.0."
    base_name = _preset_for_swin(_swin_signature(state, prefix, path), path)
    base = get_preset(base_name)
    if layout == GROUNDINGDINO:
        return base.with_merged_lora(), base_name
    if layout == OURS:
        temporal = _count(state, "temporal_decoder.blocks.")
        lora = _lora_from_keys(state, "encoder.", "decoder.", base.lora)
    else:
        temporal = _count(state, "temporal_decoder.0.layer.")
        lora = _lora_from_keys(state, "transformer.encoder.", "transformer.decoder.", base.lora)
    config = base.replace(temporal_layers=temporal or base.temporal_layers, lora=lora)
    return config, _name_of(config, base_name)


#: the transformers GroundingDINO backbones of IDEA-Research/grounding-dino-tiny|base, by patch-embed width
_HF_SWIN = {
    96: {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7},
    128: {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12},
}


def _hf_config(state: dict[str, torch.Tensor], path: Path) -> tuple[ReferDinoConfig, str | None]:
    from .convert.hf import config_from_hf, load_hf_config

    folder = path if path.is_dir() else path.parent
    if (folder / CONFIG_NAME).is_file():
        return load_hf_config(folder), None
    width = next(
        (int(v.shape[0]) for k, v in state.items() if k.endswith("embeddings.patch_embeddings.projection.weight")), 0
    )
    if width not in _HF_SWIN:
        raise CheckpointError(f"{path}: no config.json beside it and a backbone width {width} that is neither "
                              "Swin-T (96) nor Swin-B (128)")
    return config_from_hf({"backbone_config": {"model_type": "swin", **_HF_SWIN[width]}}), backbone_name(width)


# ------------------------------------------------------------------------------------------------ resolve
def _convert(state: dict[str, torch.Tensor], layout: str, config: ReferDinoConfig, source: str, preset: str | None,
             extra_config: ReferDinoConfig | None = None) -> Resolved:
    from .convert.groundingdino import REFERDINO_ONLY

    if layout == OURS:
        return Resolved(extra_config or config, state, source, OURS, preset)
    if layout == OFFICIAL:
        from .convert.official import convert_official

        ours, report = convert_official(state, config, keep_lora=False)
        summary = f"{len(report.used)} keys used, {report.folded_lora} LoRA adapters folded"
        return Resolved(config.with_merged_lora(), ours, source, OFFICIAL, preset, (), summary)
    if layout == GROUNDINGDINO:
        from .convert.groundingdino import convert_groundingdino

        ours, report = convert_groundingdino(state, config)
        summary = f"{len(report.used)} keys used; the ReferDINO-only modules keep their initialisation"
        return Resolved(config, ours, source, GROUNDINGDINO, preset, REFERDINO_ONLY, summary)
    from .convert.hf import convert_hf

    ours, ignored = convert_hf(state, config)
    summary = f"{len(state) - len(ignored)} keys used; the ReferDINO-only modules keep their initialisation"
    return Resolved(config, ours, source, HF, preset, REFERDINO_ONLY, summary)


def resolve_file(path: str | os.PathLike) -> Resolved:
    """Read a checkpoint FILE of any supported layout and convert it to our names."""
    p = Path(path)
    sibling = p.parent / CONFIG_NAME
    if p.suffix == ".safetensors" and sibling.is_file() and _is_hf_config(sibling) is False:
        return resolve_folder(p.parent) if p.name == WEIGHTS_NAME else _ours_with_config(p, sibling)
    state, train_config = read_checkpoint_file(p)
    state = _strip_module(state)
    layout = detect_layout(state)
    if layout is None:
        raise _not_ours_error(str(p), list(state))
    if layout == HF:
        config, preset = _hf_config(state, p)
        return _convert(state, HF, config, str(p), preset)
    if layout == OURS and train_config is not None:
        return Resolved(train_config, state, str(p), OURS, None)
    config, preset = detect_config(state, layout, str(p))
    return _convert(state, layout, config, str(p), preset)


def _is_hf_config(path: Path) -> bool | None:
    """True for a transformers GroundingDINO config.json, False for ours, None for neither."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        return None
    if data.get("model_type") == "grounding-dino" or "backbone_config" in data:
        return True
    return False if "swin" in data and "d_model" in data else None


def _ours_with_config(weights: Path, config_file: Path) -> Resolved:
    config = ReferDinoConfig.from_dict(read_json_file(config_file))  # type: ignore[arg-type]
    return Resolved(config, read_safetensors(weights), str(weights), OURS, None)


def resolve_folder(path: str | os.PathLike) -> Resolved:
    """A folder of ours (config.json + model.safetensors) or a transformers GroundingDINO folder."""
    p = Path(path)
    config_file = p / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}: is it a folder written by save_pretrained/convert?")
    kind = _is_hf_config(config_file)
    if kind is True:
        from .convert.hf import load_hf_state_dict

        state = load_hf_state_dict(p)
        config, _ = _hf_config(state, p)
        return _convert(state, HF, config, str(p), None)
    from .weights import read_config

    config = read_config(p)
    if not (p / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_NAME}")
    return Resolved(config, read_safetensors(p / WEIGHTS_NAME), str(p / WEIGHTS_NAME), OURS, None)


def looks_like_path(name: str) -> bool:
    suffixes = (".pth", ".pt", ".safetensors", ".bin")
    return os.sep in name or "/" in name or name.startswith(".") or Path(name).suffix in suffixes


def resolve_pretrained(name_or_path: str | os.PathLike) -> Resolved:
    """Resolve a zoo NAME, a folder or a checkpoint file (an existing path wins over a name, except for a
    `referdino.zoo.ModelName`, which is only ever a name)."""
    from . import zoo

    if isinstance(name_or_path, zoo.ModelName):
        return zoo.resolve_model(str(name_or_path))
    p = Path(name_or_path)
    if p.is_dir():
        return resolve_folder(p)
    if p.is_file():
        return resolve_file(p)
    name = str(name_or_path)
    if name in zoo.known_names():
        return zoo.resolve_model(name)
    if looks_like_path(name):
        raise CheckpointError(f"checkpoint not found: {name}")
    raise zoo.unknown_model_error(name, as_path=True)
