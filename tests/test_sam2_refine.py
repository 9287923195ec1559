"""SAM2 refinement (issue 13): the ReferDINO-Plus rules on hand-built cases, the SAM2 runner and the whole recipe on
a tiny randomly initialised `Sam2VideoModel`, and the `segment --refine sam2` command line. Nothing downloads."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from referdino import ReferDino
from referdino.cli import main
from referdino.inference.segment import QueryOutputs, SegmentationResult, segment_frames
from referdino.refine import (
    SAM2_SIZES,
    SIGMA,
    FrameStore,
    PackedMasks,
    Sam2UnavailableError,
    Sam2VideoRunner,
    box_area,
    fuse,
    fuse_video,
    prompt_frames,
    published_config,
    query_means,
    refine_with_sam2,
    resolve_sam2,
    select_queries,
    unite_decision,
)
from sam2_helpers import S, _fake_hub_cache, _offline, tiny_sam2, tiny_sam2_config  # noqa: F401

def _frames(n=10, h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def _box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


# ---------------------------------------------------------------------------------------------- the rules
def test_selection_single_two_absent_and_none():
    t = 6
    one = np.full((t, 4), 0.05, np.float32)
    one[:, 2] = 0.8
    assert select_queries(one) == [2] and prompt_frames(one, [2]) == [0]  # ties: the first frame
    two = one.copy()
    two[:, 0] = [0.1, 0.5, 0.6, 0.9, 0.2, 0.1]
    assert select_queries(two) == [0, 2] and prompt_frames(two, [0, 2]) == [3, 0]
    # absent in most frames: the plain mean (0.13) is below sigma, the mean over the frames above sigma is not
    absent = np.full((t, 3), 0.05, np.float32)
    absent[1, 1] = 0.6
    assert absent[:, 1].mean() < SIGMA and select_queries(absent) == [1] and prompt_frames(absent, [1]) == [1]
    # strictly above sigma counts; exactly sigma does not (a frame at exactly 0.275 is not valid)
    edge = np.full((t, 3), SIGMA, np.float32)
    edge[:, 1] = 0.28
    assert select_queries(edge) == [1]
    assert select_queries(np.full((t, 5), 0.2, np.float32)) == []  # no query kept
    np.testing.assert_allclose(query_means(two)[[0, 1, 2]], [(0.5 + 0.6 + 0.9) / 3, 0, 0.8], rtol=1e-5)
    assert select_queries(torch.from_numpy(two)) == [0, 2]  # torch tensors too


def test_box_area_is_the_recipes():
    m = np.zeros((10, 12), bool)
    assert box_area(m) == 0
    m[2:6, 3:10] = True  # rows 2..5, cols 3..9
    assert box_area(m) == (5 - 2) * (9 - 3)
    assert box_area(_box_mask(10, 12, 4, 5, 1, 9)) == 0  # one row: area 0 in the recipe (no +1)
    assert box_area(_box_mask(10, 12, 4, 5, 4, 5)) == 0


def test_fusion_rule():
    # smaller on a strict majority of the frames where both are non-empty -> unite
    assert unite_decision([10, 10, 50, 0], [100, 100, 60, 100]) is True
    assert unite_decision([10, 50, 0, 5], [100, 60, 100, 0]) is False  # 1 of 2 counted frames: a tie is no majority
    assert unite_decision([0, 0], [100, 100]) is False  # SAM2 empty everywhere: SAM2 alone (empty)
    assert unite_decision([2, 2, 2], [3, 3, 3]) is False  # exactly 2/3 is not below 2/3
    assert unite_decision([1, 1, 1], [2, 2, 2]) is True
    s, r = _box_mask(8, 8, 0, 3, 0, 3), _box_mask(8, 8, 4, 8, 4, 8)
    assert (fuse(s, r, True) == (s | r)).all() and (fuse(s, r, False) == s).all()


def test_fuse_video_known_answers():
    h = w = 20
    ref_big = _box_mask(h, w, 2, 18, 2, 18)
    sam_small = _box_mask(h, w, 2, 8, 2, 8)  # SAM2 found one of two referred objects
    # single object, SAM2 as large as ReferDINO: SAM2 alone
    out, unite = fuse_video(np.stack([ref_big] * 3), np.stack([ref_big] * 3))
    assert not unite and (out == ref_big).all()
    # SAM2 smaller on every frame: united
    out, unite = fuse_video(np.stack([sam_small] * 3), np.stack([ref_big] * 3))
    assert unite and (out == ref_big).all()
    # two SAM2 objects (T, N, H, W): their union is compared, not each object
    other = _box_mask(h, w, 12, 18, 12, 18)
    out, unite = fuse_video(np.stack([np.stack([sam_small, other])] * 3), np.stack([ref_big] * 3))
    assert not unite and (out == (sam_small | other)).all()
    # the object absent from ReferDINO on two frames: those frames do not vote; one frame of one decides
    ref = np.stack([ref_big, np.zeros((h, w), bool), np.zeros((h, w), bool)])
    out, unite = fuse_video(np.stack([sam_small] * 3), ref)
    assert unite and (out[0] == ref_big).all() and (out[1] == sam_small).all()
    # nothing kept: empty in, empty out
    out, unite = fuse_video(np.zeros((3, 0, h, w), bool), np.zeros((3, 0, h, w), bool))
    assert not unite and not out.any() and out.shape == (3, h, w)


def test_storage(tmp_path):
    frames = _frames(4, 6, 7)
    with FrameStore(str(tmp_path)) as store:
        names = [n for n, _ in store.record((str(i), f) for i, f in enumerate(frames))]
        assert names == ["0", "1", "2", "3"] and len(store) == 4
        assert (store[2] == frames[2]).all() and (store[0] == frames[0]).all()
        with pytest.raises(ValueError, match="one size"):
            store.append(np.zeros((5, 7, 3), np.uint8))
    masks = PackedMasks(3, 2, (5, 9))
    m = np.random.default_rng(0).random((2, 5, 9)) > 0.5
    masks.set(1, m)
    assert (masks[1] == m).all() and not masks[0].any() and (masks.union(1) == m.any(0)).all()
    assert masks.filled() == [1] and masks.to_array().shape == (3, 2, 5, 9)


def test_published_configs_have_the_real_sizes():
    cfgs = {size: published_config(size) for size in SAM2_SIZES}
    hiera = {s: c.vision_config.backbone_config for s, c in cfgs.items()}
    assert [hiera[s].blocks_per_stage for s in SAM2_SIZES] == [[1, 2, 7, 2], [1, 2, 11, 2], [2, 3, 16, 3],
                                                               [2, 6, 36, 4]]
    assert [hiera[s].hidden_size for s in SAM2_SIZES] == [96, 96, 112, 144]
    assert cfgs["large"].vision_config.backbone_channel_list == [1152, 576, 288, 144]
    assert all(c.image_size == 1024 and c.num_maskmem == 7 for c in cfgs.values())


# ---------------------------------------------------------------------------------------------- the runner
def test_runner_prompts_propagates_forward_then_reverse_with_bounded_state():
    frames = _frames(12)
    h, w = frames.shape[1:3]
    m1, m2 = _box_mask(h, w, 5, 20, 5, 20), _box_mask(h, w, 20, 35, 25, 45)
    runner = Sam2VideoRunner(tiny_sam2(num_maskmem=3, pointers=4))
    assert runner.window == 3
    calls, state = [], []
    forward = runner.model.forward

    def spy(*args, **kwargs):
        calls.append((kwargs["frame_idx"], kwargs.get("reverse", False)))
        out = forward(*args, **kwargs)
        session = kwargs.get("inference_session") or args[0]
        state.append(max(len(o["non_cond_frame_outputs"]) for o in session.output_dict_per_obj.values()))
        return out

    runner.model.forward = spy
    masks = runner.track(frames, [(6, m1), (3, m2)])
    # the prompts (frames 3 then 6), forward from the first prompt to the end, reverse from the last to the start
    forward_pass, reverse_pass = [(t, False) for t in range(3, 12)], [(t, True) for t in range(6, -1, -1)]
    assert calls == [(3, False), (6, False), *forward_pass, *reverse_pass]
    assert masks.filled() == list(range(12)) and masks.num_objects == 2
    arr = masks.to_array()
    assert _iou(arr[6, 0], m1) > 0.9 and _iou(arr[3, 1], m2) > 0.9  # each object is its prompt on its frame
    # bounded state: never more than the window behind, the window after the last prompt and the window ahead
    assert max(state) <= 3 * runner.window
    # ... and the pruning changes nothing
    runner.model.forward = forward
    full = Sam2VideoRunner(runner.model, prune=False).track(frames, [(6, m1), (3, m2)]).to_array()
    assert (full == arr).all()
    union = runner.track(frames, [(6, m1), (3, m2)], union=True).to_array()
    assert union.shape == (12, 1, h, w) and (union[:, 0] == arr.any(1)).all()
    assert Sam2VideoRunner.frames_processed(12, [6, 3]) == 9 + 7
    assert runner.track(frames, []).to_array().sum() == 0  # no prompt: empty


def test_runner_rejects_bad_prompts():
    runner = Sam2VideoRunner(tiny_sam2())
    frames = _frames(3)
    with pytest.raises(ValueError, match="outside the video"):
        runner.track(frames, [(5, np.zeros(frames.shape[1:3], bool))])
    with pytest.raises(ValueError, match="frame size"):
        runner.track(frames, [(0, np.zeros((4, 4), bool))])


# ------------------------------------------------------------------------------------------ the whole recipe
class _Logits:
    def __init__(self, logits):
        self.logits = logits  # (T, E, Q, h, w)
        self.closed = False

    def read(self, t):
        return self.logits[t].astype(np.float16)

    def close(self):
        self.closed = True


def _result(scores, logits, size, expressions):
    """A SegmentationResult as segment_frames(keep_queries=True) returns it, from hand-built queries."""
    from referdino.inference.segment import ExpressionResult

    e, t, q = scores.shape
    exprs = [ExpressionResult(x, [0], None, np.zeros((t, 4), np.float32), scores[k][:, 0]) for k, x in
             enumerate(expressions)]
    result = SegmentationResult([f"{i:05d}" for i in range(t)], size, 10.0, exprs)
    result.per_query = QueryOutputs(scores, np.zeros((e, t, q, 4), np.float32), _Logits(logits))
    return result


def _query_logits(t, e, q, h4, w4, boxes):
    """(T, E, Q, h4, w4) logits: +8 inside box (k, j) on every frame, -8 elsewhere."""
    logits = np.full((t, e, q, h4, w4), -8.0, np.float32)
    for (k, j), (y0, y1, x0, x1) in boxes.items():
        logits[:, k, j, y0:y1, x0:x1] = 8.0
    return logits


def test_refine_whole_path_on_a_tiny_sam2():
    t, h, w = 8, 40, 48
    frames = _frames(t, h, w)
    scores = np.full((2, t, 4), 0.05, np.float32)
    scores[0, :, 1] = np.linspace(0.3, 0.9, t)  # expression 0: queries 1 and 3 kept, best frames 7 and 2
    scores[0, :, 3] = [0.1, 0.4, 0.95, 0.5, 0.1, 0.1, 0.1, 0.1]
    scores[1, :, 2] = 0.2  # expression 1: nothing above sigma -> empty masks
    logits = _query_logits(t, 2, 4, h // 4, w // 4, {(0, 1): (1, 5, 1, 5), (0, 3): (5, 9, 6, 11)})
    result = _result(scores, logits, (h, w), ["two things", "nothing"])
    seen = []
    refined = refine_with_sam2(frames, result, runner=Sam2VideoRunner(tiny_sam2()),
                               on_frame_masks=lambda *a: seen.append(a))
    r0, r1 = refined.expressions
    assert r0.queries == [1, 3] and r0.prompt_frames == [7, 2] and r0.referdino_queries == [0]
    assert r1.queries == [] and not r1.masks.any() and r1.outcome.startswith("no query above") and not r1.scores.any()
    assert r0.masks.shape == (t, h, w) and r0.masks.dtype == bool
    # the prompts: each kept query's ReferDINO mask, on its best frame, is in SAM2's output there
    from referdino.processing.postprocess import upsample_masks

    ref = (upsample_masks(torch.from_numpy(logits[:, 0, [1, 3]]), (h, w)) > 0).numpy()  # (T, 2, H, W)
    assert (ref[7, 0] & ~r0.masks[7]).sum() <= 0.05 * ref[7, 0].sum()
    assert (ref[2, 1] & ~r0.masks[2]).sum() <= 0.05 * ref[2, 1].sum()
    # the fusion decision is the rule's on SAM2's union and the kept queries' union
    runner = Sam2VideoRunner(tiny_sam2())
    sam = runner.track(frames, [(7, ref[7, 0]), (2, ref[2, 1])], union=True).to_array()
    expected, unite = fuse_video(sam, ref)
    assert r0.united == unite and (r0.masks == expected).all()
    np.testing.assert_allclose(r0.scores, scores[0][:, [1, 3]].max(1))
    # streamed frame by frame, in order, with the frame, (E, H, W) masks, (E, 4) boxes and (E,) scores
    assert [a[0] for a in seen] == result.frame_names
    assert all((a[1] == frames[i]).all() and a[2].shape == (2, h, w) and a[3].shape == (2, 4) for i, a in
               enumerate(seen))
    assert not result.per_query.logits.closed  # the caller closes it


class _FakeRunner:
    """SAM2 stand-in that returns given masks: the fusion with known answers."""

    def __init__(self, masks):
        self.masks = masks  # (T, H, W)
        self.prompts = None

    def track(self, frames, prompts, *, union=False, progress=None):
        self.prompts = prompts
        out = PackedMasks(len(self.masks), 1, self.masks.shape[1:])
        for t, m in enumerate(self.masks):
            out.set(t, m[None])
        return out


@pytest.mark.parametrize("sam_box, united", [((0, 4, 0, 4), True), ((0, 40, 0, 48), False)])
def test_refine_fuses_with_known_answers(sam_box, united):
    t, h, w = 5, 40, 48
    scores = np.full((1, t, 2), 0.05, np.float32)
    scores[0, :, 0] = 0.9
    logits = _query_logits(t, 1, 2, h // 4, w // 4, {(0, 0): (2, 8, 2, 10)})  # ReferDINO: about rows 8..31, cols 8..39
    result = _result(scores, logits, (h, w), ["a thing"])
    fake = _FakeRunner(np.stack([_box_mask(h, w, *sam_box)] * t))
    r = refine_with_sam2(_frames(t, h, w), result, runner=fake).expressions[0]
    from referdino.processing.postprocess import upsample_masks

    ref = (upsample_masks(torch.from_numpy(logits[0, 0, :1]), (h, w))[0] > 0).numpy()  # bilinear: corners cut
    assert box_area(ref) == (31 - 8) * (39 - 8)
    assert r.united is united and fake.prompts[0][0] == 0 and (fake.prompts[0][1] == ref).all()
    expected = (fake.masks[0] | ref) if united else fake.masks[0]
    assert all((m == expected).all() for m in r.masks)
    assert r.outcome == ("SAM2 united with ReferDINO" if united else "SAM2 alone")


def test_refine_needs_the_per_query_outputs():
    result = SegmentationResult(["0"], (4, 4), 10.0, [])
    with pytest.raises(ValueError, match="keep_queries=True"):
        refine_with_sam2(_frames(1, 4, 4), result, runner=_FakeRunner(np.zeros((1, 4, 4), bool)))


def test_segment_frames_keeps_every_query_on_request(checkpoint):
    model = ReferDino.from_pretrained(str(checkpoint))
    frames = [(str(i), f) for i, f in enumerate(_frames(3, 48, 64))]
    plain = segment_frames(model, frames, ["a cat"], short_side=48, window=2)
    assert plain.per_query is None
    kept = segment_frames(model, frames, ["a cat", "a dog"], short_side=48, window=2, keep_queries=True)
    pq = kept.per_query
    try:
        e, t, q = pq.scores.shape
        assert (e, t) == (2, 3) and pq.boxes.shape == (2, 3, q, 4)
        assert pq.mask_logits(2).shape[:2] == (2, q)
        assert kept.expressions[0].queries == [int(pq.scores[0].mean(0).argmax())]
    finally:
        pq.close()


# ------------------------------------------------------------------------------------------ the command line
def _image(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(_frames(1, 48, 64)[0]).save(path)
    return path


def test_offline_without_a_cached_checkpoint_is_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    _offline(monkeypatch, tmp_path / "empty-cache")
    code = main(["segment", str(_image(tmp_path)), "--text", "a cat", "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), "--no-progress", "--refine", "sam2", "--sam2", "tiny"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "facebook/sam2.1-hiera-tiny" in lines[0] and "HF_HUB_OFFLINE" in lines[0] and "hf download" in lines[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(Sam2UnavailableError):
        resolve_sam2("large")


def test_unknown_size_lists_the_sizes(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(_image(tmp_path)), "--text", "a", "--checkpoint", str(checkpoint), "--out",
              str(tmp_path / "o"), "--refine", "sam2", "--sam2", "huge"])
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "error" in x][0]
    assert exc.value.code == 2 and "huge" in line and all(size in line for size in SAM2_SIZES), err
    with pytest.raises(Exception, match="tiny, small, base-plus, large"):
        resolve_sam2("huge")
    code = main(["segment", str(_image(tmp_path)), "--text", "a", "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "o"), "--no-progress", "--sam2", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "--refine sam2" in err and len(err.strip().splitlines()) == 1


def test_incomplete_cached_checkpoint_is_one_line(tmp_path, monkeypatch):
    snapshot = _fake_hub_cache(tmp_path / "cache")
    _offline(monkeypatch, tmp_path / "cache")
    assert resolve_sam2("tiny") == snapshot
    for f in snapshot.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(Sam2UnavailableError, match="incomplete"):
        resolve_sam2("tiny")


def test_segment_refine_sam2_end_to_end_from_the_hub_cache(checkpoint, tmp_path, capsys, monkeypatch):
    _fake_hub_cache(tmp_path / "cache")
    _offline(monkeypatch, tmp_path / "cache")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_frames(4, 48, 64)):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    out = tmp_path / "out"
    code = main(["segment", str(folder), "--text", "a cat", "--checkpoint", str(checkpoint), "--out", str(out),
                 "--short-side", "48", "--window", "2", "--no-progress", "--no-video", "--refine", "sam2",
                 "--sam2", "tiny"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    import re

    # the random ReferDINO's scores pass sigma (it keeps queries): SAM2 ran on them
    assert re.search(r"00_a_cat: SAM2 tiny: queries \[\d[\d, ]*\] on frames \[[\d, ]+\] -> SAM2 ", captured.out), \
        captured.out
    data = json.loads((out / "00_a_cat" / "masks.json").read_text())
    assert [f["frame"] for f in data["frames"]] == ["00000", "00001", "00002", "00003"]
    masks = [np.array(Image.open(out / "00_a_cat" / "masks" / f"{i:05d}.png")) for i in range(4)]
    assert all(m.shape == (48, 64) for m in masks) and any(m.any() for m in masks)
