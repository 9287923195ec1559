"""Smoke test of the learning-proof pipeline (the real run takes ~55 minutes; see README)."""

import json

from referdino.benchmarks.synthetic import main


def test_learning_proof_pipeline_writes_results(tmp_path):
    out = tmp_path / "proof"
    assert main(["--out", str(out), "--minutes", "0.03", "--train-videos", "2", "--valid-videos", "3",
                 "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    for key in ("jf_static", "jf_motion", "jf_motion_no_temporal", "jf_static_no_temporal"):
        assert 0.0 <= results[key] <= 1.0
    assert results["train_minutes"] > 0 and results["train_steps"] >= 1
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "runs" / "temporal" / "checkpoints" / "last.pt").is_file()
