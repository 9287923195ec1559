import dataclasses
import json

import pytest
import torch

from referdino.config import get_preset
from referdino.modeling.lora import LoRALinear, fold_lora
from referdino.modeling.referdino import ReferDino
from referdino.modeling.tracker import track
from referdino.processing.text import tokenize


def tiny(**changes):
    cfg = get_preset("tiny")
    return ReferDino(cfg.replace(**changes) if changes else cfg).eval()


def test_shapes_tiny():
    model = tiny()
    out = model(torch.randn(2, 3, 3, 64, 96), tokenize(["the red ball", "a cat on the left"]))
    q = model.config.query_counts[-1]
    assert out.pred_logits.shape == (2, 3, q, 1)
    assert out.pred_boxes.shape == (2, 3, q, 4)
    assert out.pred_masks.shape == (2, 3, q, 16, 24)
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert out.aux == []  # inference: last layer only


def test_training_forward_gives_every_layer():
    model = tiny().train()
    out = model(torch.randn(1, 2, 3, 64, 64), tokenize(["a dog"]))
    counts = model.config.query_counts
    assert [a.logits.shape[2] for a in out.aux] == list(counts[1:-1])
    assert all(a.masks is not None for a in out.aux)
    assert out.interm_logits.shape == (1, 2, counts[0], 1)
    out.pred_masks.sum().backward()


def test_query_counts_full_size():
    cfg = get_preset("ytvos_swint")
    assert cfg.query_counts == (900, 450, 225, 113, 57, 29, 15)
    torch.manual_seed(0)
    model = ReferDino(cfg.with_merged_lora()).eval()
    with torch.inference_mode():
        stages = model.encode_images(torch.randn(1, 3, 224, 224))
        text = tokenize(["the cat"])
        feats = model.encode_text(text)
        g = model.ground_video(None, feats, text, 1, stages=stages)
    assert [layer.hidden.shape[1] for layer in g.layers] == [450, 225, 113, 57, 29, 15]
    assert [layer.gate.shape[1] for layer in g.layers] == [900, 450, 225, 113, 57, 29]


@pytest.mark.parametrize("score", ["official", "paper"])
def test_both_pruning_scores(score):
    model = tiny(pruning_score=score)
    rec = {}
    out = model(torch.randn(1, 2, 3, 64, 64), tokenize(["the dog"]), record=rec)
    counts = model.config.query_counts
    for i in range(model.config.dec_layers):
        gate = rec[f"prune{i}_gate"]
        kept = rec[f"prune{i}_kept_rel"]
        assert gate.shape[1] == counts[i] and kept.shape[1] == counts[i + 1]
        # kept = the highest-confidence queries, in descending order
        assert torch.equal(torch.gather(gate, 1, kept), gate.topk(counts[i + 1], dim=1).values)
    assert out.pred_logits.shape[2] == counts[-1]


def test_pruning_scores_differ():
    torch.manual_seed(0)
    a = tiny(pruning_score="official")
    b = tiny(pruning_score="paper")
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(1, 1, 3, 64, 64), tokenize(["the dog"])
    ra, rb = {}, {}
    a(x, t, record=ra)
    b(x, t, record=rb)
    assert not torch.allclose(ra["prune0_gate"], rb["prune0_gate"])
    # the paper score is received attention (mean over others) + max text-attention weight: within [0, 2]
    assert (rb["prune0_gate"] >= 0).all() and (rb["prune0_gate"] <= 2).all()


def test_tracker_invariant_to_query_permutation():
    torch.manual_seed(0)
    b, t, q, c, length = 1, 4, 7, 16, 5
    queries = torch.randn(b, t, q, c)
    boxes = torch.rand(b, t, q, 4)
    text = torch.randn(b, t, length, c)
    mask = torch.ones(b, length, dtype=torch.bool)
    aligned, aligned_boxes, perm, _ = track(queries, boxes, text, mask, alpha=0.1)
    shuffled_q, shuffled_b = queries.clone(), boxes.clone()
    for i in range(1, t):
        p = torch.randperm(q)
        shuffled_q[:, i], shuffled_b[:, i] = queries[:, i, p], boxes[:, i, p]
    aligned2, aligned_boxes2, _, _ = track(shuffled_q, shuffled_b, text, mask, alpha=0.1)
    assert torch.allclose(aligned, aligned2) and torch.allclose(aligned_boxes, aligned_boxes2)
    # slot j of every frame is the query that best continues the track: an identical copy is matched to itself
    same = queries.clone()
    same[:, 1] = queries[:, 0].flip(1)
    _, _, perm, _ = track(same, boxes, text, mask, alpha=0.1)
    assert perm[0, 0].tolist() == list(range(q - 1, -1, -1))


def test_batched_equals_one_by_one():
    model = tiny()
    x = torch.randn(2, 3, 3, 64, 96)
    captions = ["the red ball", "the small dog jumping on the left"]
    with torch.no_grad():
        both = model(x, tokenize(captions))
        for i, cap in enumerate(captions):
            one = model(x[i : i + 1], tokenize([cap]))
            assert torch.allclose(both.pred_logits[i], one.pred_logits[0], atol=1e-4, rtol=1e-4)
            assert torch.allclose(both.pred_boxes[i], one.pred_boxes[0], atol=1e-5, rtol=1e-4)
            assert torch.allclose(both.pred_masks[i], one.pred_masks[0], atol=1e-3, rtol=1e-4)


def test_frame_chunks_do_not_change_results():
    model = tiny()
    x, t = torch.randn(1, 4, 3, 64, 64), tokenize(["a cat"])
    with torch.no_grad():
        whole = model(x, t)
        halves = [model.ground_video(x[0, i : i + 2], model.encode_text(t), t, 2) for i in (0, 2)]
    assert torch.allclose(
        torch.cat([h.layers[-1].hidden for h in halves]),
        model.ground_video(x[0], model.encode_text(t), t, 4).layers[-1].hidden,
        atol=1e-5,
    )
    assert whole.pred_logits.shape[1] == 4


def test_lora_fold_is_exact():
    torch.manual_seed(0)
    lin = LoRALinear(8, 5, rank=2, scale=0.5)
    torch.nn.init.normal_(lin.lora_B)
    x = torch.randn(3, 8)
    y = lin(x)
    holder = torch.nn.Sequential(lin)
    assert fold_lora(holder) == 1
    assert type(holder[0]) is torch.nn.Linear
    assert torch.allclose(holder[0](x), y, atol=1e-6)


def test_official_trainable_set(official_fixtures):
    from referdino.convert.official import to_official
    from referdino.training.freezing import apply_official_freezing

    for preset, schema in (("ytvos_swint", "schema_swint.json"), ("mevis_swint", "schema_swint.json")):
        with torch.device("meta"):
            model = ReferDino(get_preset(preset))
        names = apply_official_freezing(model)
        s = json.loads((official_fixtures / schema).read_text())
        expected = {e["name"] for e in s["entries"] if e["requires_grad"] and e["alias_of"] is None}
        assert {to_official(n) for n in names} == expected
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 15_335_924


def test_config_validation_and_roundtrip():
    cfg = get_preset("tiny")
    assert type(cfg).from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        type(cfg).from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="query_decay"):
        cfg.replace(query_decay=0.0)
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("ytvos_swinx")
