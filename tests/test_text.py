import logging

import numpy as np
import pytest

from referdino.processing.text import ExpressionError, normalize_caption, sub_sentence_masks, tokenize


def test_tokenizer_matches_official_fixture(official_fixtures):
    for case in ("caseA.npz", "caseC.npz"):
        d = np.load(official_fixtures / case)
        t = tokenize([str(d["caption"])])
        assert (t.input_ids.numpy() == d["input_ids"]).all()
        assert (t.position_ids.numpy() == d["position_ids"]).all()
        assert (t.self_attention_mask.numpy() == d["text_self_attention_mask"]).all()


def test_caption_normalisation():
    assert normalize_caption("  the  red ball ") == "the red ball."
    assert normalize_caption("a cat.") == "a cat."
    assert normalize_caption("which one?") == "which one?."
    with pytest.raises(ExpressionError):
        normalize_caption("   ")


def test_sub_sentences_three_blocks():
    t = tokenize(["a dog? the one on the left. it runs."])
    assert t.position_ids.tolist() == [[0, 0, 1, 2, 0, 1, 2, 3, 4, 5, 0, 1, 2, 0]]
    m = t.self_attention_mask[0]
    assert m[1, 3] and not m[1, 4] and m[4, 9] and not m[0, 1] and not m[-1, -2]


def test_padded_batch_keeps_per_caption_masks():
    t = tokenize(["a cat", "the small dog on the left"])
    alone = tokenize(["a cat"])
    n = alone.input_ids.shape[1]
    assert (t.input_ids[0, :n] == alone.input_ids[0]).all()
    assert (t.self_attention_mask[0, :n, :n] == alone.self_attention_mask[0]).all()
    assert not t.token_mask[0, n:].any()


def test_overlong_expression_is_truncated_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        t = tokenize(["word " * 400])
    assert t.input_ids.shape[1] == 256
    assert "ignored" in caplog.text


def test_masks_for_handmade_ids():
    import torch

    mask, pos = sub_sentence_masks(torch.tensor([[101, 5, 6, 1012, 7, 1012, 102]]))
    assert pos.tolist() == [[0, 0, 1, 2, 0, 1, 0]]
    assert mask[0, 1:4, 1:4].all() and mask[0, 4:6, 4:6].all() and not mask[0, 3, 4]
