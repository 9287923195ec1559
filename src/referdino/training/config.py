"""Typed training configuration, presets named like the official configs, and `key=value` overrides.

`referdino train ytvos_swint lr=1e-4 model.query_decay=1.0` starts from the preset, applies the overrides
(unknown keys and wrong types are one-line errors), and the resolved configuration is saved with every
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ReferDinoConfig, get_preset


#: the former boolean `amp` (the official `enable_amp` is fp16 autocast on CUDA)
AMP_BOOL = {True: "fp16", False: "off"}


class ConfigError(ValueError):
    """An unknown key, a wrong-typed value or an impossible combination in a training config."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; every field is saved with each checkpoint."""

    model: str = "ytvos_swint"  #: model preset (see referdino.config.PRESETS)
    model_overrides: dict[str, Any] = field(default_factory=dict)  #: `model.<field>=value` overrides
    losses: str = "ytvos_swint"  #: loss/matcher weight preset (referdino.losses.LOSS_PRESETS)
    dataset: str = "ytvos"  #: ytvos | mevis | davis | a2d | jhmdb | refcoco
    data_root: str = "data/ref-youtube-vos"  #: dataset folder in its official layout
    split: str = "train"
    num_frames: int = 6  #: frames per training clip (1 for image datasets)
    #: which expressions of a synthetic world (one with `expression_kinds.json`) to train on: "all", or only the
    #: "static" ones (a single frame cannot tell twins apart by their motion) or only the "motion" ones
    expressions: Literal["all", "static", "motion"] = "all"
    sampling_step: int = 0  #: MeViS anchor step in frames (0: the dataset's default)
    #: official resize/crop/flip/colour jitter, or "light": flip and a colour jitter that keeps every colour's hue
    #: (no channel swap, which would turn the "yellow square" of a caption cyan)
    augment: Literal["official", "light"] = "official"
    reverse_prob: float = 0.3  #: probability of playing a training clip backwards (official 0.3)
    init_weights: str = ""  #: folder written by `referdino convert` / save_pretrained to start from
    freeze: Literal["official", "none"] = "official"  #: official trainable set, or train everything
    train_temporal: bool = True  #: the temporal decoder trains (video datasets)
    lr: float = 5e-5  #: learning rate before scaling
    scale_lr: bool = True  #: official rule: lr * (batch_size * world_size) / 2
    weight_decay: float = 1e-4
    epochs: int = 10
    lr_drop: tuple[int, ...] = (8,)  #: epochs after which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    #: with max_minutes: multiply the lr by lr_gamma once this fraction of the time budget is spent (0: off).
    #: A time-budgeted run cannot know its step count in advance; its drop is placed on the clock instead.
    lr_drop_time: float = 0.0
    warmup_steps: int = 0  #: linear lr warm-up over the first N optimizer steps (0: none, as the official recipe)
    clip_max_norm: float = 0.1  #: gradient-norm clipping (0 disables)
    batch_size: int = 1  #: clips per process
    num_workers: int = 2
    #: mixed precision (autocast): off | auto (bf16 on GPUs and CPUs with bf16 matrix units, else off) | bf16 |
    #: fp16 (CUDA only, with a gradient scaler: the official `enable_amp`). `true`/`false` mean fp16/off.
    amp: Literal["off", "auto", "bf16", "fp16"] = "off"
    seed: int = 42
    max_steps: int = 0  #: stop after this many optimizer steps in total (0: run all epochs)
    #: stop (with a checkpoint) after this much training time, counted over resumes too (0: no limit)
    max_minutes: float = 0.0
    ckpt_every: int = 500  #: also write a checkpoint every N steps (0: only at epoch ends)
    log_every: int = 10  #: steps between CSV/TensorBoard rows
    out_dir: str = "runs/referdino"
    device: str = "auto"  #: auto | cpu | cuda | cuda:N

    def model_config(self) -> ReferDinoConfig:
        cfg = get_preset(self.model)
        return apply_model_overrides(cfg, self.model_overrides)

    def effective_lr(self, world_size: int) -> float:
        return self.lr * (self.batch_size * world_size) / 2 if self.scale_lr else self.lr

    def validate(self) -> "TrainConfig":
        problems = []
        if self.num_frames < 1:
            problems.append("num_frames must be >= 1")
        if self.batch_size < 1:
            problems.append("batch_size must be >= 1")
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        if not 0.0 <= self.lr_drop_time < 1.0:
            problems.append("lr_drop_time must be in [0, 1) (a fraction of max_minutes)")
        if self.lr_drop_time and not self.max_minutes:
            problems.append("lr_drop_time needs max_minutes (it is a fraction of the time budget)")
        if self.warmup_steps < 0:
            problems.append("warmup_steps must be >= 0")
        if self.freeze not in ("official", "none"):
            problems.append(f"freeze must be 'official' or 'none', got {self.freeze!r}")
        if self.expressions not in ("all", "static", "motion"):
            problems.append(f"expressions must be 'all', 'static' or 'motion', got {self.expressions!r}")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))
        self.model_config()  # raises on a bad model preset or override
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config key(s) {unknown}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        if isinstance(values.get("amp"), bool):  # configs saved before amp took a dtype
            values["amp"] = AMP_BOOL[values["amp"]]
        return cls(**values).validate()


