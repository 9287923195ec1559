"""The referring logit's reduction over text tokens.

Official: the max over tokens of the query-token dot product. A max cannot express a conjunction of attribute
words ("the red square" next to a red circle and a blue square: each of the three matches one word) unless
the token features are contextual; the mean over the real tokens can (a sum of word matches). The option
`class_token_reduce="mean"` is offered for that; "max" stays the default.
"""

import torch

from referdino.config import get_preset
from referdino.modeling.heads import contrastive_logit
from referdino.modeling.referdino import ReferDino
from referdino.processing.text import tokenize


def test_max_and_mean_over_the_real_tokens_only():
    g = torch.Generator().manual_seed(0)
    queries, text = torch.randn(2, 5, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    sim = torch.einsum("bqc,blc->bql", queries, text)
    torch.testing.assert_close(contrastive_logit(queries, text, mask), torch.stack(
        [sim[0, :, :3].max(-1).values, sim[1].max(-1).values]))
    torch.testing.assert_close(contrastive_logit(queries, text, mask, "mean"), torch.stack(
        [sim[0, :, :3].mean(-1), sim[1].mean(-1)]))


def test_a_mean_expresses_a_conjunction_that_a_max_cannot():
    red, blue, square, circle = torch.eye(4)
    objects = torch.stack([red + square, red + circle, blue + square])  # the query features of three shapes
    words = torch.stack([red, square])[None]  # "red square" with one plain feature per word
    by_max = contrastive_logit(objects[None], words, None)[0]
    by_mean = contrastive_logit(objects[None], words, None, "mean")[0]
    assert torch.all(by_max == by_max[0])  # every shape matches one word: a tie
    assert by_mean.argmax() == 0 and by_mean[0] > by_mean[1:].max()


def test_model_option_reaches_every_reduction_and_defaults_to_the_official_max():
    assert get_preset("tiny").class_token_reduce == "max"
    model = ReferDino(get_preset("tiny").replace(class_token_reduce="mean"))
    assert model.query_selection.token_reduce == "mean"
    assert model.decoder.pruner.token_reduce == "mean"
    official = ReferDino(get_preset("tiny")).eval()
    model.load_state_dict(official.state_dict())  # the option adds no weights
    model.eval()
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 3, 64, 96)
    text = tokenize(["the red square", "the small blue circle moving up"], 256)
    with torch.inference_mode():
        a, b = official(pixels, text), model(pixels, text)
    assert torch.isfinite(b.pred_logits).all() and a.pred_logits.shape == b.pred_logits.shape
    assert not torch.allclose(a.pred_logits, b.pred_logits)
