"""`transformers`' GroundingDINO (`GroundingDinoForObjectDetection`) state dicts -> ours.

The mapping is declarative. Every rule pairs `transformers` key templates with one of our templates;
`{i}`/`{j}` stand for integers and `{kind}` for `weight|bias`. A template ending in "." renames a prefix
(the rest of the key is kept), any other template names a whole key. Four tables:

* `_PACKED`: separate query/key/value linears that we keep packed (`nn.MultiheadAttention.in_proj_*`, Swin's
  `qkv`): the three tensors are concatenated in q, k, v order.
* `_TIED`: the box head that `transformers` registers once per decoder layer, twice (`bbox_embed.{i}` and
  `model.decoder.bbox_embed.{i}`): every copy must be equal, one is kept.
* `IGNORED_HF`: keys that are deliberately not loaded (checked where they carry information).
* `_RENAMES`: everything else, a rename without a tensor change.

Both Swin layouts are read: the current one (`swin.` prefix, `q_proj/k_proj/v_proj/o_proj`,
`relative_position_bias.relative_position_bias_table`) and the one of checkpoints written by older
`transformers` versions (no `swin.`, `attention.self.query`, `attention.output.dense`, `intermediate.dense`,
`output.dense`, persistent `relative_position_index`). Every source key is used exactly once or ignored by a
declared pattern; anything else is a `CheckpointError` naming the keys.

`transformers` derives the text-layer and fusion widths from the encoder's (`encoder_ffn_dim // 2`,
`encoder_attention_heads // 2`), as the official code does: `config_from_hf` builds the matching
`ReferDinoConfig`. The converted weights fill the GroundingDINO part only; the ReferDINO-only modules
(`REFERDINO_ONLY`) keep their initialisation, so load with
``load_state_dict_strict(model, sd, allow_missing=REFERDINO_ONLY, source=...)``.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import ReferDinoConfig, SwinConfig, TextConfig
from ..modeling.swin import relative_position_index
from ..processing.text import SPECIAL_TOKEN_IDS
from ..weights import WEIGHTS_NAME, CheckpointError, _matches, read_json_file, read_safetensors

from .groundingdino import REFERDINO_ONLY  # the ReferDINO-only keys of any GroundingDINO source

_SWIN = ("model.backbone.conv_encoder.model.swin.", "model.backbone.conv_encoder.model.")  # current, older
_BLOCK = "encoder.layers.{i}.blocks.{j}."
_ENC = "model.encoder.layers.{i}."
_DEC = "model.decoder.layers.{i}."

#: names of the q, k, v parts (packing order) in either layout
_QKV = ("query", "key", "value")
_QKV_PROJ = ("q_proj", "k_proj", "v_proj")
_QKV_PARTS = {name: i for names in (_QKV, _QKV_PROJ) for i, name in enumerate(names)}

#: (transformers templates, the first one canonical; our template; the part names of the canonical template);
#: `{q}` stands for the q/k/v part
_PACKED: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = [
    ((_ENC + "text_enhancer_layer.self_attn.{q}.{kind}",), "encoder.text_layers.{i}.self_attn.in_proj_{kind}", _QKV),
    ((_DEC + "self_attn.{q}.{kind}",), "decoder.layers.{i}.self_attn.in_proj_{kind}", _QKV),
    ((_DEC + "encoder_attn_text.{q}.{kind}",), "decoder.layers.{i}.ca_text.in_proj_{kind}", _QKV),
    (
        tuple(p + _BLOCK + "attention.{q}.{kind}" for p in _SWIN)
        + tuple(p + _BLOCK + "attention.self.{q}.{kind}" for p in _SWIN),
        "backbone.layers.{i}.blocks.{j}.attn.qkv.{kind}",
        _QKV_PROJ,
    ),
]

_TIED: list[tuple[tuple[str, ...], str]] = [
    (("bbox_embed.{i}.", "model.decoder.bbox_embed.{i}."), "decoder.bbox_embed."),
]

#: (pattern, reason); regexes on transformers keys
IGNORED_HF: tuple[tuple[str, str], ...] = (
    (r"^model\.backbone\.conv_encoder\.model\.(swin\.)?layernorm\.", "Swin's final norm, unused by GroundingDINO"),
    (r"\.attention\.(self|relative_position_bias)\.relative_position_index$", "recomputed (checked)"),
    (r"^model\.text_backbone\.embeddings\.(position_ids|token_type_ids)$", "BERT buffers, recomputed"),
    (r"^model\.text_backbone\.pooler\.", "BERT pooler, unused"),
    (r"^model\.special_tokens$", "delimiter token ids (checked)"),
)


def _swin(new: str, *old: str) -> tuple[str, ...]:
    return tuple(p + t for t in (new, *old) for p in _SWIN)


_RENAMES: list[tuple[tuple[str, ...], str]] = [
    (("model.level_embed",), "level_embed"),
    # Swin
    (_swin("embeddings.patch_embeddings.projection."), "backbone.patch_embed.proj."),
    (_swin("embeddings.norm."), "backbone.patch_embed.norm."),
    (_swin(_BLOCK + "layernorm_before."), "backbone.layers.{i}.blocks.{j}.norm1."),
    (_swin(_BLOCK + "layernorm_after."), "backbone.layers.{i}.blocks.{j}.norm2."),
    (
        _swin(
            _BLOCK + "attention.relative_position_bias.relative_position_bias_table",
            _BLOCK + "attention.self.relative_position_bias_table",
        ),
        "backbone.layers.{i}.blocks.{j}.attn.relative_position_bias_table",
    ),
    (
        _swin(_BLOCK + "attention.o_proj.", _BLOCK + "attention.output.dense."),
        "backbone.layers.{i}.blocks.{j}.attn.proj.",
    ),
    (_swin(_BLOCK + "mlp.fc1.", _BLOCK + "intermediate.dense."), "backbone.layers.{i}.blocks.{j}.mlp.fc1."),
    (_swin(_BLOCK + "mlp.fc2.", _BLOCK + "output.dense."), "backbone.layers.{i}.blocks.{j}.mlp.fc2."),
    (_swin("encoder.layers.{i}.downsample."), "backbone.layers.{i}.downsample."),
    # SwinBackbone's output norms exist for out_indices (2, 3, 4) only: our norm1..norm3 (norm0 is ReferDINO's)
    (("model.backbone.conv_encoder.model.hidden_states_norms.stage2.",), "backbone.norm1."),
    (("model.backbone.conv_encoder.model.hidden_states_norms.stage3.",), "backbone.norm2."),
    (("model.backbone.conv_encoder.model.hidden_states_norms.stage4.",), "backbone.norm3."),
    # text
    (("model.text_backbone.",), "text_encoder.bert."),
    (("model.text_projection.",), "text_encoder.projection."),
    # image projections, content queries ("query_position_embeddings" holds GroundingDINO's tgt_embed)
    (("model.input_proj_vision.",), "input_proj."),
    (("model.query_position_embeddings.",), "query_embed."),
    # feature enhancer
    ((_ENC + "deformable_layer.self_attn.",), "encoder.layers.{i}.self_attn."),
    ((_ENC + "deformable_layer.self_attn_layer_norm.",), "encoder.layers.{i}.norm1."),
    ((_ENC + "deformable_layer.fc1.",), "encoder.layers.{i}.linear1."),
    ((_ENC + "deformable_layer.fc2.",), "encoder.layers.{i}.linear2."),
    ((_ENC + "deformable_layer.final_layer_norm.",), "encoder.layers.{i}.norm2."),
    ((_ENC + "text_enhancer_layer.self_attn.out_proj.",), "encoder.text_layers.{i}.self_attn.out_proj."),
    ((_ENC + "text_enhancer_layer.fc1.",), "encoder.text_layers.{i}.linear1."),
    ((_ENC + "text_enhancer_layer.fc2.",), "encoder.text_layers.{i}.linear2."),
    ((_ENC + "text_enhancer_layer.layer_norm_before.",), "encoder.text_layers.{i}.norm1."),
    ((_ENC + "text_enhancer_layer.layer_norm_after.",), "encoder.text_layers.{i}.norm2."),
    ((_ENC + "fusion_layer.vision_param",), "encoder.fusion_layers.{i}.gamma_v"),
    ((_ENC + "fusion_layer.text_param",), "encoder.fusion_layers.{i}.gamma_l"),
    ((_ENC + "fusion_layer.layer_norm_vision.",), "encoder.fusion_layers.{i}.layer_norm_v."),
    ((_ENC + "fusion_layer.layer_norm_text.",), "encoder.fusion_layers.{i}.layer_norm_l."),
    ((_ENC + "fusion_layer.attn.vision_proj.",), "encoder.fusion_layers.{i}.attn.v_proj."),
    ((_ENC + "fusion_layer.attn.text_proj.",), "encoder.fusion_layers.{i}.attn.l_proj."),
    ((_ENC + "fusion_layer.attn.values_vision_proj.",), "encoder.fusion_layers.{i}.attn.values_v_proj."),
    ((_ENC + "fusion_layer.attn.values_text_proj.",), "encoder.fusion_layers.{i}.attn.values_l_proj."),
    ((_ENC + "fusion_layer.attn.out_vision_proj.",), "encoder.fusion_layers.{i}.attn.out_v_proj."),
    ((_ENC + "fusion_layer.attn.out_text_proj.",), "encoder.fusion_layers.{i}.attn.out_l_proj."),
    # two-stage query selection
    (("model.enc_output.",), "query_selection.enc_output."),
    (("model.enc_output_norm.",), "query_selection.enc_output_norm."),
    (("model.encoder_output_bbox_embed.",), "query_selection.enc_out_bbox_embed."),
    # decoder
    ((_DEC + "self_attn.out_proj.",), "decoder.layers.{i}.self_attn.out_proj."),
    ((_DEC + "self_attn_layer_norm.",), "decoder.layers.{i}.norm2."),
    ((_DEC + "encoder_attn_text.out_proj.",), "decoder.layers.{i}.ca_text.out_proj."),
    ((_DEC + "encoder_attn_text_layer_norm.",), "decoder.layers.{i}.catext_norm."),
    ((_DEC + "encoder_attn.",), "decoder.layers.{i}.cross_attn."),
    ((_DEC + "encoder_attn_layer_norm.",), "decoder.layers.{i}.norm1."),
    ((_DEC + "fc1.",), "decoder.layers.{i}.linear1."),
    ((_DEC + "fc2.",), "decoder.layers.{i}.linear2."),
    ((_DEC + "final_layer_norm.",), "decoder.layers.{i}.norm3."),
    (("model.decoder.layer_norm.",), "decoder.norm."),
    (("model.decoder.reference_points_head.",), "decoder.ref_point_head."),
]

_PLACEHOLDERS = {
    "i": r"\d+",
    "j": r"\d+",
    "kind": r"weight|bias",
    "q": "|".join(_QKV_PARTS),
}


@lru_cache(maxsize=None)
def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(piece) if k % 2 == 0 else f"(?P<{piece}>{_PLACEHOLDERS[piece]})" for k, piece in enumerate(parts)
    )
    tail = "(?P<rest>.*)" if template.endswith(".") else ""
    return re.compile(f"^{regex}{tail}$")


def _apply(key: str, sources: tuple[str, ...], target: str) -> tuple[str, dict[str, str]] | None:
    """Match `key` against the `sources` templates; return (our key, groups) for the first match."""
    for template in sources:
        m = _compile(template).match(key)
        if m is not None:
            groups = m.groupdict()
            rest = groups.pop("rest", "") or ""
            fields = {k: v for k, v in groups.items() if k != "q"}
            return target.format(**fields) + rest, groups
    return None


def _ignored(key: str) -> bool:
    return any(re.search(pattern, key) for pattern, _ in IGNORED_HF)


def to_hf(name: str) -> list[str]:
    """The canonical `transformers` key(s) that fill our key `name` (three for packed q/k/v, [] if none)."""
    for sources, target, names in _PACKED:
        m = _compile(target).match(name)
        if m is not None:
            return [sources[0].format(q=q, **m.groupdict()) for q in names]
    for sources, target in _TIED + _RENAMES:
        m = _compile(target).match(name)
        if m is not None:
            fields = m.groupdict()
            rest = fields.pop("rest", "") or ""
            fields.setdefault("i", "0")
            return [sources[0].format(**fields) + rest]
    return []


def _check_ignored(key: str, value: torch.Tensor, config: ReferDinoConfig) -> str | None:
    """Validate an ignored key that carries information; return a problem or None."""
    if key.endswith("relative_position_index"):
        window = round(value.numel() ** 0.25)
        if window != config.swin.window_size:
            return f"{key} is for window {window}, the config's is {config.swin.window_size}"
        if not torch.equal(value.reshape(-1).long(), relative_position_index(window).reshape(-1)):
            return f"{key} differs from the standard Swin relative position index"
    elif key == "model.special_tokens" and value.reshape(-1).tolist() != list(SPECIAL_TOKEN_IDS):
        return f"{key} is {value.tolist()}, expected {list(SPECIAL_TOKEN_IDS)}"
    return None


@lru_cache(maxsize=8)
def _expected_shapes(config: ReferDinoConfig) -> dict[str, tuple[int, ...]]:
    from ..modeling.referdino import ReferDino

    with torch.device("meta"):
        model = ReferDino(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _one_line(label: str, items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
    return f"{len(items)} {label}: {shown}"


def convert_hf(
    state: Mapping[str, torch.Tensor], config: ReferDinoConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`GroundingDinoForObjectDetection.state_dict()` -> (our state dict, source keys deliberately not loaded).

    The second list holds the keys matched by `IGNORED_HF` and the redundant copies of tied tensors.
    The result is checked against `config` (with LoRA merged: plain linears); every source key that does not
    fit, and every GroundingDINO key of ours that no source fills, is reported in one `CheckpointError`.
    """
    config = config.with_merged_lora()
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # our key -> source key(s), for messages
    ignored: list[str] = []
    unknown: list[str] = []
    problems: list[str] = []
    twice: list[str] = []
    packs: dict[str, dict[int, tuple[str, torch.Tensor]]] = {}
    tied: dict[str, list[tuple[str, torch.Tensor]]] = {}

    def put(ours: str, value: torch.Tensor, source: str) -> None:
        if ours in out:
            twice.append(f"{source} and {origin[ours]} -> {ours}")
            return
        out[ours] = value
        origin[ours] = source

    for key, value in state.items():
        if _ignored(key):
            problem = _check_ignored(key, value, config)
            if problem:
                problems.append(problem)
            ignored.append(key)
            continue
        hit = next((r for sources, target, _ in _PACKED if (r := _apply(key, sources, target))), None)
        if hit is not None:
            ours, groups = hit
            parts = packs.setdefault(ours, {})
            index = _QKV_PARTS[groups["q"]]
            if index in parts:
                twice.append(f"{key} and {parts[index][0]} -> {ours}")
            else:
                parts[index] = (key, value)
            continue
        hit = next((r for sources, target in _TIED if (r := _apply(key, sources, target))), None)
        if hit is not None:
            tied.setdefault(hit[0], []).append((key, value))
            continue
        hit = next((r for sources, target in _RENAMES if (r := _apply(key, sources, target))), None)
        if hit is None:
            unknown.append(key)
            continue
        put(hit[0], value, key)

    absent: list[str] = []  # source keys that a complete set would have
    for ours, parts in packs.items():
        if sorted(parts) != [0, 1, 2]:
            key, _ = next(iter(parts.values()))
            m = re.search(r"\.(\w+)\.(weight|bias)$", key)
            assert m is not None  # every packed template ends with {q}.{kind}
            names = _QKV if m.group(1) in _QKV else _QKV_PROJ
            stem = key[: m.start()]
            absent += [f"{stem}.{names[i]}.{m.group(2)}" for i in range(3) if i not in parts]
            origin[ours] = key
            continue
        put(ours, torch.cat([parts[i][1] for i in range(3)], 0), "+".join(parts[i][0] for i in range(3)))
    for ours, copies in tied.items():
        canonical = to_hf(ours)  # keep that copy when present (what save_pretrained keeps), else the first
        copies.sort(key=lambda kv: kv[0] not in canonical)
        (first, value), rest = copies[0], copies[1:]
        differ = [k for k, v in rest if v.shape != value.shape or not (v.is_meta or torch.equal(v, value))]
        if differ:
            problems.append(
                f"tied copies differ: {', '.join(differ[:4])} != {first} (a per-layer box head,"
                " decoder_bbox_embed_share=False, is not supported)"
            )
        put(ours, value, first)
        ignored.extend(k for k, _ in rest)

    expected = _expected_shapes(config)
    unexpected = [f"{origin[k]} (as {k})" for k in out if k not in expected]
    mismatched = [
        f"{origin[k]}: checkpoint {tuple(v.shape)} vs model {expected[k]}"
        for k, v in out.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    missing = absent + [
        name
        for k in expected
        if k not in out and k not in origin and not _matches(k, REFERDINO_ONLY)
        for name in (to_hf(k) or [k])
    ]
    parts = []
    if unknown:
        parts.append(_one_line("unknown key(s)", unknown))
    if unexpected:
        parts.append(_one_line("key(s) this config does not have", unexpected))
    if mismatched:
        parts.append(_one_line("mis-shaped key(s)", mismatched))
    if missing:
        parts.append(_one_line("missing key(s)", missing))
    if twice:
        parts.append(_one_line("key(s) given twice", twice))
    parts.extend(problems)
    if parts:
        raise CheckpointError("not a transformers GroundingDINO state dict for this config: " + "; ".join(parts))
    return out, ignored


# ---------------------------------------------------------------------------------------------- config
def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"expected a GroundingDinoConfig or its dict, got {type(config).__name__}")


