"""The tracker's box cost (model.tracker_box_cost, not official): look-alike objects keep their tracks."""

import pytest
import torch

from referdino.config import get_preset
from referdino.modeling.tracker import track


def twins(t: int = 5):
    """Two identical-looking objects (same query features, slightly noisy) moving towards and past each other
    horizontally; frame i lists them in a random order, as a detector does."""
    torch.manual_seed(0)
    c = 16
    look = torch.randn(c)
    queries = look + 0.05 * torch.randn(1, t, 2, c)
    xs = torch.linspace(0.2, 0.8, t)
    ys = torch.tensor([0.45, 0.55]).expand(t, 2)  # they pass each other one box-height apart
    boxes = torch.stack([torch.stack([xs, 1 - xs], -1), ys, torch.full((t, 2), 0.1), torch.full((t, 2), 0.1)],
                        -1)[None]  # (1, T, 2, 4) cx, cy, w, h: object 0 moves right, object 1 left
    truth = torch.zeros(1, t, 2, dtype=torch.long)  # truth[0, i, k]: which object query k of frame i is
    for i in range(t):
        order = torch.randperm(2)
        queries[:, i], boxes[:, i], truth[:, i] = queries[:, i, order], boxes[:, i, order], order
    return queries, boxes, truth


def test_box_cost_keeps_look_alike_objects_on_their_tracks():
    queries, boxes, truth = twins()
    text, mask = torch.randn(1, 5, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    _, aligned_boxes, perm, state = track(queries, boxes, text, mask, alpha=0.1, box_cost=5.0)
    slot_objects = torch.cat([truth[:, :1], torch.gather(truth[:, 1:], 2, perm)], 1)  # (1, T, 2)
    assert (slot_objects == slot_objects[:, :1]).all(), "a slot jumped between the twins"
    assert torch.equal(state.boxes, aligned_boxes[:, -1])  # carried to the next window of a long video
    # appearance alone (the official tracker) cannot tell them apart: the noise decides, and here it swaps
    _, _, perm0, _ = track(queries, boxes, text, mask, alpha=0.1)
    slot_objects0 = torch.cat([truth[:, :1], torch.gather(truth[:, 1:], 2, perm0)], 1)
    assert not (slot_objects0 == slot_objects0[:, :1]).all()


def test_box_cost_carries_over_windows():
    queries, boxes, _ = twins(6)
    text, mask = torch.randn(1, 6, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    whole = track(queries, boxes, text, mask, alpha=0.1, box_cost=5.0)
    first = track(queries[:, :3], boxes[:, :3], text[:, :3], mask, alpha=0.1, box_cost=5.0)
    second = track(queries[:, 3:], boxes[:, 3:], text[:, 3:], mask, alpha=0.1, box_cost=5.0, state=first[3])
    assert torch.equal(torch.cat([first[1], second[1]], 1), whole[1])
    assert torch.equal(torch.cat([first[2], second[2]], 1), whole[2])


def test_box_cost_is_validated_and_off_by_default():
    assert get_preset("ytvos_swint").tracker_box_cost == 0.0  # official presets: appearance only
    with pytest.raises(ValueError, match="tracker_box_cost"):
        get_preset("tiny").replace(tracker_box_cost=-1.0).validate()
