"""Batch padding in the grounding stages (official collator pads to a multiple of 32; GroundingDINO masks it)."""

from __future__ import annotations

import math

import torch

from referdino.config import get_preset
from referdino.modeling.feature_enhancer import FeatureEnhancer
from referdino.modeling.padding import level_masks, valid_ratios
from referdino.modeling.query_selection import anchor_proposals
from referdino.modeling.referdino import ReferDino
from referdino.processing.text import tokenize


def _mask(h, w, valid_h, valid_w):
    m = torch.ones(1, h, w, dtype=torch.bool)
    m[:, :valid_h, :valid_w] = False
    return m


def test_level_masks_and_valid_ratios_by_hand():
    masks = level_masks(_mask(64, 96, 48, 80), [(8, 12), (4, 6)])
    assert [tuple(m.shape) for m in masks] == [(1, 8, 12), (1, 4, 6)]
    ratios = valid_ratios(masks)
    # nearest resize: 48/64 of 8 rows = 6 rows, 80/96 of 12 columns = 10 columns; at 4x6: 3 rows, 5 columns
    torch.testing.assert_close(ratios[0], torch.tensor([[10 / 12, 6 / 8], [5 / 6, 3 / 4]]))


def test_anchors_are_normalised_by_the_valid_size():
    shapes = [(2, 4)]
    padding = _mask(2, 4, 2, 3).flatten(1)  # last column padded
    logits, valid = anchor_proposals(shapes, padding, 1, torch.device("cpu"))
    boxes = logits.sigmoid()
    # column x of a 3-wide valid region: centre (x + 0.5) / 3
    assert math.isclose(boxes[0, 0, 0].item(), 0.5 / 3, rel_tol=1e-5)
    assert math.isclose(boxes[0, 1, 0].item(), 1.5 / 3, rel_tol=1e-5)
    assert not valid[0, 3] and torch.isinf(logits[0, 3]).all()  # padded token: +inf proposal
    unpadded, _ = anchor_proposals(shapes, None, 1, torch.device("cpu"))
    assert math.isclose(unpadded.sigmoid()[0, 1, 0].item(), 1.5 / 4, rel_tol=1e-5)


def test_encoder_reference_points_follow_the_valid_ratios():
    shapes = [(2, 4), (1, 2)]
    ratios = torch.tensor([[[0.75, 1.0], [0.5, 1.0]]])  # (N, levels, (x, y))
    ref = FeatureEnhancer.reference_points(shapes, torch.device("cpu"), ratios)
    assert ref.shape == (1, 10, 2, 2)
    # token (row 0, col 1) of level 0: x = 1.5 / (0.75 * 4) = 0.5, then times each level's ratio
    torch.testing.assert_close(ref[0, 1, :, 0], torch.tensor([0.5 * 0.75, 0.5 * 0.5]))
    plain = FeatureEnhancer.reference_points(shapes, torch.device("cpu"))
    torch.testing.assert_close(plain[0, 1, 0], torch.tensor([1.5 / 4, 0.5 / 2]))


def test_model_with_an_empty_padding_mask_equals_no_mask_and_padding_changes_little_of_the_rest():
    torch.manual_seed(0)
    model = ReferDino(get_preset("tiny")).eval()
    frames = torch.randn(1, 2, 3, 64, 96)
    text = tokenize(["the red square"])
    with torch.no_grad():
        plain = model(frames, text)
        empty = model(frames, text, pixel_mask=torch.zeros(1, 64, 96, dtype=torch.bool))
        padded_frames = frames.clone()
        padded_frames[..., 48:, :] = 0
        padded = model(padded_frames, text, pixel_mask=_mask(64, 96, 48, 96))
    torch.testing.assert_close(empty.pred_logits, plain.pred_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(empty.pred_masks, plain.pred_masks, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(padded.pred_logits).all() and torch.isfinite(padded.pred_masks).all()
    assert (padded.pred_boxes <= 1).all()
