"""Second parity test: `transformers`' GroundingDINO (`GroundingDinoForObjectDetection`) vs our GroundingDINO part.

A tiny random `GroundingDinoConfig` (Swin with 4 stages, out_indices (2, 3, 4); 2-layer BERT; d_model 128, 4
heads, 2 encoder / 3 decoder layers, 30 queries, two-stage) is built from configs only (nothing downloaded),
every parameter is redrawn (no zero offsets, layer scales around 0.5), converted with `convert_hf` and loaded
into `ReferDino` built by `config_from_hf` with query_decay=1.0 (no pruning). In float32 eval mode, on random
images and captions tokenised by `referdino.processing.text.tokenize`, we compare Swin stages 1..3, projected
BERT features, encoder memory and enhanced text, the two-stage scores / top-k indices / initial references, every
decoder layer's normed hidden state and refined boxes, and the final heads (HF's per-token logits reduced by the
max over valid tokens = our `contrastive_logit`; HF `pred_boxes` = our `predict_layer` boxes). Tolerance:
max|diff| <= 1e-4 * max|ref| + 1e-6; measured: max|diff| / max|ref| <= 2e-6 everywhere (float32 rounding). Image sizes:
128x192 with window 2 (no Swin padding anywhere), 61x67 with window 2 (padding in patch embedding, windows and
patch merging; last stage 2x3) and 64x96 with window 7 (every stage smaller than or not a multiple of the window):
HF's Swin pads exactly as the official one, so all agree.

Where `transformers` differs from the official GroundingDINO (and us):

1. Box refinement and the final box head use `torch.special.logit(x, eps=1e-5)` (x clamped to [1e-5, 1-1e-5]);
   official uses `inverse_sigmoid(x, eps=1e-3)` (log(max(x, 1e-3) / max(1 - x, 1e-3))). Identical while every
   reference coordinate lies in [1e-3, 1 - 1e-3] (asserted here), different otherwise: tiny boxes, and on real
   images invalid border anchors (+inf logit -> reference exactly 1.0: HF logit 11.5, official 6.9) when such a
   token wins the top-k. `test_logit_eps_is_the_only_difference` saturates the proposals, sees the outputs
   differ, and agreement return when `torch.special.logit` is replaced by the official inverse sigmoid.
2. Captions longer than `max_text_len`: `GroundingDinoModel` truncates ids and masks, but
   `GroundingDinoForObjectDetection`'s class head uses the untruncated `attention_mask` and fails with a size
   mismatch (official truncates everything). Our `tokenize` truncates first, so the inputs here never exceed it.
3. Sub-sentence masks / text position ids (`generate_masks_with_special_tokens_and_transfer_map`, vectorised):
   the same as official for tokenizer output (asserted below). They differ only for ids that do not start with
   a delimiter: HF puts token 0 into the first phrase (positions 0, 1, 2, ...), official keeps token 0 alone
   (and official carries `previous_col` across batch rows); BERT tokenisation always starts with [CLS].
4. Padding masks are added as `finfo.min` (text self-attention, decoder text cross-attention) instead of -inf:
   identical, every row keeps at least itself / one real token.
5. Swin: `SwinLayer` clamps the window and drops the shift when min(H, W) <= window unless
   `always_partition=True`; the `SwinBackbone` of the installed transformers passes it, so behaviour is official
   (the 61x67 and window-7 cases have stages no larger than the window). Only stages 2..4 have output norms
   (no stride-4 `norm0`, which is ReferDINO's), and `swin.layernorm` exists but is unused.
6. Layout, not behaviour: separate q/k/v linears (packed into `in_proj_*` / Swin `qkv`), the box head stored
   once per decoder layer and twice (`bbox_embed.{i}`, `model.decoder.bbox_embed.{i}`, tied),
   `query_position_embeddings` holding the content queries (official `tgt_embed`), fusion/text-layer widths
   derived as encoder_ffn_dim // 2 and encoder_attention_heads // 2 (as official).
7. Not a difference: text position ids go to BERT and to the text sine embedding (d_model features; official
   hard-codes 256 = d_model); image sine embedding (temperature 20, normalised, 2*pi, no -0.5 offset); box sine
   embedding (y, x, w, h); two-stage anchors (0.05 * 2^level, valid in (0.01, 0.99), +inf otherwise, memory
   zeroed there), top-k on the max-token score, detached references; bi-attention's global max subtraction and
   clamps; decoder refinement on un-normed and final heads on normed hidden states.

Ours, not HF: the input projections use GroupNorm(min(32, d_model // 4)) groups, HF and official GroupNorm(32):
the same for d_model >= 128 (hence d_model 128 here); `config_from_hf` rejects smaller widths.
"""

