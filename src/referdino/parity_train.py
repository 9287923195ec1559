"""Training-step parity with the official implementation (`referdino parity --train FIXTURE.npz`).

A training fixture (`train/README.md` of the official fixtures) records ONE official training step: the
inputs and targets, every discrete choice of the training forward (top-900, six prunings, a tracking
permutation per decoder layer, the seven matcher calls), the outputs the criterion consumes, the 42 losses,
their total, and the gradients before the clip. We fill the same official-named weights, convert them with
LoRA kept separate, freeze as the official trainer does, and run OUR trainer's step
(`training.step.forward_losses` + `backward_and_clip`) with the recorded choices forced. Every recorded array
is compared with the README's tolerances.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from .config import ReferDinoConfig, get_preset
from .convert.official import convert_official, to_ours
from .losses import Criterion, get_loss_preset
from .losses.criterion import LossTargets
from .modeling.outputs import ForcedSelections, LayerPrediction, ReferDinoOutput
from .modeling.referdino import ReferDino
from .parity import (
    TRAIN, Comparison, FixtureError, ParityResults, close_comparison, filled_official_state_dict, load_fixture,
    require_fixture_kind, resolve_preset,
)
from .processing.text import tokenize
from .training.freezing import apply_official_freezing
from .training.step import backward_and_clip, forward_losses
from .weights import load_state_dict_strict

LOSS_REL, LOSS_ABS = 5e-5, 1e-6
OUT_REL, OUT_REL_F16 = 2e-4, 2e-3
COST_REL, COST_ABS = 2e-4, 1e-5
INTERM_LOGIT_LIMIT = 8.0  # interm costs of larger logits are float32-fragile in the official code itself
GRAD_NORM_REL, GRAD_NORM_REL_OFFSETS, GLOBAL_NORM_REL = 1e-3, 5e-3, 5e-5
FULL_GRAD_MAX_REL, FULL_GRAD_NORM_REL = 2e-3, 5e-4
REQUIRED = (
    "pixels", "expression", "fill_rule", "fill_scales", "target_masks", "target_boxes", "target_valid",
    "enc_topk_indices", "match_set_names", "loss_names", "loss_values", "loss_weights", "loss_total",
    "grad_norm_names", "grad_norm_values", "grad_global_norm", "clip_max_norm", "grad_full_names",
)
SET_SUFFIX = {"final": "", "interm": "_interm", **{f"aux{i}": f"_{i}" for i in range(16)}}


# ----------------------------------------------------------------------------------------------- set-up
def train_model_config(preset: str) -> ReferDinoConfig:
    """The preset with LoRA unmerged and every dropout / drop-path at 0 (the recording's only deviation from
    the official step)."""
    config = get_preset(preset)
    return config.replace(
        swin=dataclasses.replace(config.swin, drop_path=0.0),
        text=dataclasses.replace(config.text, dropout=0.0),
        fusion_drop_path=0.0,
    ).with_merged_lora(False)


def build_train_model(data: dict, config: ReferDinoConfig) -> ReferDino:
    rule = str(data["fill_rule"])
    if rule != "crc32-normal-v1":
        raise FixtureError(f"unknown fill_rule {rule!r} (this version knows crc32-normal-v1)")
    official = filled_official_state_dict(config, json.loads(str(data["fill_scales"])))
    ours, _ = convert_official(official, config, keep_lora=True)
    model = ReferDino(config)
    load_state_dict_strict(model, ours, source="converted fixture weights")
    apply_official_freezing(model, train_temporal=True)
    return model.train()


def fixture_targets(data: dict) -> tuple[torch.Tensor, LossTargets]:
    """Frames (1, T, 3, H, W) and the target batch of the recorded clip (B = 1)."""
    pixels = torch.from_numpy(data["pixels"])
    masks = torch.from_numpy(data["target_masks"]) > 0.5
    h, w = pixels.shape[-2:]
    hp, wp = (int(v) for v in data["samples_shape"][-2:]) if "samples_shape" in data else (h, w)
    # the collator's zero padding at the bottom/right (to a multiple of 32) and its mask
    frames = torch.nn.functional.pad(pixels, (0, wp - w, 0, hp - h))[None]
    masks = torch.nn.functional.pad(masks, (0, wp - w, 0, hp - h))
    if "samples_pad_mask" in data:
        pad = torch.from_numpy(data["samples_pad_mask"])[:, 0]
    else:
        pad = torch.ones(1, hp, wp, dtype=torch.bool)
        pad[:, :h, :w] = False
    return frames, LossTargets(
        masks=masks[None],
        boxes=torch.from_numpy(data["target_boxes"])[None],
        valid=torch.from_numpy(data["target_valid"]).bool()[None],
        pixel_mask=pad,
    )


def forced_choices(data: dict, n_layers: int) -> tuple[ForcedSelections, dict[str, torch.Tensor]]:
    tracks = [torch.from_numpy(data[f"track_perm_l{i}"])[None] for i in range(n_layers)]
    forced = ForcedSelections(
        topk=torch.from_numpy(data["enc_topk_indices"]),
        kept=[torch.from_numpy(data[f"prune{i}_kept_rel"]) for i in range(n_layers)],
        track_layers=tracks,
    )
    matches = {
        SET_SUFFIX[str(name)]: torch.tensor([int(data[f"match_{name}_index"])]) for name in data["match_set_names"]
    }
    return forced, matches


# ----------------------------------------------------------------------------------------------- compare
def _sets(out: ReferDinoOutput) -> dict[str, LayerPrediction]:
    sets = {"": LayerPrediction(out.pred_logits, out.pred_boxes, out.pred_masks)}
    sets.update({f"_{i}": p for i, p in enumerate(out.aux)})
    sets["_interm"] = LayerPrediction(out.interm_logits, out.interm_boxes, out.interm_masks)  # type: ignore[arg-type]
    return sets


def compare_outputs(data: dict, out: ReferDinoOutput, matches: dict[str, torch.Tensor]) -> list[Comparison]:
    results = []
    prefix = {"": "", "_interm": "interm_", **{f"_{i}": f"aux{i}_" for i in range(len(out.aux))}}
    for suffix, pred in _sets(out).items():
        p = prefix[suffix]
        for field, value in (("pred_logits", pred.logits), ("pred_boxes", pred.boxes)):
            if p + field in data:
                results.append(close_comparison(p + field, value, data[p + field], OUT_REL))
        masks = pred.masks
        if masks is None:
            continue
        if p + "pred_masks" in data:
            results.append(close_comparison(p + "pred_masks", masks, data[p + "pred_masks"], OUT_REL))
        index = int(matches[suffix][0])
        checks = {
            "pred_masks_matched": masks[0, :, index],
            "pred_masks_s4_f16": masks[..., ::4, ::4],
            "pred_masks_mean": masks.mean((-2, -1)),
            "pred_masks_max": masks.amax((-2, -1)),
        }
        for field, value in checks.items():
            if p + field in data:
                rel = OUT_REL_F16 if field.endswith("_f16") else OUT_REL
                results.append(close_comparison(p + field, value, data[p + field], rel))
    if "interm_pre_pred_boxes" in data and out.interm_anchor_boxes is not None:
        results.append(close_comparison("interm_pre_pred_boxes", out.interm_anchor_boxes,
                                        data["interm_pre_pred_boxes"], OUT_REL))
    return results


def compare_tracked_references(data: dict, rec: dict, n_layers: int) -> list[Comparison]:
    """Layer l's reference boxes (input reference, pruned) aligned over time by the recorded permutations."""
    results = []
    for i in range(n_layers):
        key = f"dec_ref_tracked_l{i}"
        if key not in data:
            continue
        ref = rec[f"dec_ref{i}"]  # (T, K, 4) frame order
        perm = torch.from_numpy(data[f"track_perm_l{i}"])
        frames = [ref[0]] + [ref[t][perm[t - 1]] for t in range(1, ref.shape[0])]
        results.append(close_comparison(key, torch.stack(frames), data[key], OUT_REL))
    return results