def _video(model: str, losses: str, **kw: Any) -> TrainConfig:
    return TrainConfig(model=model, losses=losses, **kw)


#: Presets named like the official YAML files (lr before the scaling rule).
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "coco_swint": TrainConfig(model="coco_swint", losses="coco_swint", dataset="refcoco", data_root="data/coco",
                              num_frames=1, lr=1e-4, train_temporal=False, epochs=20),
    "coco_swinb": TrainConfig(model="coco_swinb", losses="coco_swinb", dataset="refcoco", data_root="data/coco",
                              num_frames=1, lr=5e-5, train_temporal=False, epochs=20),
    "ytvos_swint": _video("ytvos_swint", "ytvos_swint", lr=5e-5),
    "ytvos_swinb": _video("ytvos_swinb", "ytvos_swinb", lr=5e-5),
    "mevis_swint": _video("mevis_swint", "mevis_swint", dataset="mevis", data_root="data/mevis", lr=1e-4,
                          sampling_step=64),
    "mevis_swinb": _video("mevis_swinb", "mevis_swinb", dataset="mevis", data_root="data/mevis", lr=1e-4,
                          sampling_step=64),
    "davis_swint": _video("davis_swint", "davis_swint", dataset="davis", data_root="data/ref-davis", num_frames=3),
    "davis_swinb": _video("davis_swinb", "davis_swinb", dataset="davis", data_root="data/ref-davis"),
    "a2d_swint": TrainConfig(model="a2d_swint", losses="a2d_swint", dataset="a2d", data_root="data/a2d_sentences",
                             num_frames=1, lr=5e-5, lr_gamma=0.2, train_temporal=False, epochs=6),
    "a2d_swinb": TrainConfig(model="a2d_swinb", losses="a2d_swinb", dataset="a2d", data_root="data/a2d_sentences",
                             num_frames=1, lr=1e-4, lr_gamma=0.2, train_temporal=False, epochs=6),
    "jhmdb_swint": TrainConfig(model="jhmdb_swint", losses="a2d_swint", dataset="jhmdb",
                               data_root="data/jhmdb_sentences", num_frames=1, train_temporal=False),
    "jhmdb_swinb": TrainConfig(model="jhmdb_swinb", losses="jhmdb_swinb", dataset="jhmdb",
                               data_root="data/jhmdb_sentences", num_frames=1, lr=1e-4, train_temporal=False),
    #: the learning proof: a tiny model trained from scratch on the synthetic world, on a CPU
    "synthetic_tiny": TrainConfig(
        model="tiny", losses="tiny", dataset="ytvos", data_root="data/synthetic", num_frames=4, freeze="none",
        # from scratch the tiny model underfits: no stochastic depth or dropout; the referring logit is the mean
        # over tokens (a max cannot say "red AND square" with uncontextual tokens); the tracker also weighs box
        # distance, so twins (same look, different motion) keep their tracks; pruning keeps distinct boxes, so
        # the 5 queries left per frame are not copies of one shape; the class head reads each track's motion
        # directly (the temporal blocks lose its sign); measured in RESULTS.md
        model_overrides={"class_token_reduce": "mean", "swin.drop_path": 0.0, "fusion_drop_path": 0.0,
                         "text.dropout": 0.0, "tracker_box_cost": 5.0, "pruning_distinct_iou": 0.5,
                         "motion_logit": True},
        lr=1e-3, warmup_steps=200, scale_lr=False, epochs=4, lr_drop=(3,), batch_size=2, num_workers=0,
        clip_max_norm=1.0,
        augment="light", reverse_prob=0.0,  # time reversal would contradict the motion expressions
        ckpt_every=200, log_every=5, out_dir="runs/synthetic_tiny",
    ),
}