from __future__ import annotations

import math
from functools import lru_cache

import pytest
import torch

from referdino.config import get_preset
from referdino.convert.hf import (
    REFERDINO_ONLY,
    config_from_hf,
    convert_hf,
    load_hf_config,
    load_hf_state_dict,
    to_hf,
)
from referdino.modeling.heads import inverse_sigmoid
from referdino.modeling.referdino import ReferDino
from referdino.modeling.swin import relative_position_index
from referdino.processing.text import tokenize
from referdino.weights import CheckpointError, compare_state_dict, load_state_dict_strict

transformers = pytest.importorskip("transformers")
from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection, SwinConfig  # noqa: E402

REL_TOL, ABS_TOL = 1e-4, 1e-6
CAPTIONS = ["the man in a red shirt. dog", "a cat?"]
BASE = get_preset("tiny").replace(query_decay=1.0)  # ReferDINO-only parts: tiny; no pruning


def hf_config(window: int = 2, **changes) -> GroundingDinoConfig:
    swin = SwinConfig(
        embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4], window_size=window, out_indices=[2, 3, 4]
    )
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    kwargs = dict(
        backbone_config=swin, text_config=bert, d_model=128, encoder_layers=2, decoder_layers=3,
        encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_attention_heads=4, decoder_attention_heads=4,
        num_queries=30,
    )
    kwargs.update(changes)
    return GroundingDinoConfig(**kwargs)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Redraw every parameter (tied ones once): weights ~ N(0, 1/fan_in), norms 1 +- 0.1, biases 0.1 N(0, 1),
    fusion layer scales 0.5 +- 0.2 (instead of 1e-4), so that no path is trivially zero or identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = torch.randn(p.shape, generator=g)
            if name.endswith(("vision_param", "text_param")):
                p.copy_(0.5 + 0.2 * x)
            elif p.ndim >= 2:
                p.copy_(x / math.sqrt(math.prod(p.shape[1:])))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * x)
            else:
                p.copy_(0.1 * x)


def build_pair(window: int = 2, tweak=None):  # type: ignore[no-untyped-def]
    hcfg = hf_config(window)
    hf = GroundingDinoForObjectDetection(hcfg).eval()
    randomize(hf)
    if tweak is not None:
        tweak(hf)
    cfg = config_from_hf(hcfg, BASE)
    state, _ = convert_hf(hf.state_dict(), cfg)
    ours = ReferDino(cfg).eval()
    load_state_dict_strict(ours, state, allow_missing=REFERDINO_ONLY, source="transformers GroundingDINO")
    return hf, ours


@lru_cache(maxsize=2)
def cached_pair(window: int):  # type: ignore[no-untyped-def]
    return build_pair(window)


