"""Losses, matcher and criterion (account §3.5-3.6) on tiny tensors with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from referdino.losses import (
    LOSS_PRESETS,
    Criterion,
    LossConfig,
    LossTargets,
    LossWeights,
    SequenceMatcher,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
    get_loss_preset,
)
from referdino.losses import functional as LF
from referdino.modeling.outputs import LayerPrediction, ReferDinoOutput

LN3 = math.log(3.0)  # sigmoid(LN3) = 0.75, sigmoid(-LN3) = 0.25
ALPHA = 0.25


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def focal_by_hand(x: float, t: int) -> float:
    p = sigmoid(x)
    if t == 1:
        return ALPHA * (1 - p) ** 2 * -math.log(p)
    return (1 - ALPHA) * p**2 * -math.log(1 - p)


EPS = 1e-6  # both official GIoU copies


def close(a: torch.Tensor, b: float, tol: float = 1e-6) -> None:
    assert abs(float(a) - b) < tol, (float(a), b)


# ------------------------------------------------------------------------------------------------- boxes
def test_box_conversions_round_trip_and_values():
    cxcywh = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.0, 0.2]])
    xyxy = box_cxcywh_to_xyxy(cxcywh)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.1, 0.8, 0.1, 1.0]]))
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)
    assert box_cxcywh_to_xyxy(torch.rand(2, 3, 5, 4)).shape == (2, 3, 5, 4)


def test_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    # overlap: inter 1, union 4 + 4 - 1 = 7, enclosing 3x3 = 9; disjoint (a vs 2nd, a shrunk): see below
    close(box_iou(a, b)[0, 0], 1 / 7)
    close(generalized_box_iou(a, b)[0, 0], 1 / 7 - (9 - 7) / 9)
    # a = 2x2 at origin, b2 = 1x1 at x in [2, 3]: touching, inter 0, union 5, enclosing 3x2 = 6
    close(generalized_box_iou(a, b)[0, 1], 0 - (6 - 5) / 6)
    # pairwise == elementwise; elementwise broadcasts
    torch.testing.assert_close(elementwise_generalized_box_iou(a, b), generalized_box_iou(a, b)[0])
    torch.testing.assert_close(elementwise_box_iou(a, b), box_iou(a, b)[0])
    # identical boxes: 1; a degenerate pair (zero target of an invisible frame, collapsed prediction) is finite
    close(elementwise_generalized_box_iou(a, a)[0], 1.0)
    zero = torch.zeros(1, 4)
    assert torch.isfinite(elementwise_generalized_box_iou(zero, zero)).all()


# ---------------------------------------------------------------------------------------------- functional
def test_sigmoid_focal_loss_by_hand():
    logits = torch.tensor([0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    got = LF.sigmoid_focal_loss(logits, targets)
    expect = [
        0.25 * 0.25 * math.log(2),  # p = 0.5, positive: alpha (1-p)^2 ln 2
        0.75 * sigmoid(2) ** 2 * math.log(1 + math.e**2),  # negative: (1-alpha) p^2 -ln(1-p)
        0.25 * (1 - sigmoid(-1)) ** 2 * math.log(1 + math.e),  # positive: -ln p = ln(1 + e)
    ]
    for g, e, (x, t) in zip(got, expect, [(0, 1), (2, 0), (-1, 1)]):
        close(g, e)
        close(g, focal_by_hand(x, t))
    # loss_ce normalisation: sum / num_boxes
    close(LF.classification_loss(logits, targets.bool(), 2.0), sum(expect) / 2)


def test_focal_class_cost_by_hand():
    x = torch.tensor([0.0, LN3])
    # cost = focal(positive) - focal(negative); at p = 0.5: (0.25 - 0.75) * 0.25 * ln 2
    got = LF.focal_class_cost(x)
    close(got[0], (0.25 - 0.75) * 0.25 * math.log(2), 1e-6)
    close(got[1], 0.25 * 0.25**2 * -math.log(0.75) - 0.75 * 0.75**2 * -math.log(0.25), 1e-6)


def test_dice_loss_on_2x2_by_hand():
    logits = torch.tensor([[0.0, LN3], [0.0, -LN3]]).reshape(1, 4)  # probs .5 .75 / .5 .25
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 4)
    # 2*(.5 + .75) = 2.5; |P| = 2, |T| = 2 -> 1 - 3.5 / 5
    close(LF.dice_loss(logits, target, 1.0), 0.3)
    close(LF.dice_loss(logits, target, 2.0), 0.15)  # divided by num_boxes
    # right column padded: probs there zeroed -> P = .5 0 / .5 0; 2*.5 = 1; |P| = 1 -> 1 - 2 / 4
    padding = torch.tensor([[False, True], [False, True]]).reshape(1, 4)
    close(LF.dice_loss(logits, target, 1.0, padding), 0.5)


def test_mask_focal_loss_mean_over_non_padded_pixels():
    logits = torch.tensor([[0.0, 5.0, -1.0]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    padding = torch.tensor([[False, True, False]])
    expect = (focal_by_hand(0, 1) + focal_by_hand(-1, 1)) / 2  # the padded pixel is neither summed nor counted
    close(LF.mask_focal_loss(logits, target, 1.0, padding), expect)
    no_pad = (focal_by_hand(0, 1) + focal_by_hand(5, 0) + focal_by_hand(-1, 1)) / 3
    close(LF.mask_focal_loss(logits, target, 4.0), no_pad / 4)


def test_projection_loss_on_2x3_by_hand():
    logits = torch.tensor([[0.0, LN3, -LN3], [-LN3, 0.0, LN3]]).reshape(1, 1, 2, 3)
    target = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]).reshape(1, 1, 2, 3)
    # max over H: logits (0, ln3, ln3) -> p (.5, .75, .75) vs gt (0, 1, 1): 1 - (2*1.5 + 1) / (2 + 2 + 1) = 0.2
    # max over W: logits (ln3, ln3)    -> p (.75, .75)     vs gt (1, 0):    1 - (2*.75 + 1) / (1.5 + 1 + 1) = 2/7
    close(LF.projection_loss(logits, target, 1.0), (0.2 + 2 / 7) / 2)
    close(LF.projection_loss(logits, target, 2.0), (0.2 + 2 / 7) / 4)


def test_box_losses_by_hand_including_zero_target_of_invisible_frame():
    pred = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    target = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]])  # second frame: invisible
    close(LF.box_l1_loss(pred, target, 1.0), 1.4)  # 0 + (.5 + .5 + .2 + .2)
    # invisible frame: pred xyxy (.4,.4,.6,.6), target the point (0,0): iou 0, union .04, enclosing .36;
    # the official loss GIoU: iou = inter / (union + 1e-6), giou = iou - (encl - union) / (encl + 1e-6)
    expect = (1 - 0.04 / (0.04 + EPS)) + (1 + 0.32 / (0.36 + EPS))
    close(LF.box_giou_loss(pred, target, 1.0), expect, 1e-6)
    close(LF.box_giou_loss(pred, target, 2.0), expect / 2, 1e-6)


def test_downsample_targets_samples_2_of_4_and_pads_odd_sizes():
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, 2, 6] = True  # sampled -> (0, 1)
    masks[0, 0, 3, 3] = True  # not a sampled pixel
    pixel_mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    pixel_mask[0, :, 5:] = True  # columns 5.. padded -> sampled column 6 is padding
    tgt, pad = LF.downsample_targets(masks, pixel_mask, (2, 2))
    assert tgt.dtype == torch.float32
    torch.testing.assert_close(tgt[0, 0], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    assert pad[0].tolist() == [[False, True], [False, True]]
    # H = W = 10: rows 2, 6 sampled (2), model grid ceil(10/4) = 3 -> extra row/column is background + padding
    tgt, pad = LF.downsample_targets(torch.ones(1, 2, 10, 10, dtype=torch.bool), None, (3, 3))
    assert tgt.shape == (1, 2, 3, 3) and tgt[0, 0, :2, :2].eq(1).all() and tgt[0, 0, 2].eq(0).all()
    assert pad[0, 2].all() and pad[0, :, 2].all() and not pad[0, :2, :2].any()
    with pytest.raises(ValueError, match="input resolution"):
        LF.downsample_targets(masks, None, (4, 4))


def test_num_visible_frames():
    assert LF.num_visible_frames(torch.tensor([[True, False, True], [True, True, False]])) == 4.0
    assert LF.num_visible_frames(torch.zeros(2, 3, dtype=torch.bool)) == 1.0  # clamped


# ------------------------------------------------------------------------------------------------ matcher
B, T, Q, H, W = 2, 3, 5, 16, 12  # prediction grid 4 x 3
h, w = H // 4, W // 4


def make_targets(seed: int = 0, pad: bool = True) -> LossTargets:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(B, T, H, W, dtype=torch.bool)
    masks[:, :, 4:12, 2:8] = True
    masks &= torch.rand(B, T, H, W, generator=g) > 0.2
    valid = torch.tensor([[True, False, True], [True, True, True]])
    masks &= valid[:, :, None, None]  # invisible frame: empty mask
    boxes = torch.tensor([0.4, 0.5, 0.5, 0.5]).expand(B, T, 4) * valid[..., None]
    pixel_mask = torch.zeros(B, H, W, dtype=torch.bool)
    if pad:
        pixel_mask[0, :, 8:] = True  # sample 0: the right third is padding
        masks[0, :, :, 8:] = False
    return LossTargets(masks=masks, boxes=boxes.clone(), valid=valid, pixel_mask=pixel_mask)


def random_prediction(seed: int, q: int = Q, with_masks: bool = True) -> LayerPrediction:
    g = torch.Generator().manual_seed(seed)
    return LayerPrediction(
        logits=torch.randn(B, T, q, 1, generator=g),
        boxes=torch.rand(B, T, q, 4, generator=g) * 0.5 + 0.2,
        masks=torch.randn(B, T, q, h, w, generator=g) * 2 if with_masks else None,
    )


def plant(pred: LayerPrediction, targets: LossTargets, query: list[int]) -> LayerPrediction:
    """Make `query[b]` a perfect track for sample b."""
    tgt, _ = LF.downsample_targets(targets.masks, targets.pixel_mask, (h, w))
    logits, boxes = pred.logits.clone(), pred.boxes.clone()
    masks = None if pred.masks is None else pred.masks.clone()
    for b, q in enumerate(query):
        logits[b, :, q, 0] = torch.where(targets.valid[b], 8.0, -8.0)
        boxes[b, :, q] = targets.boxes[b]
        if masks is not None:
            masks[b, :, q] = tgt[b] * 20 - 10
    return LayerPrediction(logits, boxes, masks)


def match(matcher: SequenceMatcher, pred: LayerPrediction, targets: LossTargets) -> torch.Tensor:
    tgt, pad = LF.downsample_targets(targets.masks, targets.pixel_mask, (h, w))
    return matcher(pred.logits, pred.boxes, pred.masks, target_boxes=targets.boxes, valid=targets.valid,
                   target_masks=tgt, padding=pad)


def test_matcher_picks_the_planted_track():
    targets = make_targets()
    matcher = SequenceMatcher.from_config(get_loss_preset("ytvos_swint"))
    for query in ([3, 1], [0, 4]):
        pred = plant(random_prediction(1), targets, query)
        assert match(matcher, pred, targets).tolist() == query
    # each cost alone also finds it
    for name in ("cost_class", "cost_bbox", "cost_giou", "cost_mask", "cost_dice", "cost_proj"):
        only = SequenceMatcher(**{k: float(k == name) for k in (
            "cost_class", "cost_bbox", "cost_giou", "cost_mask", "cost_dice", "cost_proj")})
        assert match(only, plant(random_prediction(2), targets, [2, 0]), targets).tolist() == [2, 0], name


def test_matcher_is_permutation_equivariant():
    targets = make_targets()
    matcher = SequenceMatcher.from_config(get_loss_preset("mevis_swinb"))
    pred = random_prediction(3)
    base = match(matcher, pred, targets)
    perm = torch.randperm(Q, generator=torch.Generator().manual_seed(5))
    permuted = LayerPrediction(pred.logits[:, :, perm], pred.boxes[:, :, perm], pred.masks[:, :, perm])
    got = match(matcher, permuted, targets)
    assert perm[got].tolist() == base.tolist()
    # and it is the argmin of the weighted sum of the cost terms
    tgt, pad = LF.downsample_targets(targets.masks, targets.pixel_mask, (h, w))
    kw = dict(target_boxes=targets.boxes, valid=targets.valid, target_masks=tgt, padding=pad)
    terms = matcher.costs(pred.logits, pred.boxes, pred.masks, **kw)
    assert set(terms) == {"class", "bbox", "giou", "mask", "dice", "proj"}
    total = sum(matcher.weights[k] * v for k, v in terms.items())
    torch.testing.assert_close(matcher.total_cost(pred.logits, pred.boxes, pred.masks, **kw), total)
    assert total.shape == (B, Q) and total.argmin(1).tolist() == base.tolist()


def test_matcher_class_cost_averages_visible_frames_only():
    valid = torch.tensor([[True, False, True]])
    logits = torch.zeros(1, T, 2, 1)
    logits[0, :, 0, 0] = torch.tensor([4.0, -9.0, 4.0])  # great when visible, awful in the invisible frame
    logits[0, :, 1, 0] = torch.tensor([2.0, 2.0, 2.0])
    boxes = torch.rand(1, T, 2, 4)
    only_class = SequenceMatcher(1, 0, 0, 0, 0, 0)
    costs = only_class.costs(logits, boxes, None, target_boxes=torch.zeros(1, T, 4), valid=valid)
    assert set(costs) == {"class"}
    c = LF.focal_class_cost(torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(costs["class"][0], c)  # mean of two identical visible frames
    assert only_class(logits, boxes, None, target_boxes=torch.zeros(1, T, 4), valid=valid).item() == 0


def test_matcher_box_costs_average_all_frames_and_mask_costs_by_hand():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]]).expand(1, 2, 1, 4)  # (1, T=2, Q=1, 4)
    target_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, False]])
    logits = torch.zeros(1, 2, 1, 1)
    masks = torch.tensor([[0.0, LN3, -LN3], [-LN3, 0.0, LN3]]).expand(1, 2, 1, 2, 3)
    target_masks = torch.tensor([[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]).expand(1, 2, 2, 3)
    costs = SequenceMatcher().costs(logits, boxes, masks, target_boxes=target_boxes, valid=valid,
                                    target_masks=target_masks)
    close(costs["bbox"][0, 0], (0 + 1.4) / 2)  # invisible frame included in the mean
    # the official matcher GIoU: iou = (inter + eps) / (union + eps), giou = iou - (encl - union + eps) / (encl + eps)
    visible = 1 - EPS / (0.04 + EPS)
    invisible = EPS / (0.04 + EPS) - (0.32 + EPS) / (0.36 + EPS)
    close(costs["giou"][0, 0], -(visible + invisible) / 2, 1e-6)
    # the 2x3 example of test_projection_loss, twice (T=2; the +1 smoothing is applied once per clip):
    # along H: 2*(.75+.75)*2 = 6, |P| = 2*2, |T| = 2*2 -> 7/9; along W: 2*.75*2 = 3, |P| = 3, |T| = 2 -> 4/6
    close(costs["proj"][0, 0], -0.5 * (7 / 9 + 4 / 6))
    # dice over both frames: probs per frame .5 .75 .25 .25 .5 .75 vs gt 0 1 1 0 0 0
    inter, psum, tsum = 2 * (0.75 + 0.25), 2 * 3.0, 2 * 2.0
    close(costs["dice"][0, 0], -(2 * inter + 1) / (psum + tsum + 1))
    fm = [focal_by_hand(x, t) for x, t in zip([0, LN3, -LN3, -LN3, 0, LN3], [0, 1, 1, 0, 0, 0])]
    close(costs["mask"][0, 0], sum(fm) / 6)


def test_matcher_ignores_predicted_logits_in_padding():
    targets = make_targets()
    matcher = SequenceMatcher.from_config(get_loss_preset("ytvos_swint"))
    tgt, pad = LF.downsample_targets(targets.masks, targets.pixel_mask, (h, w))
    pred = random_prediction(4)
    other = pred.masks.clone()
    other[0, ..., 2:] = 50.0  # sample 0, padded columns (8.. of 12 -> grid column 2)
    assert pad[0, :, 2].all()
    kw = dict(target_boxes=targets.boxes, valid=targets.valid, target_masks=tgt, padding=pad)
    a = matcher.costs(pred.logits, pred.boxes, pred.masks, **kw)
    b = matcher.costs(pred.logits, pred.boxes, other, **kw)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


# ---------------------------------------------------------------------------------------------- criterion
def make_outputs(seed: int = 0, aux: int = 5, interm_q: int = 9) -> ReferDinoOutput:
    final = random_prediction(seed)
    g = torch.Generator().manual_seed(seed + 100)
    return ReferDinoOutput(
        pred_logits=final.logits, pred_boxes=final.boxes, pred_masks=final.masks,
        aux=[random_prediction(seed + 1 + i) for i in range(aux)],
        interm_logits=torch.randn(B, T, interm_q, 1, generator=g),
        interm_boxes=torch.rand(B, T, interm_q, 4, generator=g) * 0.5 + 0.2,
    )


BASE = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_proj")


def test_criterion_keys_suffixes_and_weighted_total():
    config = get_loss_preset("mevis_swint")
    losses = Criterion(config)(make_outputs(), make_targets())
    expect = set(BASE) | {k + f"_{i}" for k in BASE for i in range(5)}
    expect |= {"loss_ce_interm", "loss_bbox_interm", "loss_giou_interm", "loss"}  # interm has no masks
    assert set(losses) == expect
    weights = dict(zip(BASE, config.weights.as_tuple()))
    total = sum(weights[next(b for b in BASE if k.startswith(b))] * v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], total)
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    # interm masks, when the model provides them, add the mask terms
    outputs = make_outputs()
    outputs.interm_masks = torch.randn(B, T, 9, h, w)
    losses = Criterion(config)(outputs, make_targets())
    assert {"loss_mask_interm", "loss_dice_interm", "loss_proj_interm"} <= set(losses)
    # switches
    off = Criterion(config.replace(aux_loss=False, interm_loss=False))(make_outputs(), make_targets())
    assert set(off) == set(BASE) | {"loss"}


def test_criterion_values_by_hand_with_invisible_frame():
    # B=1, T=2 (frame 1 invisible), Q=3, 1x1 mask grid; query 1 is the only one whose box fits
    logits = torch.zeros(1, 2, 3, 1)
    boxes = torch.full((1, 2, 3, 4), 0.9)
    boxes[0, :, 1] = torch.tensor([0.5, 0.5, 0.2, 0.2])
    masks = torch.zeros(1, 2, 3, 1, 1)
    outputs = ReferDinoOutput(logits, boxes, masks)
    targets = LossTargets(
        masks=torch.tensor([[[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
                             [[0, 0, 0, 0]] * 4]], dtype=torch.bool),  # (1, 2, 4, 4): sampled pixel (2,2)
        boxes=torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]]),
        valid=torch.tensor([[True, False]]),
    )
    crit = Criterion(LossConfig(weights=LossWeights(1, 1, 1, 1, 1, 1)))
    assert crit.match_all(outputs, targets)[""].tolist() == [1]
    losses = crit(outputs, targets)
    ln2 = math.log(2)
    # num_boxes = 1; 6 logits at 0: 1 positive (frame 0, query 1), 5 negatives (frame 1 is negative everywhere)
    close(losses["loss_ce"], 1 * 0.25 * 0.25 * ln2 + 5 * 0.75 * 0.25 * ln2)
    close(losses["loss_bbox"], 1.4)
    close(losses["loss_giou"], (1 - 0.04 / (0.04 + EPS)) + (1 + 0.32 / (0.36 + EPS)), 1e-6)
    # masks: logit 0 on both frames; gt 1 then 0
    close(losses["loss_mask"], (0.25 * 0.25 * ln2 + 0.75 * 0.25 * ln2) / 2)
    close(losses["loss_dice"], 1 - (2 * 0.5 + 1) / (1.0 + 1 + 1))
    close(losses["loss_proj"], 1 - (2 * 0.5 + 1) / (1.0 + 1 + 1))  # 1x1 grid: projections = the mask
    assert "loss_ce_interm" not in losses


def test_criterion_num_boxes_normalisation():
    outputs, targets = make_outputs(aux=0), make_targets()
    # no class cost in the matching, so that changing `valid` cannot change the matched queries
    crit = Criterion(LossConfig(weights=LossWeights(4, 5, 2, 5, 5, 5), match_costs=LossWeights(0, 5, 2, 5, 5, 5)))
    base = crit(outputs, targets)
    doubled = LossTargets(  # same clips, but with one more visible frame: every loss scales by 5/6
        masks=targets.masks, boxes=targets.boxes, valid=torch.ones(B, T, dtype=torch.bool),
        pixel_mask=targets.pixel_mask,
    )
    assert LF.num_visible_frames(targets.valid) == 5 and LF.num_visible_frames(doubled.valid) == 6
    other = crit(outputs, doubled)
    for k in ("loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_proj"):
        torch.testing.assert_close(other[k], base[k] * 5 / 6)


def test_criterion_padding_handling():
    targets = make_targets()
    crit = Criterion(get_loss_preset("ytvos_swint").replace(aux_loss=False, interm_loss=False))
    outputs = make_outputs()
    altered = make_outputs()
    altered.pred_masks = altered.pred_masks.clone()
    altered.pred_masks[0, ..., 2:] = -30.0  # padded grid column of sample 0
    a, b = crit(outputs, targets), crit(altered, targets)
    torch.testing.assert_close(crit.match_all(outputs, targets)[""], crit.match_all(altered, targets)[""])
    for k in ("loss_mask", "loss_dice", "loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(a[k], b[k])
    # the projection loss has no padding mask (official): padded logits enter the max-projections
    assert not torch.allclose(a["loss_proj"], b["loss_proj"])


def test_matching_is_redone_per_set():
    targets = make_targets(pad=False)
    outputs = make_outputs()
    final = plant(LayerPrediction(outputs.pred_logits, outputs.pred_boxes, outputs.pred_masks), targets, [1, 2])
    outputs.pred_logits, outputs.pred_boxes, outputs.pred_masks = final.logits, final.boxes, final.masks
    outputs.aux[3] = plant(outputs.aux[3], targets, [4, 0])
    interm = plant(LayerPrediction(outputs.interm_logits, outputs.interm_boxes, None), targets, [7, 5])
    outputs.interm_logits, outputs.interm_boxes = interm.logits, interm.boxes
    got = Criterion(get_loss_preset("ytvos_swint")).match_all(outputs, targets)
    assert got[""].tolist() == [1, 2] and got["_3"].tolist() == [4, 0] and got["_interm"].tolist() == [7, 5]
    # interm: the anchors of the proposals decide the match (official), the refined boxes only enter the loss
    match_boxes = outputs.interm_boxes.clone()
    match_boxes[:, :, [7, 5]] = 0.95
    match_boxes[:, :, 6] = targets.boxes
    outputs.interm_anchor_boxes = match_boxes
    crit = Criterion(LossConfig(weights=LossWeights(0, 1, 1, 0, 0, 0)))
    assert crit.match_all(outputs, targets)["_interm"].tolist() == [6, 6]


def test_gradients_flow_to_every_output_set():
    outputs = make_outputs()
    leaves = [outputs.pred_logits, outputs.pred_boxes, outputs.pred_masks, outputs.interm_logits, outputs.interm_boxes]
    for p in outputs.aux:
        leaves += [p.logits, p.boxes, p.masks]
    for t in leaves:
        t.requires_grad_(True)
    losses = Criterion(get_loss_preset("ytvos_swint"))(outputs, make_targets())
    losses["loss"].backward()
    for t in leaves:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_a_few_optimizer_steps_lower_the_loss():
    torch.manual_seed(0)
    targets = make_targets()
    params = {
        "logits": torch.zeros(B, T, Q, 1, requires_grad=True),
        "boxes": torch.zeros(B, T, Q, 4, requires_grad=True),  # through a sigmoid
        "masks": torch.zeros(B, T, Q, h, w, requires_grad=True),
        "aux_logits": torch.zeros(B, T, Q, 1, requires_grad=True),
        "aux_boxes": torch.zeros(B, T, Q, 4, requires_grad=True),
        "aux_masks": torch.zeros(B, T, Q, h, w, requires_grad=True),
    }
    with torch.no_grad():
        for p in params.values():
            p.normal_(0, 0.5)
    crit = Criterion(get_loss_preset("ytvos_swint"))
    opt = torch.optim.Adam(params.values(), lr=0.1)

    def step() -> torch.Tensor:
        p = params
        outputs = ReferDinoOutput(
            p["logits"], p["boxes"].sigmoid(), p["masks"],
            aux=[LayerPrediction(p["aux_logits"], p["aux_boxes"].sigmoid(), p["aux_masks"])],
            interm_logits=p["aux_logits"] * 0.5, interm_boxes=p["aux_boxes"].sigmoid(),
        )
        return crit(outputs, targets)["loss"]

    first = step().item()
    for _ in range(30):
        opt.zero_grad()
        step().backward()
        opt.step()
    last = step().item()
    assert last < 0.5 * first, (first, last)


# -------------------------------------------------------------------------------------------------- config
def test_presets_match_the_official_configs():
    def w(name: str) -> tuple[float, ...]:
        return get_loss_preset(name).weights.as_tuple()

    for name in ("ytvos_swint", "ytvos_swinb", "davis_swint", "davis_swinb", "coco_swint", "coco_swinb"):
        assert w(name) == (4, 5, 2, 5, 5, 5)
    assert w("mevis_swint") == (2, 1, 1, 5, 5, 2)
    for name in ("mevis_swinb", "a2d_swinb", "jhmdb_swinb"):
        assert w(name) == (1, 3, 3, 5, 4, 4)
    a2d = get_loss_preset("a2d_swint")
    assert a2d.weights.as_tuple() == (4, 5, 2, 5, 2, 5) and a2d.costs.as_tuple() == (4, 5, 2, 2, 5, 5)
    for name, cfg in LOSS_PRESETS.items():
        if name != "a2d_swint":
            assert cfg.costs == cfg.weights, name
    m = Criterion(a2d).matcher
    assert (m.cost_mask, m.cost_dice) == (2, 5)
    with pytest.raises(ValueError, match="projection"):
        get_loss_preset("jhmdb_swint")
    with pytest.raises(ValueError, match="unknown"):
        get_loss_preset("nope")


def test_loss_config_validation_and_round_trip():
    cfg = get_loss_preset("a2d_swint")
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.weight_of("loss_dice_3") == 2 and cfg.weight_of("loss_ce_interm") == 4
    with pytest.raises(ValueError):
        LossConfig(weights=LossWeights(-1, 1, 1, 1, 1, 1)).validate()
    with pytest.raises(ValueError, match="unknown"):
        LossConfig.from_dict({"weight": {}})
