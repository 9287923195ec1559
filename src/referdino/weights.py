"""Strict weight loading and our own checkpoint format (safetensors + config JSON).

Loading never unpickles code: safetensors files, or `torch.load(weights_only=True)` for `.pth` sources.
Every missing, unexpected or mis-shaped key is an error unless declared by name.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .atomic import atomic_write

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model or cannot be read."""


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  #: "key: checkpoint (a, b) vs model (c, d)"
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected), ("mis-shaped", self.mismatched)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
                parts.append(f"{len(items)} {label} key(s): {shown}")
        return "; ".join(parts) if parts else "all keys matched"


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def compare_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], allow_missing: Iterable[str] = (), allow_unexpected: Iterable[str] = ()
) -> LoadReport:
    own = model.state_dict()
    report = LoadReport()
    for key, value in own.items():
        if key not in state:
            (report.ignored if _matches(key, allow_missing) else report.missing).append(key)
        elif tuple(state[key].shape) != tuple(value.shape):
            report.mismatched.append(f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(value.shape)}")
    for key in state:
        if key not in own:
            (report.ignored if _matches(key, allow_unexpected) else report.unexpected).append(key)
    return report


def load_state_dict_strict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    source: str = "checkpoint",
) -> LoadReport:
    """Load `state` into `model`; raise `CheckpointError` naming every key that does not fit."""
    report = compare_state_dict(model, state, allow_missing, allow_unexpected)
    if not report.ok:
        hint = _backbone_hint(model, state)
        raise CheckpointError(f"{source} does not fit this model: {report.summary()}{hint}")
    own = model.state_dict()
    filtered = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(filtered, strict=False)
    return report


def _backbone_hint(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    key = "backbone.patch_embed.proj.weight"
    own = model.state_dict().get(key)
    if own is not None and key in state and state[key].shape != own.shape:
        return (
            f" (the checkpoint's backbone has embed dim {state[key].shape[0]}, the config's {own.shape[0]}:"
            " Swin-T is 96, Swin-B 128; pick the matching --config)"
        )
    return ""


MODEL_KIND = "model"  #: what `referdino.output_dirs` calls a save_pretrained folder


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `config.json` and `model.safetensors` (atomic) into `directory`: a new or empty folder or an earlier
    model folder of ours; with `overwrite`, also a folder holding other files, which are kept (OutputError
    otherwise, see `referdino.output_dirs`)."""
    from safetensors.torch import save_file

    from .output_dirs import check_output_dir, record_outputs

    out = Path(directory)
    check_output_dir(out, MODEL_KIND, [WEIGHTS_NAME, CONFIG_NAME], overwrite=overwrite)
    record_outputs(out, MODEL_KIND, [WEIGHTS_NAME, CONFIG_NAME])
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "referdino"}))
    config_json = model.config.to_json()  # type: ignore[attr-defined]
    atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(config_json))
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as safetensors ({exc}); is the file complete?") from None


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `.pth` state dict without executing pickled code (weights_only)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt/untrusted files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read {path} as a PyTorch state dict ({first}); it may be truncated, not a checkpoint,"
            " or contain pickled code, which is never executed"
        ) from None
    for key in ("model_state_dict", "model", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj


def read_config(directory: str | os.PathLike):  # type: ignore[no-untyped-def]
    from .config import ReferDinoConfig

    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}: is it a folder written by save_pretrained/convert?")
    return ReferDinoConfig.from_dict(read_json_file(path))


def read_json_file(path: Path) -> object:
    """Parse a JSON file; invalid JSON is a one-line `CheckpointError`."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