def run_both(hf, ours, images, text):  # type: ignore[no-untyped-def]
    """{name: (ours, transformers)} for every stage we can reach on both sides."""
    n, _, h, w = images.shape
    with torch.no_grad():
        out = hf(
            pixel_values=images, input_ids=text.input_ids, attention_mask=text.token_mask.long(),
            output_hidden_states=True,
        )
        hf_stages = hf.model.backbone.conv_encoder(images, torch.ones(n, h, w, dtype=torch.long))
        record: dict = {}
        feats = ours.encode_text(text)
        stages = ours.encode_images(images)
        g = ours.ground(stages, feats, text.token_mask, text.self_attention_mask, text.position_ids, record=record)
        last = g.layers[-1]
        pred, _, _ = ours.predict_layer(
            last.hidden[:, None], last.reference[:, None], g.enhanced_text[:, None], text.token_mask, None,
            temporal=False,
        )
    pairs = {f"swin stage {i + 1}": (stages[i + 1], hf_stages[i][0]) for i in range(3)}
    pairs["projected BERT"] = (feats, out.encoder_text_hidden_states[0])
    pairs["encoder memory"] = (record["memory"], out.encoder_last_hidden_state_vision)
    pairs["enhanced text"] = (record["enhanced_text"], out.encoder_last_hidden_state_text)
    hf_scores = out.enc_outputs_class.max(-1).values
    pairs["two-stage scores"] = (record["enc_topk_scores"], hf_scores)
    pairs["two-stage references"] = (record["enc_ref_boxes"], out.init_reference_points)
    for i, layer in enumerate(g.layers):
        pairs[f"decoder {i} hidden"] = (layer.hidden, out.intermediate_hidden_states[:, i])
        pairs[f"decoder {i} refined boxes"] = (layer.refined, out.intermediate_reference_points[:, i])
    pairs["final logits"] = (pred.logits[:, 0, :, 0], out.logits.max(-1).values)
    pairs["final boxes"] = (pred.boxes[:, 0], out.pred_boxes)
    extra = {
        "topk": (record["enc_topk_indices"], hf_scores.topk(hf.config.num_queries, dim=1).indices),
        "references": torch.stack([layer.reference for layer in g.layers] + [last.refined]),
    }
    return pairs, extra


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def assert_close(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    diff = (ours - ref).abs().max().item()
    bound = REL_TOL * ref.abs().max().item() + ABS_TOL
    assert diff <= bound, f"{name}: max|diff| {diff:.3g} > {bound:.3g}"


@pytest.mark.parametrize(
    "window, size",
    [(2, (128, 192)), (2, (61, 67)), (7, (64, 96))],
    ids=["no-padding", "padded", "window-7"],
)
def test_hf_parity(window, size):
    hf, ours = cached_pair(window)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    text = tokenize(CAPTIONS)
    pairs, extra = run_both(hf, ours, images, text)
    refs = extra["references"]
    # the logit-eps difference (docstring, 1.) is out of play only while references stay inside [1e-3, 1 - 1e-3]
    assert refs.min() > 1e-3 and refs.max() < 1 - 1e-3, "random weights saturate the boxes: adjust randomize()"
    assert torch.equal(*extra["topk"]), "two-stage top-k differs"
    for name, (a, b) in pairs.items():
        assert torch.isfinite(b).all(), name
        assert_close(name, a, b)


def test_sub_sentence_masks_match_hf():
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        SPECIAL_TOKENS,
        generate_masks_with_special_tokens_and_transfer_map,
    )

    text = tokenize(["a b. c? d", "x", "the cat.. dog ?", "one. two. three. four"])
    mask, position_ids = generate_masks_with_special_tokens_and_transfer_map(
        text.input_ids, torch.tensor(SPECIAL_TOKENS)
    )
    assert torch.equal(mask, text.self_attention_mask)
    assert torch.equal(position_ids, text.position_ids)


def test_logit_eps_is_the_only_difference(monkeypatch):
    """Proposals with w, h ~ 1e-7 (far below both eps): HF's logit(eps=1e-5) and the official inverse sigmoid
    (eps=1e-3) give different refined boxes; with HF's logit replaced by the official one, all agree again."""

    def tiny_boxes(hf):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            hf.model.encoder_output_bbox_embed.layers[-1].bias[2:] = -12.0

    hf, ours = build_pair(2, tweak=tiny_boxes)
    images = torch.randn(2, 3, 128, 192, generator=torch.Generator().manual_seed(1))
    text = tokenize(CAPTIONS)
    pairs, extra = run_both(hf, ours, images, text)
    assert extra["references"][0, ..., 2:].max() < 1e-5
    for name in ("encoder memory", "two-stage scores", "decoder 0 hidden"):
        assert_close(name, *pairs[name])  # everything before the first logit agrees
    ours_boxes, hf_boxes = pairs["decoder 0 refined boxes"]
    assert rel_err(ours_boxes, hf_boxes) > 1e-3  # w, h: ~1e-3 (official) vs ~1e-5 (HF)
    assert_close("centres", ours_boxes[..., :2], hf_boxes[..., :2])

    monkeypatch.setattr(torch.special, "logit", lambda x, eps=None: inverse_sigmoid(x))
    pairs, _ = run_both(hf, ours, images, text)
    for name, (a, b) in pairs.items():
        assert_close(name, a, b)