def compare_matcher(data: dict, criterion: Criterion, out: ReferDinoOutput, targets: LossTargets) -> list[Comparison]:
    """Our matcher's cost parts and totals on our outputs, and its free-running choice."""
    results = []
    match_sets = {s.suffix: s.for_matching for s in criterion.output_sets(out)}
    names = ("class", "bbox", "giou", "mask", "dice", "proj")
    cache: dict = {}
    for name in data["match_set_names"]:
        name = str(name)
        pred = match_sets[SET_SUFFIX[name]]
        grid = criterion._grid_targets(targets, cache, pred.masks)
        parts = criterion.matcher.costs(
            pred.logits, pred.boxes, pred.masks, target_boxes=grid.boxes, valid=grid.valid,
            target_masks=grid.masks, padding=grid.padding,
        )
        zero = pred.logits.new_zeros(pred.logits.shape[0], pred.logits.shape[2])
        total = criterion.matcher.combine(parts, zero)[0]
        keep = slice(None)
        note = ""
        if name == "interm":
            logits = pred.logits[0, :, :, 0][targets.valid[0]].amax(0)
            keep = (logits < INTERM_LOGIT_LIMIT).numpy()
            note = f"queries with logit < {INTERM_LOGIT_LIMIT:g}: {int(keep.sum())}"
        ref_parts = data[f"match_{name}_cost_parts"]
        for j, part in enumerate(names):
            if part in parts:
                results.append(close_comparison(f"match_{name}_cost_parts[{part}]", parts[part][0][keep],
                                                ref_parts[j][keep], COST_REL, COST_ABS, note))
        results.append(close_comparison(f"match_{name}_cost", total[keep], data[f"match_{name}_cost"][keep],
                                        COST_REL, COST_ABS, note))
        ours_idx = int(total.argmin())
        ref_idx = int(data[f"match_{name}_index"])
        results.append(Comparison(f"match_{name}_index (free-running)", float(ours_idx != ref_idx),
                                  float(ours_idx != ref_idx), 0.0, ours_idx == ref_idx, f"ours {ours_idx}, ref {ref_idx}"))
    return results


