"""`referdino benchmark` on the tiny preset: timing, FLOP count, floor and pruning figures are consistent."""

import json

from referdino.benchmark import run_benchmark
from referdino.cli import main


def test_benchmark_tiny_reports_flops_and_floor(tmp_path):
    out = tmp_path / "b.json"
    r = run_benchmark("tiny", frames=2, size=64, repeats=1, json_path=str(out))
    assert r.frames == 2 and r.height == 64 and r.width == 114 and len(r.seconds_per_run) == 1
    assert r.ms_per_frame > 0 and abs(r.frames_per_second - 1000 / r.ms_per_frame) < 1e-6
    assert 0 < r.decoder_gflop_per_frame < r.gflop_per_frame
    assert abs(r.floor_ms_per_frame - r.gflop_per_frame / r.matmul_gflops * 1000) < 1e-6
    data = json.loads(out.read_text())
    assert data["ours_ms_per_frame"] == r.ms_per_frame and data["memory_kind"] == "rss"
    # without pruning the decoder keeps every query: more decoder FLOPs
    off = run_benchmark("tiny", frames=2, size=64, repeats=1, pruning=False)
    assert off.decoder_gflop_per_frame > r.decoder_gflop_per_frame


def test_benchmark_bad_config_is_one_line_error(capsys):
    assert main(["benchmark", "--config", "swinx", "--no-flops"]) == 2
    assert "unknown config 'swinx'" in capsys.readouterr().err