def test_config_from_hf():
    cfg = config_from_hf(hf_config(), BASE)
    assert (cfg.d_model, cfg.num_heads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward) == (128, 4, 2, 3, 128)
    assert (cfg.fusion_dim, cfg.fusion_heads, cfg.text_layer_heads, cfg.text_layer_ffn) == (64, 2, 2, 64)
    assert (cfg.num_queries, cfg.enc_points, cfg.dec_points, cfg.query_decay) == (30, 4, 4, 1.0)
    assert cfg.swin.depths == (1, 2, 2, 1) and cfg.swin.num_heads == (1, 2, 2, 4) and cfg.swin.window_size == 2
    assert (cfg.text.hidden_size, cfg.text.num_layers, cfg.text.num_heads) == (32, 2, 2)
    assert cfg.lora.merged
    assert config_from_hf(hf_config().to_dict(), BASE) == cfg
    for bad, word in (
        (dict(two_stage=False), "two_stage"),
        (dict(decoder_bbox_embed_share=False), "decoder_bbox_embed_share"),
        (dict(d_model=48), "GroupNorm"),
        (dict(decoder_ffn_dim=256), "decoder_ffn_dim"),
    ):
        with pytest.raises(CheckpointError, match=word):
            config_from_hf(hf_config(**bad), BASE)


@pytest.mark.parametrize("preset", ["ytvos_swint", "ytvos_swinb"])
def test_presets_match_transformers_layouts(preset):
    """Full-size layouts on the meta device (no weights): transformers' default config (grounding-dino-tiny) and
    its Swin-B variant (grounding-dino-base) convert into our Swin-T / Swin-B presets key for key."""
    swin = None
    if preset.endswith("swinb"):
        swin = SwinConfig(
            embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, out_indices=[2, 3, 4]
        )
    hcfg = GroundingDinoConfig(backbone_config=swin)
    with torch.device("meta"):
        hf = GroundingDinoForObjectDetection(hcfg)
    cfg = get_preset(preset)
    assert config_from_hf(hcfg, cfg) == cfg.with_merged_lora()
    ours, _ = convert_hf(hf.state_dict(), cfg)
    with torch.device("meta"):
        model = ReferDino(cfg.with_merged_lora())
    report = compare_state_dict(model, ours, allow_missing=REFERDINO_ONLY)
    assert report.ok and report.ignored
    assert all(k.startswith(("backbone.norm0.", "pixel_", "mask_", "temporal_")) for k in report.ignored)


@pytest.fixture(scope="module")
def converted():
    hf, _ = cached_pair(2)
    cfg = config_from_hf(hf.config, BASE)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    ours, ignored = convert_hf(state, cfg)
    return state, cfg, ours, ignored


def _raises(state, cfg, *needles: str) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError) as info:
        convert_hf(state, cfg)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


def test_conversion_accounts_for_every_key(converted):
    state, cfg, ours, ignored = converted
    # 3 decoder layers x 2 registrations of the box head: one copy kept, the others listed as ignored
    assert sum(k.endswith("bbox_embed.0.layers.0.weight") for k in ignored) == 1
    assert "model.backbone.conv_encoder.model.swin.layernorm.weight" in ignored
    assert not any(k.startswith(REFERDINO_ONLY[0][:-1]) for k in ours)
    # the canonical transformers names of our keys are source keys, and they account for every used key
    names = [n for k in ours for n in to_hf(k)]
    assert len(names) == len(set(names)) and set(names) == set(state) - set(ignored)