def compare_losses(data: dict, losses: dict[str, torch.Tensor], criterion: Criterion) -> list[Comparison]:
    results = []
    for name, value, weight in zip(data["loss_names"], data["loss_values"], data["loss_weights"]):
        name = str(name)
        if name not in losses:
            results.append(Comparison(name, float("nan"), float("nan"), 0.0, False, "not produced"))
            continue
        results.append(close_comparison(name, losses[name], value, 0.0, LOSS_REL * abs(float(value)) + LOSS_ABS))
        w = criterion.config.weight_of(name)
        if w != float(weight):
            results.append(Comparison(f"{name} weight", abs(w - float(weight)), 0.0, 0.0, False, f"ours {w}"))
    extra = sorted(set(losses) - {str(n) for n in data["loss_names"]} - {"loss"})
    if extra:
        results.append(Comparison("losses not in the fixture", float(len(extra)), 0.0, 0.0, False, ", ".join(extra)))
    total = float(data["loss_total"])
    results.append(close_comparison("loss_total", losses["loss"], data["loss_total"], 0.0,
                                    LOSS_REL * abs(total) + LOSS_ABS))
    return results


def compare_gradients(data: dict, model: ReferDino, global_norm: torch.Tensor) -> list[Comparison]:
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    results = []
    mapped: dict[str, str] = {}
    unmapped = []
    for name in data["grad_norm_names"]:
        ours = to_ours(str(name))
        if ours is None or ours not in params:
            unmapped.append(str(name))
        else:
            mapped[str(name)] = ours
    missing = sorted(trainable - set(mapped.values()))
    ok = not unmapped and not missing
    results.append(Comparison("trainable set", float(len(unmapped) + len(missing)), 0.0, 0.0, ok,
                              f"{len(mapped)} tensors" + (f"; not ours: {unmapped[:3]}" if unmapped else "")
                              + (f"; trainable only here: {missing[:3]}" if missing else "")))
    worst = (0.0, "")
    failures = []
    for name, ref in zip(data["grad_norm_names"], data["grad_norm_values"]):
        name = str(name)
        if name not in mapped:
            continue
        grad = params[mapped[name]].grad
        norm = 0.0 if grad is None else float(grad.double().norm())
        rel = abs(norm - float(ref)) / max(float(ref), 1e-30)
        limit = GRAD_NORM_REL_OFFSETS if "sampling_offsets" in name else GRAD_NORM_REL
        if rel / limit > worst[0]:
            worst = (rel / limit, name)
        if rel > limit:
            failures.append(Comparison(f"grad norm {name}", abs(norm - float(ref)), rel, limit, False))
    results.append(Comparison(f"grad_norm_values ({len(mapped)} tensors)", worst[0], worst[0], 1.0, not failures,
                              f"worst error / tolerance at {worst[1]}"))
    results += failures
    ref_global = float(data["grad_global_norm"])
    results.append(close_comparison("grad_global_norm", global_norm, data["grad_global_norm"], 0.0,
                                    GLOBAL_NORM_REL * ref_global))
    for name in data["grad_full_names"]:
        name = str(name)
        ours = to_ours(name)
        grad = None if ours is None or ours not in params else params[ours].grad
        key = f"grad__{name}"
        if grad is None:
            results.append(Comparison(key, float("nan"), float("nan"), 0.0, False, "no gradient"))
            continue
        ref = torch.from_numpy(data[key]).double()
        diff = grad.double().reshape(ref.shape) - ref
        max_ok = diff.abs().max().item() <= FULL_GRAD_MAX_REL * ref.abs().max().item()
        norm_rel = (diff.norm() / ref.norm().clamp(min=1e-30)).item()
        results.append(Comparison(key, diff.abs().max().item(), norm_rel, FULL_GRAD_NORM_REL,
                                  max_ok and norm_rel <= FULL_GRAD_NORM_REL, "rel = |diff| / |ref|"))
    return results


