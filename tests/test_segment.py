"""`referdino segment` and `ReferDino.segment`: outputs, shared work, windows, and every bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from referdino import ReferDino, get_preset
from referdino.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    ReferDino(get_preset("tiny")).save_pretrained(str(path))
    return path


def _frames(n=5, h=48, w=80, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def _write_mp4(path, frames, fps=10):
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_segment_video_file_writes_all_outputs(checkpoint, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    _write_mp4(video, _frames(6))
    out = tmp_path / "out"
    code, stdout, err = _run(["segment", str(video), "--text", "the red ball", "--text", "a dog on the left",
                              "--checkpoint", str(checkpoint), "--out", str(out), "--short-side", "48",
                              "--window", "4", "--no-progress"], capsys)
    assert code == 0, err
    dirs = sorted(p.name for p in out.iterdir() if p.name != ".referdino.json")  # the marker: see output_dirs
    assert dirs == ["00_the_red_ball", "01_a_dog_on_the_left"]
    for d in dirs:
        pngs = sorted((out / d / "masks").glob("*.png"))
        assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(6)]
        m = np.array(Image.open(pngs[0]))
        assert m.shape == (48, 80) and set(np.unique(m)) <= {0, 255}
        data = json.loads((out / d / "masks.json").read_text())
        assert len(data["frames"]) == 6 and data["frames"][0]["segmentation"]["size"] == [48, 80]
        assert len(data["frames"][0]["box_xyxy"]) == 4 and 0 <= data["frames"][0]["score"] <= 1
        assert (out / d / "overlay.mp4").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_frame_folder_image_and_no_video(checkpoint, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(3)
    Image.fromarray(frames[0]).convert("L").save(folder / "a.png")  # grayscale
    Image.fromarray(frames[1]).convert("RGBA").save(folder / "b.png")  # RGBA
    Image.fromarray((frames[2][..., 0].astype(np.uint16) * 257)).save(folder / "c.png")  # 16-bit
    code, _, err = _run(["segment", str(folder), "--text", "a cat", "--checkpoint", str(checkpoint), "--out",
                         str(tmp_path / "o1"), "--short-side", "48", "--no-video", "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(p.stem for p in (tmp_path / "o1" / "00_a_cat" / "masks").glob("*.png")) == ["a", "b", "c"]
    assert not (tmp_path / "o1" / "00_a_cat" / "overlay.mp4").exists()
    image = tmp_path / "one.jpg"
    Image.fromarray(frames[0]).save(image)
    code, _, err = _run(["segment", str(image), "--text", "a cat", "--checkpoint", str(checkpoint), "--out",
                         str(tmp_path / "o2"), "--short-side", "48", "--multi", "--no-progress"], capsys)
    assert code == 0, err


def test_api_windows_and_shared_backbone(checkpoint):
    model = ReferDino.from_pretrained(str(checkpoint))
    frames = _frames(7)
    whole = model.segment(frames, ["a cat", "the red ball"], short_side=48, window=7)
    again = model.segment(frames, ["a cat", "the red ball"], short_side=48, window=7)
    assert np.array_equal(whole.expressions[0].masks, again.expressions[0].masks)
    single = model.segment(frames, "the red ball", short_side=48, window=7)
    # the expressions share the backbone but not their answers: the batched run equals the single one
    assert np.array_equal(single.expressions[0].masks, whole.expressions[1].masks)
    windowed = model.segment(frames, ["a cat"], short_side=48, window=3)
    assert windowed.expressions[0].masks.shape == (7, 48, 80)
    calls = []
    original = model.encode_images
    model.encode_images = lambda x: calls.append(x.shape[0]) or original(x)
    model.segment(frames, ["a", "b", "c", "d"], short_side=48, window=4)
    assert calls == [4, 3]  # once per window, whatever the number of expressions


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "missing.mp4", "input not found"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "unsupported input"),
        (lambda d: (d / "bad.mp4").write_bytes(b"\x00" * 64) and d / "bad.mp4", "cannot open video"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no frames"),
        (lambda d: (d / "broken.jpg").write_bytes(b"\xff\xd8garbage") and d / "broken.jpg", "cannot read image"),
    ],
)
def test_bad_inputs_are_one_line_errors(checkpoint, tmp_path, capsys, make, expected):
    src = make(tmp_path)
    code, _, err = _run(["segment", str(src), "--text", "a cat", "--checkpoint", str(checkpoint), "--out",
                         str(tmp_path / "out"), "--no-progress"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "out").exists()


def test_zero_frame_video(checkpoint, tmp_path, capsys):
    import av

    path = tmp_path / "zero.mp4"
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height = 32, 32
    code, _, err = _run(["segment", str(path), "--text", "a", "--checkpoint", str(checkpoint), "--out",
                         str(tmp_path / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_bad_expressions_and_checkpoints(checkpoint, tmp_path, capsys, caplog):
    image = tmp_path / "one.png"
    Image.fromarray(_frames(1)[0]).save(image)
    base = ["segment", str(image), "--out", str(tmp_path / "o"), "--no-progress", "--short-side", "48"]
    assert _run([*base, "--text", "   ", "--checkpoint", str(checkpoint)], capsys)[0] == 2
    # an overlong expression is truncated with a warning, not an error
    code, _, err = _run([*base, "--text", "word " * 300, "--checkpoint", str(checkpoint)], capsys)
    assert code == 0 and "the rest is ignored" in caplog.text
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoint / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
    other = tmp_path / "other"
    torch.manual_seed(0)
    ReferDino(get_preset("tiny").replace(d_model=64, input_proj_groups=8, fusion_dim=64)).save_pretrained(str(other))
    (other / "config.json").write_text((checkpoint / "config.json").read_text())
    pickle = tmp_path / "evil.pth"
    pickle.write_bytes(b"not a checkpoint")
    for ckpt, word in ((tmp_path / "none", "not found"), (broken, "safetensors"), (other, "mis-shaped"),
                       (pickle, "not a checkpoint")):
        code, _, err = _run([*base, "--text", "a cat", "--checkpoint", str(ckpt)], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and word in lines[0], (ckpt, err)


def test_output_under_a_file_is_an_error(checkpoint, tmp_path, capsys):
    image = tmp_path / "one.png"
    Image.fromarray(_frames(1)[0]).save(image)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["segment", str(image), "--text", "a", "--checkpoint", str(checkpoint), "--out",
                         str(blocker / "o"), "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "writable" in err, err


def test_demo_runs_offline_with_the_embedded_model(tmp_path, capsys):
    from referdino.demo_model import demo_model_path

    assert demo_model_path() is not None
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-video"]) == 0
    out = capsys.readouterr().out
    assert "embedded demo model" in out and "J&F against the generated ground truth" in out
    dirs = [p for p in (tmp_path / "demo").iterdir() if p.name != ".referdino.json"]
    assert dirs and all((d / "masks.json").is_file() for d in dirs)
