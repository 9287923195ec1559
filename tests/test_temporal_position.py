"""The temporal decoder and the order of frames.

The official decoder has no temporal position: it is equivariant to any reordering of the frames, so a track
played backwards gets the same frame features in reverse, the same mean score, and "moving to the left" cannot
be told from "moving to the right". The `time_box` option encodes each frame's normalised time and tracked box.
"""

import torch

from referdino.modeling.temporal_decoder import TemporalDecoder


def _inputs(seed=0, b=2, t=5, q=3, c=32):
    g = torch.Generator().manual_seed(seed)
    tracks = torch.randn(b, t, q, c, generator=g)
    sentence = torch.randn(b, t, c, generator=g)
    start = torch.rand(b, 1, q, 2, generator=g) * 0.5 + 0.25
    step = (torch.rand(b, 1, q, 2, generator=g) - 0.5) * 0.1
    centres = start + step * torch.arange(t).view(1, t, 1, 1)  # objects moving in straight lines
    boxes = torch.cat([centres, torch.full((b, t, q, 2), 0.2)], dim=-1)
    return tracks, sentence, boxes


def test_official_decoder_cannot_see_the_order_of_frames():
    torch.manual_seed(0)
    decoder = TemporalDecoder(32, 4, 2, ffn=64).eval()
    tracks, sentence, boxes = _inputs()
    forwards = decoder(tracks, sentence, boxes)
    backwards = decoder(tracks.flip(1), sentence.flip(1), boxes.flip(1))
    torch.testing.assert_close(backwards, forwards.flip(1), rtol=1e-5, atol=1e-5)
    # hence any per-track mean over frames (the video-level score) is the same both ways
    torch.testing.assert_close(backwards.mean(1), forwards.mean(1), rtol=1e-5, atol=1e-5)


def test_time_box_starts_as_the_official_decoder_and_then_sees_direction():
    torch.manual_seed(0)
    official = TemporalDecoder(32, 4, 2, ffn=64).eval()
    moving = TemporalDecoder(32, 4, 2, ffn=64, position="time_box").eval()
    moving.load_state_dict(official.state_dict(), strict=False)  # the encoding's last layer starts at zero
    tracks, sentence, boxes = _inputs()
    torch.testing.assert_close(moving(tracks, sentence, boxes), official(tracks, sentence, boxes))
    torch.nn.init.normal_(moving.motion.mlp[2].weight, std=0.5)  # as after training
    forwards = moving(tracks, sentence, boxes)
    backwards = moving(tracks.flip(1), sentence.flip(1), boxes.flip(1))
    assert (backwards.mean(1) - forwards.mean(1)).abs().max() > 1e-2


def test_time_box_needs_the_boxes_and_a_known_name():
    import pytest
    from dataclasses import replace

    from referdino.config import get_preset

    decoder = TemporalDecoder(32, 4, 1, ffn=64, position="time_box")
    tracks, sentence, _ = _inputs()
    with pytest.raises(ValueError, match="tracked boxes"):
        decoder(tracks, sentence)
    with pytest.raises(ValueError, match="temporal_position"):
        replace(get_preset("tiny"), temporal_position="sine").validate()


def test_temporal_sentence_tokens_carries_the_words():
    """model.temporal_sentence: the official [CLS] row never attends to the words (sub-sentence mask), so two
    sentences that differ only by their motion word give the temporal decoder the same sentence feature;
    "tokens" (the mean of the real enhanced text tokens) differs between them."""
    from referdino.config import get_preset
    from referdino.modeling.referdino import ReferDino
    from referdino.processing.text import tokenize

    torch.manual_seed(0)
    video = torch.randn(1, 3, 3, 64, 96).expand(2, -1, -1, -1, -1)
    captions = tokenize(["the square moving to the left", "the square moving to the right"])
    feats = {}
    for mode in ("cls", "tokens"):
        torch.manual_seed(1)
        model = ReferDino(get_preset("tiny").replace(temporal_sentence=mode)).eval()
        record: dict = {}
        with torch.no_grad():
            model(video, captions, record=record)
        feats[mode] = record["temporal_in_sent"]
    torch.testing.assert_close(feats["cls"][0], feats["cls"][1])
    assert (feats["tokens"][0] - feats["tokens"][1]).abs().max() > 1e-3
