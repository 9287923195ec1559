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


def test_track_motion_features_give_direction_and_where_a_shape_stops():
    """The slope of a track over time has the sign of its travel; a shape that stops travels in the first half
    of the clip only; a still one has zero slope and travel."""
    from referdino.modeling.temporal_decoder import track_motion_features

    t = 8
    time = torch.arange(t, dtype=torch.float32)
    left = torch.stack([0.7 - 0.05 * time, torch.full((t,), 0.5)], -1)
    stops = torch.stack([torch.full((t,), 0.5), 0.3 + 0.06 * time.clamp(max=3)], -1)
    still = torch.full((t, 2), 0.4)
    centres = torch.stack([left, stops, still], 1)[None]  # (1, T, 3, 2)
    boxes = torch.cat([centres, torch.full((1, t, 3, 2), 0.1)], -1)
    feats = track_motion_features(boxes)
    assert feats.shape == (1, t, 3, 8)
    torch.testing.assert_close(feats[:, 0], feats[:, -1])  # one vector per track, on every frame
    slope, first, second = feats[0, 0, :, :4], feats[0, 0, :, 4:6], feats[0, 0, :, 6:]
    assert slope[0, 0] < -1 and abs(slope[0, 1]) < 1e-5  # moving to the left
    assert slope[1, 1] > 0 and first[1, 1] > 1 and abs(second[1, 1]) < 1e-5  # moves down, then stops
    torch.testing.assert_close(feats[0, 0, 2], torch.zeros(8))


def test_motion_logit_starts_at_zero_and_reaches_only_the_class_head():
    """model.motion_logit adds the track's motion to what the class head reads: it starts at zero (a trained
    decoder keeps its scores), and once trained it changes the scores but neither the boxes nor the masks."""
    from referdino.config import get_preset
    from referdino.modeling.referdino import ReferDino
    from referdino.processing.text import tokenize

    torch.manual_seed(0)
    video = torch.randn(1, 4, 3, 64, 96)
    caption = tokenize(["the square moving to the left"])
    config = get_preset("tiny").replace(temporal_position="time_box")
    torch.manual_seed(1)
    plain = ReferDino(config).eval()
    torch.manual_seed(1)
    with_motion = ReferDino(config.replace(motion_logit=True)).eval()
    missing = with_motion.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("temporal_decoder.motion_logit.") for k in missing)
    with torch.no_grad():
        before = plain(video, caption)
        same = with_motion(video, caption)
        torch.nn.init.normal_(with_motion.temporal_decoder.motion_logit.mlp[2].weight, std=0.5)
        after = with_motion(video, caption)
    torch.testing.assert_close(same.pred_logits, before.pred_logits)
    assert (after.pred_logits - before.pred_logits).abs().max() > 1e-2
    torch.testing.assert_close(after.pred_boxes, before.pred_boxes)
    torch.testing.assert_close(after.pred_masks, before.pred_masks)
