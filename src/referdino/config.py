"""Typed configuration of the ReferDINO model.

Every field is documented; `ReferDinoConfig.validate()` rejects impossible combinations at build time.
Presets carry the names of the official YAML files (`ytvos_swint`, `mevis_swinb`, ...), so that a user who
knows the official repository finds the same model under the same name.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

PruningScore = Literal["official", "paper"]
TrackerConfidence = Literal["official", "paper"]
TemporalPosition = Literal["none", "time_box"]
TokenReduce = Literal["max", "mean"]
TemporalSentence = Literal["cls", "tokens"]


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer backbone (Liu et al. 2021), as used by GroundingDINO."""

    embed_dim: int = 96  #: channels of stage 0; stage s has embed_dim * 2**s
    depths: tuple[int, ...] = (2, 2, 6, 2)  #: blocks per stage
    num_heads: tuple[int, ...] = (3, 6, 12, 24)  #: attention heads per stage
    window_size: int = 7  #: window side; shifted blocks shift by window_size // 2
    mlp_ratio: float = 4.0  #: MLP hidden width / channels
    patch_size: int = 4  #: patch-embedding stride
    drop_path: float = 0.2  #: stochastic depth, linear over blocks 0..rate (training only)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


@dataclass(frozen=True)
class TextConfig:
    """BERT text encoder (bert-base-uncased sizes by default), built from a config, never downloaded."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    max_text_len: int = 256  #: tokens kept after the sub-sentence masks are built (longer text is cut)
    #: BERT's hidden and attention-probability dropout (bert-base-uncased: 0.1). Active in training only: the
    #: official trainer keeps BERT in train mode (its LayerNorms train), so this dropout is on in its step.
    dropout: float = 0.1


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the encoder/decoder linears (official: rank 32, alpha 1, scale 1/32)."""

    rank: int = 32  #: 0 disables LoRA entirely
    alpha: float = 1.0  #: scale = alpha / rank
    encoder: bool = True  #: adapters on `transformer.encoder` linears
    decoder: bool = True  #: adapters on `transformer.decoder` linears (incl. ref_point_head)
    merged: bool = False  #: adapters already folded into the weights (plain linears, inference)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.rank else 0.0

    @property
    def active_rank(self) -> int:
        """Rank of the adapter modules to build (0 when disabled or merged)."""
        return 0 if self.merged else self.rank