def _coerce(value: str, annotation: Any, key: str) -> Any:
    """Parse a command-line string into the field's type, or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    try:
        if annotation is bool:
            low = value.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
        if annotation is str:
            return value
        if origin is Literal:
            if value not in args:
                raise ConfigError(f"config key {key!r} must be one of {list(args)}, got {value!r}")
            return value
        if origin is tuple:
            items = [v for v in value.split(",") if v.strip()]
            return tuple(_coerce(v.strip(), args[0], key) for v in items)
        if origin in (types.UnionType, typing.Union):
            if value.lower() in ("none", "null"):
                return None
            return _coerce(value, next(a for a in args if a is not type(None)), key)
    except ConfigError:
        raise
    except (ValueError, StopIteration):
        name = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"config key {key!r} expects {name}, got {value!r}") from None
    raise ConfigError(f"config key {key!r} cannot be set from the command line")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply_model_overrides(cfg: ReferDinoConfig, overrides: dict[str, Any]) -> ReferDinoConfig:
    """Apply {"query_decay": "1.0", "lora.rank": "8"} to a model config (strings are parsed by type)."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    types_top = _field_types(ReferDinoConfig)
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in types_top:
            raise ConfigError(f"unknown model config key {key!r}; known: {sorted(types_top)}")
        if rest:
            sub_cls = type(getattr(cfg, head))
            if not dataclasses.is_dataclass(sub_cls):
                raise ConfigError(f"model config key {head!r} has no fields (got {key!r})")
            sub_types = _field_types(sub_cls)
            if rest not in sub_types:
                raise ConfigError(f"unknown model config key {key!r}; known: {sorted(sub_types)}")
            nested.setdefault(head, {})[rest] = (
                _coerce(value, sub_types[rest], key) if isinstance(value, str) else value
            )
        else:
            top[key] = _coerce(value, types_top[key], key) if isinstance(value, str) else value
    for head, values in nested.items():
        top[head] = dataclasses.replace(getattr(cfg, head), **values)
    try:
        return cfg.replace(**top)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def resolve_train_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Preset `name` (or a JSON file of a resolved config) plus `key=value` overrides."""
    if name in TRAIN_PRESETS:
        base = TRAIN_PRESETS[name]
    elif name.endswith(".json"):
        try:
            with open(name) as f:
                base = TrainConfig.from_dict(json.load(f))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {name}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} is not valid JSON ({exc})") from None
    else:
        raise ConfigError(f"unknown training config {name!r}; presets: {', '.join(sorted(TRAIN_PRESETS))}")
    field_types = _field_types(TrainConfig)
    changes: dict[str, Any] = {}
    model_overrides = dict(base.model_overrides)
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key.startswith("model."):
            model_overrides[key[len("model.") :]] = value
            continue
        if key not in field_types or key == "model_overrides":
            raise ConfigError(f"unknown training config key {key!r}; known: {sorted(set(field_types) - {'model_overrides'})}")
        if key == "amp" and value.strip().lower() in ("true", "false"):
            value = AMP_BOOL[value.strip().lower() == "true"]
        changes[key] = _coerce(value, field_types[key], key)
    changes["model_overrides"] = model_overrides
    return dataclasses.replace(base, **changes).validate()
