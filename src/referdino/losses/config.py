"""Typed configuration of the training losses and the sequence matcher (account §2.9, §3.5, §3.6).

Presets carry the names of the official YAML files. In every official config the matcher costs
(`set_cost_*`) equal the loss weights (`*_loss_coef`), except `a2d_swint` (matcher mask cost 2, dice cost 5;
loss mask 5, dice 2). `jhmdb_swint` has no preset: the official YAML has no projection weights and crashes,
and JHMDB-Sentences is evaluated with the A2D checkpoint anyway (account §3.2).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Loss names (without layer suffix) and the `LossWeights` field that weights each.
LOSS_NAMES: dict[str, str] = {
    "loss_ce": "cls",
    "loss_bbox": "bbox",
    "loss_giou": "giou",
    "loss_mask": "mask",
    "loss_dice": "dice",
    "loss_proj": "proj",
}
#: Losses that need mask predictions (skipped for an output set without masks).
MASK_LOSSES = ("loss_mask", "loss_dice", "loss_proj")


@dataclass(frozen=True)
class LossWeights:
    """One weight per loss term; used both as loss weights and as matcher costs."""

    cls: float  #: sigmoid focal classification (official `cls_loss_coef` / `set_cost_class`)
    bbox: float  #: L1 on cx, cy, w, h (`bbox_loss_coef` / `set_cost_bbox`)
    giou: float  #: 1 - GIoU (`giou_loss_coef` / `set_cost_giou`)
    mask: float  #: sigmoid focal on stride-4 mask logits (`mask_loss_coef` / `set_cost_mask`)
    dice: float  #: Dice with +1 smoothing (`dice_loss_coef` / `set_cost_dice`)
    proj: float  #: BoxInst-style projection Dice (`proj_loss_coef` / `set_cost_proj`)

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        return (self.cls, self.bbox, self.giou, self.mask, self.dice, self.proj)


@dataclass(frozen=True)
class LossConfig:
    """Loss weights, matcher costs and the fixed constants of the official criterion."""

    weights: LossWeights = field(default_factory=lambda: LossWeights(4, 5, 2, 5, 5, 5))
    #: matcher costs; None means "equal to `weights`" (every official config except a2d_swint)
    match_costs: LossWeights | None = None
    focal_alpha: float = 0.25  #: alpha of every focal term (class and mask, loss and cost)
    focal_gamma: float = 2.0  #: gamma of every focal term
    mask_stride: int = 4  #: predicted masks are at this stride; GT is sampled at [stride//2::stride]
    aux_loss: bool = True  #: also supervise the earlier decoder layers (suffixes _0, _1, ...)
    interm_loss: bool = True  #: also supervise the two-stage encoder proposals (suffix _interm)

    @property
    def costs(self) -> LossWeights:
        """The matcher costs actually used."""
        return self.weights if self.match_costs is None else self.match_costs

    def validate(self) -> "LossConfig":
        errors = []
        for name, w in (("weights", self.weights), ("match_costs", self.costs)):
            if any(v < 0 for v in w.as_tuple()):
                errors.append(f"{name} must be non-negative, got {w}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            errors.append(f"focal_alpha must be in [0, 1], got {self.focal_alpha}")
        if self.focal_gamma < 0:
            errors.append(f"focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.mask_stride < 1:
            errors.append(f"mask_stride must be >= 1, got {self.mask_stride}")
        if errors:
            raise ValueError("invalid LossConfig: " + "; ".join(errors))
        return self

    def weight_of(self, loss_name: str) -> float:
        """Weight of a (possibly suffixed) loss name, e.g. `loss_dice_3` or `loss_ce_interm`."""
        for base, attr in LOSS_NAMES.items():
            if loss_name == base or loss_name.startswith(base + "_"):
                return float(getattr(self.weights, attr))
        raise KeyError(f"not a loss name: {loss_name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LossConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"loss config: unknown key(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        for key in ("weights", "match_costs"):
            if isinstance(kwargs.get(key), dict):
                kwargs[key] = LossWeights(**kwargs[key])
        return cls(**kwargs).validate()

    def replace(self, **changes: Any) -> "LossConfig":
        return dataclasses.replace(self, **changes).validate()


_YTVOS = LossWeights(cls=4, bbox=5, giou=2, mask=5, dice=5, proj=5)
_MEVIS_T = LossWeights(cls=2, bbox=1, giou=1, mask=5, dice=5, proj=2)
_B_134 = LossWeights(cls=1, bbox=3, giou=3, mask=5, dice=4, proj=4)  # mevis_swinb, a2d_swinb, jhmdb_swinb

LOSS_PRESETS: dict[str, LossConfig] = {
    "coco_swint": LossConfig(weights=_YTVOS),
    "coco_swinb": LossConfig(weights=_YTVOS),
    "ytvos_swint": LossConfig(weights=_YTVOS),
    "ytvos_swinb": LossConfig(weights=_YTVOS),
    "davis_swint": LossConfig(weights=_YTVOS),  # inference-only configs; weights as ytvos
    "davis_swinb": LossConfig(weights=_YTVOS),
    "mevis_swint": LossConfig(weights=_MEVIS_T),
    "mevis_swinb": LossConfig(weights=_B_134),
    "a2d_swint": LossConfig(
        weights=LossWeights(cls=4, bbox=5, giou=2, mask=5, dice=2, proj=5),
        match_costs=LossWeights(cls=4, bbox=5, giou=2, mask=2, dice=5, proj=5),
    ),
    "a2d_swinb": LossConfig(weights=_B_134),
    "jhmdb_swinb": LossConfig(weights=_B_134),
    # not official: the tiny test/synthetic model trains with the ytvos weights
    "tiny": LossConfig(weights=_YTVOS),
}


def get_loss_preset(name: str) -> LossConfig:
    """Loss configuration of an official config name (`ytvos_swint`, `a2d_swint`, ...)."""
    if name == "jhmdb_swint":
        raise ValueError(
            "jhmdb_swint has no loss preset: the official YAML lacks the projection weights and crashes; "
            "JHMDB-Sentences is evaluated with an A2D checkpoint (use a2d_swint to train)"
        )
    try:
        return LOSS_PRESETS[name].validate()
    except KeyError:
        raise ValueError(f"unknown loss preset {name!r}; choose one of: {', '.join(sorted(LOSS_PRESETS))}") from None
