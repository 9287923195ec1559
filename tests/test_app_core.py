"""`referdino app` without a browser: input checks and their messages, the sample clip, a run's outputs, the
model default, the CLI (Gradio is not needed here; see test_app.py for the page in a real browser)."""

import json
import zipfile

import av
import pytest

from referdino.app import core
from referdino.app.core import AppError, Limits
from referdino.cli import main


@pytest.fixture(scope="module")
def workspace():
    ws = core.Workspace(keep_runs=2)
    yield ws
    ws.close()
    assert not ws.root.exists()


@pytest.fixture(scope="module")
def sample(workspace):
    return core.make_sample(workspace.root)


def test_sample_clip_is_a_small_h264_video(sample):
    assert sample.path.stat().st_size < 300_000
    with av.open(str(sample.path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(frames) == sample.num_frames == core.SAMPLE_FRAMES
    assert frames[0].shape == (96, 160, 3)
    assert len(sample.expressions) >= 2 and len(set(sample.expressions)) == len(sample.expressions)


def test_check_request_accepts_the_sample(sample):
    req = core.check_request(sample.path, " the triangle \n\n  the square  \n", "demo", False, "auto", Limits())
    assert req.expressions == ["the triangle", "the square"]
    assert (req.num_frames, req.height, req.width, req.short_side) == (sample.num_frames, 96, 160, 96)
    assert core.check_request(sample.path, "x", "demo", True, "240", Limits()).short_side == 240


@pytest.mark.parametrize("text", ["", "   \n \n", None])
def test_no_expression(sample, text):
    with pytest.raises(AppError, match="at least one expression"):
        core.check_request(sample.path, text, "demo", False, "auto", Limits())


def test_too_many_expressions(sample):
    with pytest.raises(AppError, match="at most 12"):
        core.parse_expressions("\n".join(f"thing {i}" for i in range(13)))


def test_no_video_and_unknown_model(sample):
    with pytest.raises(AppError, match="Upload a video"):
        core.check_request(None, "x", "demo", False, "auto", Limits())
    with pytest.raises(AppError, match="Choose a model"):
        core.check_request(sample.path, "x", "/etc", False, "auto", Limits(), allowed_models=["demo"])


def test_bad_short_side(sample):
    with pytest.raises(AppError, match="between 32 and 2048"):
        core.check_request(sample.path, "x", "demo", False, "4", Limits())


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(AppError, match="cannot be read as a video"):
        core.probe_video(text, Limits())
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG")
    with pytest.raises(AppError, match="not a video this app reads"):
        core.probe_video(image, Limits())


@pytest.mark.parametrize("ext, message", [("avi", "has no frames"), ("mp4", "no video stream: it holds no frames")])
def test_zero_frame_video(tmp_path, ext, message):
    path = tmp_path / f"empty.{ext}"  # an AVI keeps its empty video stream, an MP4 drops it
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    with pytest.raises(AppError, match=message):
        core.probe_video(path, Limits())


def test_caps(sample, tmp_path):
    with pytest.raises(AppError, match=f"more than {sample.num_frames - 1} frames"):
        core.probe_video(sample.path, Limits(max_frames=sample.num_frames - 1))
    assert core.probe_video(sample.path, Limits(max_frames=sample.num_frames))[0] == sample.num_frames
    with pytest.raises(AppError, match="up to 0.01 MB"):
        core.probe_video(sample.path, Limits(max_mb=0.01))


def test_run_writes_overlay_sheet_and_zip(sample, workspace):
    exprs = sample.expressions[:2]
    req = core.check_request(sample.path, "\n".join(exprs), "demo", False, "auto", Limits())
    models = core.ModelCache("cpu", "fp32")
    seen = []
    result = core.run_request(req, models, workspace, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (sample.num_frames, sample.num_frames)
    with av.open(str(result.overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == sample.num_frames
    assert result.contact_sheet.stat().st_size > 0
    names = set(zipfile.ZipFile(result.masks_zip).namelist())
    dirs = [f"00_{core_slug(exprs[0])}", f"01_{core_slug(exprs[1])}"]
    expected = {f"{d}/masks/{i:05d}.png" for d in dirs for i in range(sample.num_frames)}
    expected |= {f"{d}/masks.json" for d in dirs}
    assert names == expected
    with zipfile.ZipFile(result.masks_zip) as zf:
        data = json.loads(zf.read(f"{dirs[1]}/masks.json"))
    assert data["expression"] == exprs[1] and len(data["frames"]) == sample.num_frames
    assert models.loaded("demo")
    assert models.get("demo") is models.get("demo")  # loaded once, reused
    # older runs are deleted beyond keep_runs (2 here)
    for _ in range(2):
        workspace.new_run()
    assert not result.folder.exists()
    assert len(list((workspace.root / "runs").iterdir())) == 2


def test_run_refined_with_sam2(sample, workspace, checkpoint, tmp_path, monkeypatch):
    """The "Refine with SAM2" checkbox's path: a tiny random SAM2 from a fake hub cache (nothing downloads)."""
    from sam2_helpers import _fake_hub_cache, _offline

    _fake_hub_cache(tmp_path / "cache")
    _offline(monkeypatch, tmp_path / "cache")
    exprs = sample.expressions[:2]
    with pytest.raises(AppError, match="SAM2 size 'huge'"):
        core.check_request(sample.path, "x", str(checkpoint), False, "auto", Limits(), refine=True, sam2="huge")
    req = core.check_request(sample.path, "\n".join(exprs), str(checkpoint), False, "auto", Limits(), refine=True,
                             sam2="tiny")
    assert req.refine and req.sam2 == "tiny"
    models = core.ModelCache("cpu", "fp32")
    seen, stages = [], []
    result = core.run_request(req, models, workspace, progress=lambda d, t: seen.append((d, t)),
                              status=stages.append)
    assert "refining with SAM2 tiny" in stages
    assert (sample.num_frames, sample.num_frames) in seen and seen[-1][0] == seen[-1][1] > 0  # SAM2's frames too
    lines = result.summary.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{e}: SAM2 tiny, ") for line, e in zip(lines, exprs))
    names = set(zipfile.ZipFile(result.masks_zip).namelist())
    assert f"00_{core_slug(exprs[0])}/masks/{sample.num_frames - 1:05d}.png" in names
    with av.open(str(result.overlay)) as c:
        assert sum(1 for _ in c.decode(video=0)) == sample.num_frames


def test_refine_offline_without_the_sam2_checkpoint_is_a_message(sample, workspace, tmp_path, monkeypatch):
    from sam2_helpers import _offline

    _offline(monkeypatch, tmp_path / "empty-cache")
    req = core.check_request(sample.path, "the square", "demo", False, "auto", Limits(), refine=True,
                             sam2="large")
    runs = set((workspace.root / "runs").iterdir())
    with pytest.raises(AppError, match="Cannot refine with SAM2: .*facebook/sam2.1-hiera-large.*HF_HUB_OFFLINE"):
        core.run_request(req, core.ModelCache("cpu", "fp32"), workspace)
    assert set((workspace.root / "runs").iterdir()) == runs  # nothing was run


def core_slug(text):
    from referdino.inference.writers import slug

    return slug(text)


def test_unknown_model_is_an_app_error():
    with pytest.raises(AppError, match="cannot load the model"):
        core.ModelCache("cpu").get("no_such_model")


def test_default_model_falls_back_to_demo_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("REFERDINO_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert core.default_model(None) == "demo"
    assert core.default_model("coco_swint") == "coco_swint"
    labels = dict((v, k) for k, v in core.model_choices("demo"))
    assert "not cached" in labels["ryt_mevis_swinb"] and "embedded" in labels["demo"]
    assert "demo" in core.describe_model("demo")


def test_cli_without_gradio(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["app", "--model", "demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['referdino app: the web app needs Gradio: pip install "referdino[app]"']


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--port", "--host", "--max-mb", "--max-frames"):
        assert option in out


def test_frame_progress():
    calls = []
    p = core.FrameProgress(10, lambda d, t: calls.append((d, t)))
    p.update(4)
    p.update(8)
    assert calls == [(4, 10), (10, 10)]