# ----------------------------------------------------------------------------------------------- run
def read_train_fixture(path: str) -> dict:
    data = load_fixture(path)
    require_fixture_kind(path, data, TRAIN)
    missing = [k for k in REQUIRED if k not in data or data[k] is None]
    if missing:
        raise FixtureError(f"{path} lacks training-fixture entries: {', '.join(missing[:6])}")
    return data


def run_train_parity(path: str, config_name: str | None = None, threads: int | None = None) -> ParityResults:
    """One official training step replayed with our trainer's code; every recorded array compared."""
    if threads:
        torch.set_num_threads(threads)
    data = read_train_fixture(path)
    preset, source = resolve_preset(data, config_name, path)
    config = train_model_config(preset)
    model = build_train_model(data, config)
    criterion = Criterion(get_loss_preset(preset))
    frames, targets = fixture_targets(data)
    text = tokenize([str(data["expression"])], config.text.max_text_len)
    results = [Comparison("input_ids", float((text.input_ids != torch.from_numpy(data["input_ids"])).sum()), 0.0, 0.0,
                          torch.equal(text.input_ids, torch.from_numpy(data["input_ids"])))]
    forced, matches = forced_choices(data, config.dec_layers)
    rec: dict = {}
    outputs, losses = forward_losses(
        model, criterion, frames, text, targets, forced=forced, forced_matches=matches, record=rec
    )
    model.zero_grad(set_to_none=True)
    max_norm = float(data["clip_max_norm"])
    global_norm = backward_and_clip(losses["loss"], model, max_norm)
    # the fixture holds the gradients before the clip: undo the clip's uniform scaling
    coef = torch.clamp(max_norm / (global_norm + 1e-6), max=1.0)
    for p in model.parameters():
        if p.grad is not None:
            p.grad.div_(coef)
    results.append(close_comparison("clip_coef", coef, data["clip_coef"], 0.0,
                                    GLOBAL_NORM_REL * float(data["clip_coef"])))
    results += compare_outputs(data, outputs, matches)
    results += compare_tracked_references(data, rec, config.dec_layers)
    with torch.no_grad():
        results += compare_matcher(data, criterion, outputs, targets)
    results += compare_losses(data, losses, criterion)
    results += compare_gradients(data, model, global_norm)
    return ParityResults(results, preset, source)