@dataclass(frozen=True)
class ReferDinoConfig:
    """The whole ReferDINO model (GroundingDINO + pruning + temporal enhancer + mask head)."""

    swin: SwinConfig = field(default_factory=SwinConfig)
    text: TextConfig = field(default_factory=TextConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    d_model: int = 256  #: transformer width
    num_heads: int = 8  #: heads of decoder/encoder attention
    num_feature_levels: int = 4  #: encoder levels (strides 8, 16, 32, 64)
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 2048  #: FFN width in encoder image layers and decoder layers
    enc_points: int = 4  #: deformable sampling points per level in the encoder
    dec_points: int = 4  #: deformable sampling points per level in the decoder
    fusion_dim: int = 1024  #: embed dim of the image-text bi-attention (4 heads)
    fusion_heads: int = 4
    fusion_drop_path: float = 0.1  #: stochastic depth on the fusion residuals (training only)
    text_layer_heads: int = 4  #: heads of the text self-attention layers
    text_layer_ffn: int = 1024  #: FFN width of the text self-attention layers
    num_queries: int = 900  #: two-stage queries selected per frame
    query_decay: float = 0.5  #: kept fraction after each decoder layer (ceil); 1.0 disables pruning
    pruning_score: PruningScore = "official"  #: gate: official code ("official") or paper formula ("paper")
    #: > 0 (not official): pruning passes over a query whose box overlaps a more confident kept one by more than
    #: this IoU, so the queries left are distinct objects (see referdino.modeling.query_pruning). No weights.
    pruning_distinct_iou: float = 0.0
    temporal_layers: int = 3  #: blocks of the cross-modal temporal decoder (0 disables the enhancer)
    #: temporal decoder input: "none" (official: no position, so blind to the order of frames) or "time_box"
    #: (not official: each track's normalised time and tracked box are encoded into it; see MotionEncoding)
    temporal_position: TemporalPosition = "none"
    #: the temporal decoder's per-frame sentence feature: "cls", the enhanced [CLS] row (official; under the
    #: sub-sentence mask [CLS] never attends to the words, so the decoder does not know what was said), or
    #: "tokens", the mean of the real enhanced text tokens (not official: it carries the words). No weights.
    temporal_sentence: TemporalSentence = "cls"
    #: not official: a second motion encoding of each track (its box trajectory through a small MLP) added to the
    #: query features the class head reads, and only to those, so the motion words are matched against the
    #: motion directly (see MotionLogit). Part of the temporal enhancer: nothing without temporal layers.
    motion_logit: bool = False
    #: how the referring logit reduces the query-token dot products: "max" over tokens (official, GroundingDINO's
    #: class head) or "mean" over the real tokens (not official; a sum of word matches can express "red AND
    #: square", a max cannot without contextual tokens). Used by the class heads, the encoder's top-k and the
    #: pruning gate; the tracker's confidence keeps the official max.
    class_token_reduce: TokenReduce = "max"
    tracking_alpha: float = 0.1  #: memory update rate of the tracker
    tracker_confidence: TrackerConfidence = "official"  #: min-max max-token logit, or paper's cosine
    #: weight of the L1 distance between a slot's last box and a query's box in the tracker's matching cost
    #: (0: official, appearance only; > 0 keeps look-alike objects apart, see referdino.modeling.tracker)
    tracker_box_cost: float = 0.0
    mask_layers: int = 3  #: deformable mask-decoder layers
    mask_points: int = 16  #: sampling points of the mask decoder
    mask_ffn: int = 1024  #: FFN width of the mask decoder
    mask_dim: int = 256  #: channels of F_seg
    pixel_decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)  #: FPN widths lay1..lay5
    input_proj_groups: int = 32  #: GroupNorm groups of the input projections
    frame_chunk: int = 36  #: frames through backbone/encoder/decoder at once at inference

    def validate(self) -> "ReferDinoConfig":
        errors = []
        if len(self.swin.depths) != 4 or len(self.swin.num_heads) != 4:
            errors.append("swin.depths and swin.num_heads need 4 entries (4 stages)")
        if self.d_model % self.num_heads:
            errors.append(f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.fusion_dim % self.fusion_heads:
            errors.append("fusion_dim must be divisible by fusion_heads")
        if self.num_feature_levels != 4:
            errors.append("num_feature_levels must be 4 (three Swin stages plus one extra level)")
        if not 0.0 < self.query_decay <= 1.0:
            errors.append(f"query_decay must be in (0, 1], got {self.query_decay}")
        if self.pruning_score not in ("official", "paper"):
            errors.append(f"pruning_score must be 'official' or 'paper', got {self.pruning_score!r}")
        if self.temporal_position not in ("none", "time_box"):
            errors.append(f"temporal_position must be 'none' or 'time_box', got {self.temporal_position!r}")
        if self.temporal_sentence not in ("cls", "tokens"):
            errors.append(f"temporal_sentence must be 'cls' or 'tokens', got {self.temporal_sentence!r}")
        if self.class_token_reduce not in ("max", "mean"):
            errors.append(f"class_token_reduce must be 'max' or 'mean', got {self.class_token_reduce!r}")
        if self.tracker_confidence not in ("official", "paper"):
            errors.append(f"tracker_confidence must be 'official' or 'paper', got {self.tracker_confidence!r}")
        if not 0.0 <= self.pruning_distinct_iou < 1.0:
            errors.append(f"pruning_distinct_iou must be in [0, 1), got {self.pruning_distinct_iou}")
        if not self.tracker_box_cost >= 0:
            errors.append(f"tracker_box_cost must be >= 0, got {self.tracker_box_cost}")
        if self.d_model % self.input_proj_groups:
            errors.append("d_model must be divisible by input_proj_groups")
        if self.lora.rank < 0:
            errors.append("lora.rank must be >= 0")
        if self.pixel_decoder_channels[-1] % 8 or any(c % 8 for c in self.pixel_decoder_channels):
            errors.append("pixel_decoder_channels must be multiples of 8 (GroupNorm with 8 groups)")
        if errors:
            raise ValueError("invalid ReferDinoConfig: " + "; ".join(errors))
        return self

    @property
    def query_counts(self) -> tuple[int, ...]:
        """Queries entering each decoder layer, then the number kept by the last one."""
        counts = [self.num_queries]
        for _ in range(self.dec_layers):
            counts.append(_ceil_keep(counts[-1], self.query_decay))
        return tuple(counts)

    # ---- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReferDinoConfig":
        return _from_dict(cls, data, "config").validate()

    def replace(self, **changes: Any) -> "ReferDinoConfig":
        return dataclasses.replace(self, **changes).validate()

    def with_merged_lora(self, merged: bool = True) -> "ReferDinoConfig":
        """The same model with LoRA adapters folded into plain linears (inference) or kept separate."""
        return self.replace(lora=dataclasses.replace(self.lora, merged=merged))


def _ceil_keep(n: int, decay: float) -> int:
    import math

    return max(1, math.ceil(n * decay))


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = {"swin": SwinConfig, "text": TextConfig, "lora": LoraConfig}.get(name) if cls is ReferDinoConfig else None
        if sub is not None:
            kwargs[name] = _from_dict(sub, value, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


SWIN_T = SwinConfig()
SWIN_B = SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)

_DATASETS = ("ytvos", "mevis", "davis", "a2d", "jhmdb", "coco")


def _preset(dataset: str, backbone: str) -> ReferDinoConfig:
    swin = SWIN_T if backbone == "swint" else SWIN_B
    temporal_layers = 1 if dataset == "a2d" else 3
    lora = LoraConfig(encoder=not (dataset == "a2d" and backbone == "swint"))
    return ReferDinoConfig(swin=swin, lora=lora, temporal_layers=temporal_layers)


PRESETS: dict[str, ReferDinoConfig] = {
    f"{d}_{b}": _preset(d, b) for d in _DATASETS for b in ("swint", "swinb")
}

#: A tiny model for tests and the synthetic world: same structure, small widths.
PRESETS["tiny"] = ReferDinoConfig(
    swin=SwinConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=7),
    text=TextConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=512),
    lora=LoraConfig(rank=4),
    d_model=32,
    num_heads=4,
    enc_layers=2,
    dec_layers=3,
    dim_feedforward=64,
    fusion_dim=64,
    fusion_heads=2,
    text_layer_heads=2,
    text_layer_ffn=64,
    num_queries=40,
    temporal_layers=2,
    mask_layers=2,
    mask_points=4,
    mask_ffn=64,
    mask_dim=32,
    pixel_decoder_channels=(32, 32, 16, 16, 8),
    input_proj_groups=8,
)


def get_preset(name: str) -> ReferDinoConfig:
    """Return a preset by name (`ytvos_swint`, `mevis_swinb`, ..., `tiny`)."""
    try:
        return PRESETS[name].validate()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None