def test_conversion_errors_name_the_keys(converted):
    state, cfg, _, _ = converted
    extra = dict(state, **{"model.decoder.layers.0.extra.weight": torch.zeros(3)})
    _raises(extra, cfg, "unknown key(s)", "model.decoder.layers.0.extra.weight")

    missing = {k: v for k, v in state.items() if k != "model.decoder.layers.1.fc1.weight"}
    _raises(missing, cfg, "missing key(s)", "model.decoder.layers.1.fc1.weight")

    shaped = dict(state, **{"model.decoder.layers.1.fc1.weight": torch.zeros(129, 128)})
    _raises(shaped, cfg, "mis-shaped", "model.decoder.layers.1.fc1.weight")

    no_key = {k: v for k, v in state.items() if k != "model.decoder.layers.0.self_attn.key.bias"}
    _raises(no_key, cfg, "model.decoder.layers.0.self_attn.key.bias")

    untied = dict(state, **{"bbox_embed.2.layers.1.bias": state["bbox_embed.2.layers.1.bias"] + 1})
    _raises(untied, cfg, "tied copies differ", "bbox_embed.2.layers.1.bias")

    index_key = "model.backbone.conv_encoder.model.encoder.layers.0.blocks.0.attention.self.relative_position_index"
    bad_index = dict(state, **{index_key: torch.zeros(2, 2, 2, 2, dtype=torch.long)})
    _raises(bad_index, cfg, "relative position index")

    _raises(state, cfg.replace(dec_layers=2), "model.decoder.layers.2.")  # more layers than the config


def _older_swin_layout(state, window):  # type: ignore[no-untyped-def]
    """The key layout of checkpoints written by older transformers (e.g. the hub's grounding-dino-tiny)."""
    import re

    table = [
        (r"\.attention\.q_proj\.", ".attention.self.query."),
        (r"\.attention\.k_proj\.", ".attention.self.key."),
        (r"\.attention\.v_proj\.", ".attention.self.value."),
        (r"\.attention\.o_proj\.", ".attention.output.dense."),
        (r"\.attention\.relative_position_bias\.", ".attention.self."),
        (r"\.mlp\.fc1\.", ".intermediate.dense."),
        (r"\.mlp\.fc2\.", ".output.dense."),
        (r"^model\.backbone\.conv_encoder\.model\.swin\.", "model.backbone.conv_encoder.model."),
    ]
    out = {}
    for key, value in state.items():
        if key.startswith("model.backbone."):
            for pattern, repl in table:
                key = re.sub(pattern, repl, key)
            if key.endswith("relative_position_bias_table"):
                out[key.replace("_bias_table", "_index")] = relative_position_index(window)
        out[key] = value
    return out


def test_older_swin_layout_converts_the_same(converted):
    state, cfg, ours, _ = converted
    old = _older_swin_layout(state, cfg.swin.window_size)
    assert any(".attention.self.query." in k for k in old)
    again, ignored = convert_hf(old, cfg)
    assert again.keys() == ours.keys() and all(torch.equal(again[k], ours[k]) for k in ours)
    assert any(k.endswith("attention.self.relative_position_index") for k in ignored)
    both = dict(state, **{k: v for k, v in old.items() if "blocks.0.attention.self.query" in k})
    _raises(both, cfg, "given twice")


def test_load_hf_folder_and_file(tmp_path, converted):
    hf, _ = cached_pair(2)
    _, cfg, ours, _ = converted
    hf.save_pretrained(tmp_path / "gdino")  # writes config.json + model.safetensors, tied copies deduplicated
    for path in (tmp_path / "gdino", tmp_path / "gdino" / "model.safetensors"):
        state = load_hf_state_dict(path)
        again, _ = convert_hf(state, load_hf_config(path, BASE))
        assert again.keys() == ours.keys() and all(torch.equal(again[k], ours[k]) for k in ours)
    assert load_hf_config(tmp_path / "gdino", BASE) == cfg
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_hf_state_dict(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_hf_state_dict(tmp_path / "nothing")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_hf_state_dict(tmp_path / "broken.safetensors")
