"""Output folders: no command deletes or overwrites what referdino did not write (`referdino.output_dirs`)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from referdino import ReferDino, get_preset
from referdino.cli import main
from referdino.output_dirs import MARKER, OutputError, check_output_dir, record_outputs
from referdino.synth import generate_world


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "one.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _user_folder(path, name="notes.txt", text="mine"):
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    return path / name


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("referdino ") and "error:" in err[0], err
    for word in words:
        assert word in err[0], (word, err[0])
    return err[0]


def _segment(capsys, image, checkpoint, out, *extra, text="a cat", no_video=True):
    capsys.readouterr()
    return main(["segment", str(image), "--text", text, "--checkpoint", str(checkpoint), "--out", str(out),
                 "--short-side", "48", *(["--no-video"] if no_video else []), "--no-progress", *extra])


# ------------------------------------------------------------------ the rule itself


def test_rule_new_empty_file_foreign_own(tmp_path):
    assert check_output_dir(tmp_path / "new", "segment", ["00_a"]) == {}
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", "segment", ["00_a"]) == {}
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "f", "segment", overwrite=True)
    user = _user_folder(tmp_path / "mixed")
    with pytest.raises(OutputError, match="did not write.*--overwrite"):
        check_output_dir(user.parent, "segment", ["00_a"])
    record_outputs(user.parent, "segment", ["00_a"])
    (user.parent / "00_a").mkdir()
    assert check_output_dir(user.parent, "segment", ["00_a"], overwrite=True) == {"00_a": "segment"}
    with pytest.raises(OutputError, match="notes.txt exists and was not written by referdino"):
        check_output_dir(user.parent, "segment", ["notes.txt"], overwrite=True)
    # a marker never reaches outside its folder
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / MARKER).write_text(json.dumps({"entries": {"../mixed": "segment", "ok": "segment"}}))
    assert check_output_dir(tmp_path / "evil", "segment") == {"ok": "segment"}


# ------------------------------------------------------------------ segment


def test_segment_keeps_a_users_file(checkpoint, image, tmp_path, capsys):
    out = tmp_path / "out"
    user = _user_folder(out)
    assert _segment(capsys, image, checkpoint, out) == 2
    _one_line_error(capsys, str(out), "did not write", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert _segment(capsys, image, checkpoint, out, "--overwrite") == 0
    assert user.read_text() == "mine" and (out / "00_a_cat" / "masks.json").is_file()
    # again with another expression: our old folder goes, the user's file stays
    assert _segment(capsys, image, checkpoint, out, "--overwrite", text="a dog") == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "00_a_dog", "contact_sheet.png", "notes.txt"]
    assert user.read_text() == "mine"
    # a user's file named as one of our top-level outputs is never replaced either; one we do not write is kept
    mine = tmp_path / "mine"
    _user_folder(mine, "contact_sheet.png", "my sheet")
    _user_folder(mine, "overlay.mp4", "my video")
    assert _segment(capsys, image, checkpoint, mine, "--overwrite") == 2
    _one_line_error(capsys, "contact_sheet.png", "not written by referdino")
    (mine / "contact_sheet.png").unlink()
    assert _segment(capsys, image, checkpoint, mine, "--overwrite") == 0  # --no-video: overlay.mp4 is not ours
    assert (mine / "overlay.mp4").read_text() == "my video" and (mine / "contact_sheet.png").is_file()
    assert _segment(capsys, image, checkpoint, mine, "--overwrite", no_video=False) == 2
    _one_line_error(capsys, "overlay.mp4", "not written by referdino")
    assert (mine / "overlay.mp4").read_text() == "my video"
    # a user's folder with the very name we need is never replaced, even with --overwrite
    theirs = tmp_path / "theirs"
    _user_folder(theirs / "00_a_cat", "keep.png", "png")
    assert _segment(capsys, image, checkpoint, theirs, "--overwrite") == 2
    _one_line_error(capsys, "00_a_cat", "not written by referdino")
    assert (theirs / "00_a_cat" / "keep.png").read_text() == "png"
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


def test_segment_out_naming_a_file_is_refused(checkpoint, image, tmp_path, capsys):
    target = tmp_path / "result"
    target.write_text("precious")
    for extra in ([], ["--overwrite"]):
        assert _segment(capsys, image, checkpoint, target, *extra) == 2
        _one_line_error(capsys, str(target), "is a file")
        assert target.is_file() and target.read_text() == "precious"


def test_segment_reruns_into_its_own_output(checkpoint, image, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["segment", str(image), "--text", "a cat", "--text", "a dog", "--checkpoint", str(checkpoint),
                 "--out", str(out), "--short-side", "48", "--no-video", "--no-progress"]) == 0
    first = (out / "00_a_cat" / "masks.json").read_text()
    assert _segment(capsys, image, checkpoint, out, no_video=False) == 0  # no flag needed: only ours are there
    # 01_a_dog was ours: replaced; the combined video and the contact sheet are ours too
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "00_a_cat", "contact_sheet.png", "overlay.mp4"]
    assert (out / "00_a_cat" / "masks.json").read_text() == first
    assert json.loads((out / MARKER).read_text())["entries"] == {
        "00_a_cat": "segment", "contact_sheet.png": "segment", "overlay.mp4": "segment"}
    assert _segment(capsys, image, checkpoint, out) == 0  # --no-video: our earlier combined video goes
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "00_a_cat", "contact_sheet.png"]
    # a folder written before the marker existed (expression folders only) is recognised by its layout
    (out / MARKER).unlink()
    (out / "contact_sheet.png").unlink()
    assert _segment(capsys, image, checkpoint, out, text="a bird") == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "00_a_bird", "contact_sheet.png"]


def test_segment_api_writer_refuses_a_foreign_folder(tmp_path):
    from referdino.inference.writers import SegmentationWriter

    _user_folder(tmp_path / "o")
    with pytest.raises(OutputError):
        SegmentationWriter(tmp_path / "o", ["a cat"], 5.0, write_video=False)
    writer = SegmentationWriter(tmp_path / "o", ["a cat"], 5.0, write_video=False, overwrite=True)
    writer.abort()  # a discarded run leaves the folder as it was
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ export, convert, save_pretrained


def test_export_rule(tmp_path, capsys):
    from referdino.training.checkpoint import save_checkpoint

    cfg = get_preset("tiny")
    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, {"model_config": cfg.to_json(), "model": ReferDino(cfg).state_dict()})
    dst = tmp_path / "model"
    user = _user_folder(dst, "README.md")
    capsys.readouterr()
    assert main(["export", str(ckpt), str(dst)]) == 2
    _one_line_error(capsys, str(dst), "did not write", "--overwrite")
    assert sorted(p.name for p in dst.iterdir()) == ["README.md"]
    assert main(["export", str(ckpt), str(dst), "--overwrite"]) == 0
    assert main(["export", str(ckpt), str(dst), "--overwrite"]) == 0  # again: replaces our own files only
    assert user.read_text() == "mine"
    ReferDino.from_pretrained(str(dst))
    mine = tmp_path / "mine"
    assert main(["export", str(ckpt), str(mine)]) == 0
    (mine / MARKER).unlink()  # an older version's model folder: recognised by the safetensors header
    assert main(["export", str(ckpt), str(mine)]) == 0
    capsys.readouterr()
    assert main(["export", str(ckpt), str(user)]) == 2
    _one_line_error(capsys, "is a file")
    assert user.read_text() == "mine"


def test_convert_and_save_pretrained_rule(tmp_path, capsys):
    from referdino.parity import filled_official_state_dict

    cfg = get_preset("tiny")
    src = tmp_path / "official.pth"
    torch.save({"model": filled_official_state_dict(cfg)}, src)
    # e.g. converting into a downloaded model folder: its config.json is never replaced
    dst = tmp_path / "download"
    config = _user_folder(dst, "config.json", '{"theirs": 1}')
    argv = ["convert", str(src), str(dst), "--from", "referdino", "--config", "tiny"]
    capsys.readouterr()
    assert main(argv) == 2
    _one_line_error(capsys, str(dst), "did not write")
    assert main([*argv, "--overwrite"]) == 2
    _one_line_error(capsys, "config.json", "not written by referdino")
    assert sorted(p.name for p in dst.iterdir()) == ["config.json"] and config.read_text() == '{"theirs": 1}'
    config.rename(tmp_path / "moved.json")
    _user_folder(dst, "notes.txt")
    assert main([*argv, "--overwrite"]) == 0
    assert main([*argv, "--overwrite"]) == 0
    assert (dst / "notes.txt").read_text() == "mine"
    # the Python API: a new folder and our own folder work, a foreign one is refused
    model = ReferDino(get_preset("tiny"))
    model.save_pretrained(str(tmp_path / "api"))
    model.save_pretrained(str(tmp_path / "api"))
    with pytest.raises(OutputError):
        model.save_pretrained(str(dst))


# ------------------------------------------------------------------ synth, infer, train


def test_synth_rule(tmp_path, capsys):
    out = tmp_path / "world"
    user = _user_folder(out)
    with pytest.raises(ValueError, match="did not write"):
        generate_world(out, videos=1, frames=4, splits=["train"])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    generate_world(out, videos=1, frames=4, splits=["train", "valid"], overwrite=True)
    generate_world(out, videos=1, frames=4, splits=["valid"], overwrite=True)  # our old train split goes
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "meta_expressions", "notes.txt", "valid", "world.json"]
    assert user.read_text() == "mine"
    own = tmp_path / "own"
    generate_world(own, videos=1, frames=4, splits=["train"])
    generate_world(own, videos=1, frames=4, splits=["train"])  # re-run into its own world: no flag needed
    capsys.readouterr()
    assert main(["synth", "--out", str(user), "--videos", "1", "--frames", "4"]) == 2
    _one_line_error(capsys, "is a file")
    assert user.read_text() == "mine"


def test_infer_refuses_a_foreign_folder_or_a_file(checkpoint, tmp_path, capsys):
    world = tmp_path / "world"
    generate_world(world, videos={"train": 1, "valid": 1}, seed=5, frames=4)
    out = tmp_path / "pred"
    user = _user_folder(out)
    base = ["infer", "ytvos", "--checkpoint", str(checkpoint), "--data-root", str(world), "--split", "valid",
            "--short-side", "48", "--device", "cpu", "--no-progress", "--out"]
    capsys.readouterr()
    assert main([*base, str(out)]) == 2
    _one_line_error(capsys, str(out), "did not write", "--overwrite")
    assert main([*base, str(user)]) == 2
    _one_line_error(capsys, "is a file")
    assert main([*base, str(out), "--overwrite"]) == 0
    assert main([*base, str(out), "--overwrite"]) == 0
    assert (out / "submission_ytvos.zip").is_file() and user.read_text() == "mine"


def test_train_rule(tmp_path, capsys):
    world = tmp_path / "world"
    generate_world(world, videos={"train": 1}, frames=4, splits=["train"])
    out = tmp_path / "run"
    user = _user_folder(out)
    train = ["train", "synthetic_tiny", f"data_root={world}", "num_frames=2", "batch_size=1", "ckpt_every=0"]
    capsys.readouterr()
    assert main([*train, f"out_dir={out}", "max_steps=1", "--no-progress"]) == 2
    _one_line_error(capsys, str(out), "did not write", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*train, f"out_dir={user}", "max_steps=1", "--no-progress"]) == 2
    _one_line_error(capsys, "is a file")
    assert main([*train, f"out_dir={out}", "max_steps=1", "--no-progress", "--overwrite"]) == 0  # one step
    assert (out / "checkpoints" / "last.pt").is_file() and user.read_text() == "mine"
    capsys.readouterr()
    assert main([*train, f"out_dir={out}", "max_steps=1", "--no-progress", "--resume"]) == 2  # still theirs
    _one_line_error(capsys, "did not write")
    user.unlink()
    assert main([*train, f"out_dir={out}", "max_steps=1", "--no-progress", "--resume"]) == 0  # its own run folder
    assert "trained 1 steps" in capsys.readouterr().out
