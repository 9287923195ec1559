"""Smoke test of the learning-proof pipeline (the real run takes about an hour; see README)."""

import json

from referdino.benchmarks.synthetic import main


def test_learning_proof_pipeline_writes_results(tmp_path):
    out = tmp_path / "proof"
    # --threads 2: the two video configurations train side by side in two processes of one thread each
    assert main(["--out", str(out), "--image-minutes", "0.02", "--minutes", "0.02", "--train-videos", "2",
                 "--valid-videos", "3", "--no-progress", "--threads", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("jf_static", "jf_motion", "jf_motion_no_temporal", "jf_static_no_temporal"):
        assert 0.0 <= results[key] <= 1.0
    assert results["train_minutes"] > 0 and results["train_steps"] >= 1
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads((out / "loss_curves.json").read_text())
    assert len(curves["image"]) == results["image_steps"]
    assert len(curves["image"]) + len(curves["temporal"]) == results["train_steps"]
    (out / "learning_curves.png").unlink()  # --plot-only re-draws the figure from the JSON files
    assert main(["--out", str(out), "--plot-only"]) == 0
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["image_steps"] >= 1 and results["train_steps"] > results["image_steps"]
    for phase in ("image", "temporal", "no_temporal"):
        assert (out / "runs" / phase / "checkpoints" / "last.pt").is_file()
    assert (out / "runs" / "image" / "model" / "model.safetensors").is_file()
    # the video phases started from the image phase (the no-temporal one without the temporal decoder)
    cfg = json.loads((out / "runs" / "no_temporal" / "train_config.json").read_text())
    assert cfg["init_weights"].endswith("model") and str(cfg["model_overrides"]["temporal_layers"]) == "0"
    # the temporal configuration sees the order of frames; each side-by-side process had one thread
    cfg = json.loads((out / "runs" / "temporal" / "train_config.json").read_text())
    assert cfg["model_overrides"]["temporal_position"] == "time_box" and cfg["lr_drop_time"] == 0.75
    for phase in ("temporal", "no_temporal"):
        assert json.loads((out / "runs" / phase / "done.json").read_text())["threads"] == 1
    assert results["temporal_position"] == "time_box"


def test_learning_proof_resumes_without_redoing_finished_phases(tmp_path, capsys):
    out = tmp_path / "proof"
    args = ["--out", str(out), "--image-minutes", "0.01", "--minutes", "0.01", "--train-videos", "2",
            "--valid-videos", "2", "--no-progress", "--sequential", "--temporal-position", "none"]
    assert main(args) == 0
    first = json.loads((out / "results.json").read_text())
    # a rerun without --resume is refused in one line; nothing is touched
    import pytest

    with pytest.raises(SystemExit, match="--resume"):
        main(args)
    # interrupted during the no-temporal phase: its marker is gone, its checkpoint is there
    (out / "runs" / "no_temporal" / "done.json").unlink()
    stamps = {p: (out / "runs" / p / "checkpoints" / "last.pt").stat().st_mtime_ns for p in ("image", "temporal")}
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    for p, stamp in stamps.items():  # finished phases were not trained again
        assert (out / "runs" / p / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    assert again["jf_static"] == first["jf_static"] and again["image_steps"] == first["image_steps"]
    assert again["train_steps_no_temporal"] >= first["train_steps_no_temporal"]


def test_learning_proof_video_world_curriculum(tmp_path):
    """--video-world: the video phases train on a second world (here every shape beside the twins differs from
    another in colour only); the held-out split stays the standard world's; --resume insists on the same one."""
    import pytest

    out = tmp_path / "proof"
    curriculum = "objects=3-4,near_miss=1,near_miss_field=colour"
    args = ["--out", str(out), "--image-minutes", "0.01", "--minutes", "0.01", "--train-videos", "2",
            "--valid-videos", "2", "--no-progress", "--sequential", "--video-world", curriculum]
    assert main(args) == 0
    video_world = json.loads((out / "video_world" / "world.json").read_text())
    assert set(video_world["splits"]) == {"train"} and video_world["params"]["near_miss_field"] == "colour"
    assert video_world["params"]["objects"] == [3, 4]
    assert json.loads((out / "world" / "world.json").read_text())["params"]["near_miss_field"] == "any"
    for phase, root in (("image", "world"), ("temporal", "video_world"), ("no_temporal", "video_world")):
        assert json.loads((out / "runs" / phase / "train_config.json").read_text())["data_root"] == str(out / root)
    assert json.loads((out / "results.json").read_text())["video_world"] == curriculum
    (out / "runs" / "no_temporal" / "done.json").unlink()
    with pytest.raises(SystemExit, match="other parameters"):
        main([*args[:-1], "objects=3-4,near_miss=1", "--resume"])
    with pytest.raises(SystemExit, match="near_miss"):
        main([*args[:-1], "near_miss=2", "--resume"])
    assert main([*args, "--resume"]) == 0
