"""`referdino parity` on every recorded official forward case: the proof that our model is the official model.

Cases are found by a recursive search of the fixture folder and kept by `fixture_kind`, so new or hidden cases
(Swin-B ones in `swinb/`, ...) are checked without editing this file; each runs through the CLI with no flags (the
preset comes from the file)."""

import logging

import numpy as np
import pytest

from conftest import fixtures_dir
from referdino.cli import main
from referdino.parity import (
    DEFAULT_PRESET, FixtureError, fixture_kind, load_fixture, require_fixture_kind, resolve_preset,
)


def _all_npz(d):
    return sorted(d.rglob("*.npz")) if d.is_dir() else []


def _kind(path):
    with np.load(path, allow_pickle=False) as data:
        return fixture_kind(data)


def _cases(d, kind):
    return [p for p in _all_npz(d) if _kind(p) == kind]


def _recorded_preset(path):
    with np.load(path, allow_pickle=False) as data:
        return str(data["config"]) if "config" in data else DEFAULT_PRESET


def _pixel_count(path):
    with np.load(path, allow_pickle=False) as data:
        return data["pixels"].size


def pytest_generate_tests(metafunc):
    if "forward_case" in metafunc.fixturenames:
        d = fixtures_dir()
        cases = _cases(d, "forward")
        metafunc.parametrize("forward_case", cases, ids=[p.relative_to(d).as_posix() for p in cases])


def test_fixture_folder_has_cases(official_fixtures):
    forward = _cases(official_fixtures, "forward")
    assert len(forward) >= 3, forward
    presets = {_recorded_preset(p) for p in forward}
    assert {"ytvos_swint", "ytvos_swinb"} <= presets, presets  # Swin-T cases and the Swin-B case(s)
    assert _cases(official_fixtures, "train"), "no training-step fixture found"


def test_parity_cli_passes(forward_case, capsys):
    code = main(["parity", str(forward_case)])  # no flags: the preset comes from the file
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"(preset {_recorded_preset(forward_case)}; " in out.splitlines()[0]
    assert " 0 failed" in out.splitlines()[-1]
    assert "skipped" not in out  # every entry of a recorded case is understood
    for key in ("pred_logits", "pred_boxes", "pred_masks", "enhanced_text", "prune5_gate", "temporal_out"):
        assert any(line.startswith(key) and line.rstrip().endswith("ok") for line in out.splitlines()), key


def test_unknown_keys_are_skipped_not_failed(official_fixtures, tmp_path, capsys):
    """A fixture with entries this version does not know still passes; they are listed as skipped at the end."""
    smallest = min(_cases(official_fixtures, "forward"), key=_pixel_count)
    data = load_fixture(smallest)
    extra = {
        "zz_future_array": np.ones((2, 3), np.float32),  # unmapped numeric entry
        "dec_hs9_c0to8_f16": np.zeros((1, 8), np.float16),  # known pattern, layer our model does not have
        "recorded_by": np.array("someone"),  # unknown metadata string
    }
    copy = tmp_path / "with_extra_keys.npz"
    np.savez(copy, **data, **extra)
    code = main(["parity", str(copy)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0, out
    assert lines[-1].endswith(" 0 failed, 3 skipped (unknown key)"), lines[-1]
    skipped = lines[-4:-1]  # listed at the end, after every comparison
    assert sorted(line.split()[0] for line in skipped) == sorted(extra)
    assert all("skipped (unknown key)" in line for line in skipped)
    assert any(line.startswith("pred_masks") and line.rstrip().endswith("ok") for line in lines)


def test_training_fixture_is_refused_with_one_line(official_fixtures, capsys):
    for path in _cases(official_fixtures, "train"):
        assert main(["parity", str(path)]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1, captured.err
        assert "Traceback" not in captured.err + captured.out
        assert err[0] == (
            f"referdino parity: error: {path} is a training-step fixture (it records losses and gradients); "
            f"check it with `referdino parity --train {path}`"
        )


def test_fixture_kind_and_mirror_message():
    assert fixture_kind({"pixels": 0, "pred_logits": 0}) == "forward"
    assert fixture_kind({"pixels": 0, "loss_total": 0}) == "train"
    assert fixture_kind(["pixels", "match_set_names"]) == "train"
    require_fixture_kind("f.npz", {"pixels": 0}, "forward")
    with pytest.raises(FixtureError, match=r"^f\.npz is a forward fixture .*`referdino parity f\.npz`$"):
        require_fixture_kind("f.npz", {"pixels": 0}, "train")


def test_resolve_preset(caplog):
    swinb = {"config": np.array("ytvos_swinb")}
    assert resolve_preset({}) == ("ytvos_swint", "default: the fixture has no `config` entry")
    assert resolve_preset(swinb) == ("ytvos_swinb", "from the fixture")
    assert resolve_preset({"config": np.array("configs/mevis_swinb.yaml")})[0] == "mevis_swinb"
    assert resolve_preset(swinb, "ytvos_swinb") == ("ytvos_swinb", "--config")
    with caplog.at_level(logging.WARNING, logger="referdino"):
        name, source = resolve_preset(swinb, "ytvos_swint", "x.npz")
    assert (name, source) == ("ytvos_swint", "--config, overriding the fixture's ytvos_swinb")
    assert "x.npz records preset ytvos_swinb but --config ytvos_swint was given" in caplog.text
    with pytest.raises(FixtureError, match="unknown preset 'swin_l'"):
        resolve_preset({"config": np.array("swin_l")})


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip", "cannot read fixture {path}: not an .npz archive"),
        ({"a": np.zeros(2)}, "{path} is not a parity fixture (no `pixels` entry)"),
        ({"pixels": np.zeros(1), "config": np.array("swin_l")}, "{path} records an unknown preset 'swin_l'"),
        ({"pixels": np.zeros(1)}, "{path} lacks forward-fixture entries needed by preset ytvos_swint: caption"),
    ],
    ids=["not-npz", "no-pixels", "unknown-preset", "incomplete"],
)
def test_parity_rejects_non_fixtures_with_one_line(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        _write(bad, **content)
    assert main(["parity", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(path=bad) in err[0], err
