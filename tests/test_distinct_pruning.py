"""Distinct-object pruning (model.pruning_distinct_iou, not official): the queries kept are different objects."""

import dataclasses

import pytest
import torch

from referdino.config import get_preset
from referdino.modeling.query_pruning import QueryPruner, distinct_top
from referdino.modeling.referdino import ReferDino


def _boxes(*centres):
    return torch.tensor([[[cx, cy, 0.2, 0.2] for cx, cy in centres]])


def test_a_copy_of_a_kept_object_is_passed_over():
    # queries 0 and 1 are the same object (IoU ~0.8), 2 and 3 two other objects
    boxes = _boxes((0.3, 0.3), (0.31, 0.31), (0.7, 0.7), (0.3, 0.8))
    confidence = torch.tensor([[0.9, 0.8, 0.5, 0.1]])
    assert distinct_top(confidence, boxes, 2, 0.5).tolist() == [[0, 2]]
    assert confidence.topk(2).indices.tolist() == [[0, 1]]  # the official top-k keeps both copies
    assert distinct_top(confidence, boxes, 3, 0.5).tolist() == [[0, 2, 3]]
    # too few distinct objects: the most confident passed-over query fills the quota, in confidence order
    assert distinct_top(confidence, boxes, 4, 0.5).tolist() == [[0, 1, 2, 3]]
    assert distinct_top(confidence[:, :3], _boxes((0.5, 0.5), (0.5, 0.5), (0.5, 0.5)), 2, 0.5).tolist() == [[0, 1]]


def test_every_row_is_pruned_on_its_own():
    boxes = torch.cat([_boxes((0.3, 0.3), (0.3, 0.3), (0.8, 0.8)), _boxes((0.3, 0.3), (0.8, 0.8), (0.8, 0.8))])
    confidence = torch.tensor([[0.1, 0.9, 0.5], [0.2, 0.6, 0.7]])
    assert distinct_top(confidence, boxes, 2, 0.5).tolist() == [[1, 2], [2, 0]]


def test_off_by_default_and_a_model_with_it_keeps_as_many_queries():
    config = dataclasses.replace(get_preset("tiny"), dec_layers=3, num_queries=24, query_decay=0.5)
    assert config.pruning_distinct_iou == 0.0
    assert QueryPruner(0.5).distinct_iou == 0.0
    torch.manual_seed(0)
    model = ReferDino(config).eval()
    distinct = ReferDino(dataclasses.replace(config, pruning_distinct_iou=0.5)).eval()
    distinct.load_state_dict(model.state_dict())  # no weights of its own
    from referdino.processing.text import tokenize

    frames = torch.randn(1, 3, 3, 64, 96)
    text = tokenize(["the red square"], config.text.max_text_len)
    with torch.no_grad():
        a, b = model(frames, text), distinct(frames, text)
    assert a.pred_boxes.shape == b.pred_boxes.shape  # same number of queries kept


def test_bad_threshold_is_rejected():
    with pytest.raises(ValueError, match="pruning_distinct_iou"):
        dataclasses.replace(get_preset("tiny"), pruning_distinct_iou=1.0).validate()
    with pytest.raises(ValueError, match="needs the queries' boxes"):
        QueryPruner(0.5, distinct_iou=0.5)(torch.randn(1, 4, 8), torch.randn(1, 3, 8),
                                          torch.ones(1, 3, dtype=torch.bool), torch.rand(1, 4, 4), None)
