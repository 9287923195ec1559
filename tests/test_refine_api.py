"""SAM2 refinement (issue 13) in the Python API (`Segmenter.segment(..., refine="sam2", sam2=SIZE)`) and in
`referdino infer --refine sam2`, on a tiny random SAM2 from a fake hub cache. Nothing downloads."""

import json

import numpy as np
import pytest
from PIL import Image

from referdino import ReferDino
from referdino.cli import main
from referdino.inference.segmenter import Segmenter
from referdino.refine import REFINERS, SAM2_SIZES, RefinedExpression, Sam2UnavailableError, resolve_refinement
from sam2_helpers import _fake_hub_cache, _offline


def _frames(n=4, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return Segmenter(ReferDino.from_pretrained(str(checkpoint)), dtype="fp32")


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    _fake_hub_cache(tmp_path / "cache")
    _offline(monkeypatch, tmp_path / "cache")
    return tmp_path / "cache"


def test_bad_choices_are_value_errors_listing_them(segmenter):
    with pytest.raises(ValueError, match="choices: sam2"):
        segmenter.segment(_frames(2), "a cat", refine="sam3")
    with pytest.raises(ValueError, match="sizes: tiny, small, base-plus, large"):
        segmenter.segment(_frames(2), "a cat", refine="sam2", sam2="huge")
    with pytest.raises(ValueError, match="refine='sam2'"):
        segmenter.segment(_frames(2), "a cat", sam2="tiny")
    assert REFINERS == ("sam2",) and resolve_refinement(None) is None


def test_offline_without_the_checkpoint_fails_before_any_work(segmenter, tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path / "empty-cache")
    calls = []
    with pytest.raises(Sam2UnavailableError, match="facebook/sam2.1-hiera-small"):
        segmenter.segment(_frames(2), "a cat", refine="sam2", sam2="small", on_frame_masks=lambda *a: calls.append(a))
    with pytest.raises(Sam2UnavailableError):
        segmenter.segment_to(_frames(2), "a cat", tmp_path / "out", refine="sam2", sam2="tiny")
    assert not calls and not (tmp_path / "out").exists()


def test_segment_and_segment_to_refine(segmenter, tiny_cache, tmp_path):
    frames = _frames()
    streamed = []
    result = segmenter.segment(frames, ["a cat", "a dog"], short_side=48, window=2, refine="sam2", sam2="tiny",
                               on_frame_masks=lambda name, frame, masks, boxes, scores: streamed.append(masks))
    assert all(isinstance(r, RefinedExpression) for r in result.expressions)
    assert len(streamed) == 4 and streamed[0].shape == (2, 48, 64)
    for k, r in enumerate(result.expressions):
        assert r.masks.shape == (4, 48, 64)
        np.testing.assert_array_equal(r.masks, np.stack([m[k] for m in streamed]))
    assert any(r.queries for r in result.expressions)  # the random model's scores pass sigma: SAM2 ran
    runner = segmenter.sam2_runner(resolve_refinement("sam2", "tiny"))
    assert segmenter.sam2_runner(resolve_refinement("sam2", "tiny")) is runner  # loaded once

    refined, out = segmenter.segment_to(frames, ["a cat", "a dog"], tmp_path / "out", write_video=False,
                                        short_side=48, window=2, refine="sam2", sam2="tiny")
    data = json.loads((out / "00_a_cat" / "masks.json").read_text())
    assert [f["frame"] for f in data["frames"]] == ["00000", "00001", "00002", "00003"]
    for t in range(4):
        png = np.array(Image.open(out / "01_a_dog" / "masks" / f"{t:05d}.png")) > 0
        np.testing.assert_array_equal(png, result.expressions[1].masks[t])  # the refined masks are written


def test_infer_refine_sam2_writes_the_refined_masks(checkpoint, tiny_cache, tmp_path, capsys):
    from referdino.data import DATASETS
    from referdino.evaluation.predict_split import _frames as split_frames
    from referdino.synth import generate_world

    world = tmp_path / "world"
    generate_world(world, videos={"train": 1, "valid": 1}, seed=5)
    out = tmp_path / "pred"
    code = main(["infer", "ytvos", "--checkpoint", str(checkpoint), "--data-root", str(world), "--split", "valid",
                 "--out", str(out), "--short-side", "64", "--window", "4", "--device", "cpu", "--dtype", "fp32",
                 "--no-progress", "--refine", "sam2", "--sam2", "tiny"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "refining with SAM2 tiny" in captured.out and (out / "submission_ytvos.zip").is_file()
    # what was written is what the API's refinement gives for the same video
    records = DATASETS["ytvos"](str(world), "valid")
    video = records.videos["valid_00000"]
    exprs = [e for e in records.expressions if e.video_id == "valid_00000"]
    seg = Segmenter(ReferDino.from_pretrained(str(checkpoint)), dtype="fp32")
    expected = seg.segment(split_frames(video), [e.caption for e in exprs], short_side=64, window=4,
                           refine="sam2", sam2="tiny")
    for k, e in enumerate(exprs):
        for t, name in enumerate(video.frame_ids):
            png = np.array(Image.open(out / "Annotations" / "valid_00000" / e.expression_id / f"{name}.png")) > 0
            np.testing.assert_array_equal(png, expected.expressions[k].masks[t])


def test_infer_offline_without_the_checkpoint_is_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    _offline(monkeypatch, tmp_path / "empty-cache")
    code = main(["infer", "ytvos", "--checkpoint", str(checkpoint), "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "pred"), "--no-progress", "--refine", "sam2", "--sam2", "base-plus"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "facebook/sam2.1-hiera-base-plus" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert not (tmp_path / "pred").exists()
    code = main(["infer", "ytvos", "--checkpoint", str(checkpoint), "--data-root", str(tmp_path), "--out",
                 str(tmp_path / "pred"), "--no-progress", "--sam2", "tiny"])
    assert code == 2 and "--refine sam2" in capsys.readouterr().err
    assert set(SAM2_SIZES) == {"tiny", "small", "base-plus", "large"}