def config_from_hf(hf_config: Any, base: ReferDinoConfig | None = None) -> ReferDinoConfig:
    """The `ReferDinoConfig` whose GroundingDINO part matches a `transformers` `GroundingDinoConfig` (object or
    `config.json` dict). ReferDINO-only settings (pruning, temporal decoder, mask head) come from `base`
    (default: `ReferDinoConfig()`); LoRA is set to merged (plain linears). Settings that change behaviour in a
    way we do not implement raise `CheckpointError`, all listed at once."""
    c = _as_dict(hf_config)
    swin = _as_dict(c.get("backbone_config") or {})
    text = _as_dict(c.get("text_config") or {})
    expect = {
        "two_stage": True,
        "embedding_init_target": True,
        "decoder_bbox_embed_share": True,
        "two_stage_bbox_embed_share": False,
        "position_embedding_type": "sine",
        "positional_embedding_temperature": 20,
        "query_dim": 4,
        "activation_function": "relu",
        "num_feature_levels": 4,
        "layer_norm_eps": 1e-5,
        "use_timm_backbone": False,
    }
    bad = [f"{k}={c[k]!r} (need {v!r})" for k, v in expect.items() if k in c and c[k] != v]
    if c.get("encoder_attention_heads") != c.get("decoder_attention_heads"):
        bad.append("encoder_attention_heads != decoder_attention_heads")
    if c.get("encoder_ffn_dim") != c.get("decoder_ffn_dim"):
        bad.append("encoder_ffn_dim != decoder_ffn_dim")
    swin_expect = {
        "model_type": "swin",
        "use_absolute_embeddings": False,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "layer_norm_eps": 1e-5,
        "num_channels": 3,
    }
    bad += [f"backbone_config.{k}={swin.get(k)!r} (need {v!r})" for k, v in swin_expect.items() if swin.get(k, v) != v]
    if list(swin.get("out_indices") or [2, 3, 4]) != [2, 3, 4]:
        bad.append(f"backbone_config.out_indices={swin.get('out_indices')!r} (need [2, 3, 4])")
    text_expect = {"model_type": "bert", "hidden_act": "gelu", "layer_norm_eps": 1e-12, "type_vocab_size": 2}
    bad += [f"text_config.{k}={text.get(k)!r} (need {v!r})" for k, v in text_expect.items() if text.get(k, v) != v]
    if not swin:
        bad.append("no backbone_config (a Swin backbone is needed)")
    d_model = c.get("d_model", 256)
    if d_model % 32:  # transformers (and official) input projections use GroupNorm(32)
        bad.append(f"d_model={d_model} is not divisible by the 32 GroupNorm groups of the input projections")
    if bad:
        raise CheckpointError("unsupported transformers GroundingDINO config: " + "; ".join(bad))

    base = (base or ReferDinoConfig()).with_merged_lora()
    patch = swin.get("patch_size", 4)
    heads = c.get("encoder_attention_heads", 8)
    ffn = c.get("encoder_ffn_dim", 2048)
    defaults = TextConfig()
    return base.replace(
        input_proj_groups=32,
        swin=SwinConfig(
            embed_dim=swin.get("embed_dim", 96),
            depths=tuple(swin.get("depths", (2, 2, 6, 2))),
            num_heads=tuple(swin.get("num_heads", (3, 6, 12, 24))),
            window_size=swin.get("window_size", 7),
            mlp_ratio=float(swin.get("mlp_ratio", 4.0)),
            patch_size=patch[0] if isinstance(patch, (list, tuple)) else patch,
        ),
        text=TextConfig(
            vocab_size=text.get("vocab_size", defaults.vocab_size),
            hidden_size=text.get("hidden_size", defaults.hidden_size),
            num_layers=text.get("num_hidden_layers", defaults.num_layers),
            num_heads=text.get("num_attention_heads", defaults.num_heads),
            intermediate_size=text.get("intermediate_size", defaults.intermediate_size),
            max_position_embeddings=text.get("max_position_embeddings", defaults.max_position_embeddings),
            max_text_len=c.get("max_text_len", defaults.max_text_len),
        ),
        d_model=d_model,
        num_heads=heads,
        enc_layers=c.get("encoder_layers", 6),
        dec_layers=c.get("decoder_layers", 6),
        dim_feedforward=ffn,
        enc_points=c.get("encoder_n_points", 4),
        dec_points=c.get("decoder_n_points", 4),
        fusion_dim=ffn // 2,
        fusion_heads=heads // 2,
        text_layer_heads=heads // 2,
        text_layer_ffn=ffn // 2,
        num_queries=c.get("num_queries", 900),
    )


