"""`referdino parity` on every recorded official case: the proof that our model is the official model."""

import pytest

from referdino.cli import main


def _cases(d):
    return sorted(d.glob("*.npz"))


def test_fixture_folder_has_cases(official_fixtures):
    assert len(_cases(official_fixtures)) >= 2


@pytest.mark.parametrize("case", ["caseA.npz", "caseC.npz"])
def test_parity_cli_passes(official_fixtures, case, capsys):
    path = official_fixtures / case
    code = main(["parity", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert " 0 failed" in out
    for key in ("pred_logits", "pred_boxes", "pred_masks", "enhanced_text", "prune5_gate", "temporal_out"):
        assert any(line.startswith(key) and line.rstrip().endswith("ok") for line in out.splitlines()), key


def test_every_shared_case_passes(official_fixtures, capsys):
    extra = [p for p in _cases(official_fixtures) if p.name not in ("caseA.npz", "caseC.npz")]
    for path in extra:
        assert main(["parity", str(path)]) == 0, capsys.readouterr().out


def test_parity_rejects_unreadable_fixture(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["parity", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read fixture" in err[0]