# ---------------------------------------------------------------------------------------------- files
def load_hf_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `transformers` checkpoint: a `.safetensors` file, or a folder with `model.safetensors` (or a
    sharded `model.safetensors.index.json`)."""
    p = Path(path)
    if p.is_file():
        return read_safetensors(p)
    if p.is_dir():
        if (p / WEIGHTS_NAME).is_file():
            return read_safetensors(p / WEIGHTS_NAME)
        index = p / f"{WEIGHTS_NAME}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise CheckpointError(f"{index} is not a safetensors index ({exc})") from None
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(read_safetensors(p / shard))
            return state
        raise CheckpointError(f"{p} has no {WEIGHTS_NAME}: is it a transformers GroundingDINO folder?")
    raise CheckpointError(f"checkpoint not found: {p}")


def load_hf_config(path: str | os.PathLike, base: ReferDinoConfig | None = None) -> ReferDinoConfig:
    """`config_from_hf` of the `config.json` in a `transformers` folder."""
    p = Path(path)
    file = p / "config.json" if p.is_dir() else p.with_name("config.json")
    if not file.is_file():
        raise CheckpointError(f"no config.json beside {p}: give the ReferDINO config explicitly")
    return config_from_hf(read_json_file(file), base)


__all__ = [
    "IGNORED_HF",
    "REFERDINO_ONLY",
    "config_from_hf",
    "convert_hf",
    "load_hf_config",
    "load_hf_state_dict",
    "to_hf",
]
