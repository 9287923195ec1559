"""Published models by name (`referdino models`, `--model`, `from_pretrained(NAME)`) and checkpoints of any
layout, on a fake Hugging Face cache: nothing here touches the network."""

import os
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from referdino import ReferDino, get_preset, zoo
from referdino.cli import main
from referdino.parity import filled_official_state_dict
from referdino.weights import CheckpointError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_ID = "test-org/tiny-referdino"


@pytest.fixture(scope="module")
def official_state():
    return filled_official_state_dict(get_preset("tiny"))


@pytest.fixture(scope="module")
def official_pth(official_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny_official.pth"
    torch.save({"model_state_dict": official_state, "epoch": 3}, path)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Empty caches under tmp_path, offline, and a zoo entry `tiny_test` (tiny preset) on a fake repo."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("REFERDINO_CACHE", raising=False)
    entry = zoo.ZooEntry("tiny_test", "tiny", "tiny Swin", "nothing", "-", ("tiny_test.pth", "tiny_alt.pth"),
                         repo_id=REPO_ID)
    monkeypatch.setitem(zoo.ZOO, entry.name, entry)
    calls = []
    convert = zoo._convert_to_cache
    monkeypatch.setattr(zoo, "_convert_to_cache", lambda *a: (calls.append(a[4]), convert(*a))[1])
    return home, calls


def _put_in_hub(home, src, filename="tiny_test.pth", commit=COMMIT):
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, repo / "snapshots" / commit / filename)
    return repo / "snapshots" / commit / filename


def _image(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_name_resolves_converts_once_and_is_cached(hub, official_pth, official_state, capsys):
    home, calls = hub
    _put_in_hub(home, official_pth)
    start = time.perf_counter()
    first = ReferDino.from_pretrained("tiny_test")
    first_s = time.perf_counter() - start
    folder = home / "referdino" / "tiny_test" / COMMIT
    assert calls == [folder]
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", zoo.STAMP_NAME}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    assert first.config.lora.merged
    # the converted weights are the official ones (LoRA folded)
    assert torch.equal(first.state_dict()["level_embed"], official_state["transformer.level_embed"])
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    second = ReferDino.from_pretrained("tiny_test")
    second_s = time.perf_counter() - start
    assert len(calls) == 1 and (folder / "model.safetensors").stat().st_mtime_ns == mtime
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    with capsys.disabled():
        print(f"\nresolution of a hub-cached name: first (convert) {first_s * 1000:.0f} ms, "
              f"second (cached) {second_s * 1000:.0f} ms")
    # the listing says what is cached
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny_test"))
    assert f"yes ({COMMIT[:7]})" in row and row.rstrip().endswith("yes")
    # offline and the hub file deleted: the converted copy is still used
    shutil.rmtree(home / "hub" / f"models--{REPO_ID.replace('/', '--')}" / "snapshots")
    ReferDino.from_pretrained("tiny_test")
    assert len(calls) == 1


def test_broken_converted_copy_is_detected_and_redone(hub, official_pth, caplog):
    home, calls = hub
    _put_in_hub(home, official_pth)
    ReferDino.from_pretrained("tiny_test")
    weights = home / "referdino" / "tiny_test" / COMMIT / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # truncated
    ReferDino.from_pretrained("tiny_test")
    assert len(calls) == 2 and "incomplete" in caplog.text
    # same size but damaged inside: the read fails and the copy is redone
    data = bytearray(weights.read_bytes())
    data[8:40] = b"#" * 32
    weights.write_bytes(bytes(data))
    ReferDino.from_pretrained("tiny_test")
    assert len(calls) == 3
    # an interrupted conversion (no stamp) is redone too
    (weights.parent / zoo.STAMP_NAME).unlink()
    ReferDino.from_pretrained("tiny_test")
    assert len(calls) == 4


def test_other_spelling_of_the_hub_file(hub, official_pth):
    home, calls = hub
    _put_in_hub(home, official_pth, filename="tiny_alt.pth")
    ReferDino.from_pretrained("tiny_test")
    assert len(calls) == 1


def test_truncated_hub_file_is_one_clear_line(hub, official_pth, tmp_path, capsys):
    home, _ = hub
    hub_file = _put_in_hub(home, official_pth)
    hub_file.write_bytes(hub_file.read_bytes()[:20000])
    line = _one_line_error(capsys, main(["segment", str(_image(tmp_path)), "--text", "a", "--model", "tiny_test",
                                         "--out", str(tmp_path / "o"), "--no-progress"]))
    assert "incomplete" in line and str(hub_file) in line and "delete" in line and "tiny_test.pth" in line


def test_offline_and_not_cached_says_what_to_do(hub, tmp_path, capsys):
    code = main(["segment", str(_image(tmp_path)), "--text", "a cat", "--out", str(tmp_path / "o")])
    line = _one_line_error(capsys, code)
    assert "ryt_mevis_swinb" in line and "HF_HUB_OFFLINE" in line
    assert "--model demo" in line and "--checkpoint" in line
    assert not (tmp_path / "o").exists()
    with pytest.raises(zoo.ModelUnavailableError):
        ReferDino.from_pretrained("tiny_test")


def test_no_network_and_not_cached_is_one_line_too(hub, tmp_path, monkeypatch, capsys):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    start = time.perf_counter()
    line = _one_line_error(capsys, main(["segment", str(_image(tmp_path)), "--text", "a", "--model", "tiny_test",
                                         "--out", str(tmp_path / "o")]))
    assert "cannot be reached" in line and "--model demo" in line and "--checkpoint" in line
    assert time.perf_counter() - start < 10  # no retry loop


def test_unknown_name_lists_the_known_ones(hub, tmp_path, capsys):
    code = main(["segment", str(_image(tmp_path)), "--text", "a", "--model", "ryt_swinx", "--out", str(tmp_path / "o")])
    line = _one_line_error(capsys, code)
    assert "ryt_swinx" in line and all(name in line for name in ("demo", "ryt_swinb", "ryt_mevis_swinb", "coco_swint"))
    with pytest.raises(CheckpointError, match="known models: demo"):
        ReferDino.from_pretrained("ryt_swinx")
    line = _one_line_error(capsys, main(["infer", "ytvos", "--model", "nope", "--data-root", str(tmp_path),
                                         "--out", str(tmp_path / "p")]))
    assert "known models" in line


def test_demo_by_name_and_segment_on_it(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # a folder of that name does not shadow `--model demo`
    out = tmp_path / "o"
    assert main(["segment", str(_image(tmp_path)), "--text", "a red square", "--model", "demo", "--out", str(out),
                 "--short-side", "48", "--no-video", "--no-progress"]) == 0
    assert "embedded demo model" in capsys.readouterr().out


def test_checkpoint_files_of_every_layout(official_pth, official_state, tmp_path, capsys):
    # official ReferDINO .pth, directly: layout and preset recognised, no `referdino convert` needed
    model = ReferDino.from_pretrained(str(official_pth))
    assert "official ReferDINO layout, preset tiny" in model.resolved_from
    assert main(["segment", str(_image(tmp_path)), "--text", "a cat", "--checkpoint", str(official_pth), "--out",
                 str(tmp_path / "o"), "--short-side", "48", "--no-video", "--no-progress"]) == 0
    # official GroundingDINO .pth (no ReferDINO modules, no adapters, DDP prefix)
    gd = {"module." + k: v for k, v in official_state.items()
          if not k.startswith(("pixel_decoder", "mask_decoder", "temporal_decoder", "ref_point_head",
                               "backbone.0.norm0")) and "lora_" not in k}
    torch.save({"model": gd}, tmp_path / "gd.pth")
    a = ReferDino.from_pretrained(str(tmp_path / "gd.pth"))
    b = ReferDino.from_pretrained(str(tmp_path / "gd.pth"))
    assert "official GroundingDINO layout, preset tiny" in a.resolved_from
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):  # the fresh modules are deterministic
        assert torch.equal(x, y), k
    # ours: a folder, its safetensors file, a safetensors file alone (preset from the shapes)
    model.save_pretrained(str(tmp_path / "ours"))
    assert ReferDino.from_pretrained(str(tmp_path / "ours" / "model.safetensors")).config == model.config
    shutil.copyfile(tmp_path / "ours" / "model.safetensors", tmp_path / "alone.safetensors")
    alone = ReferDino.from_pretrained(str(tmp_path / "alone.safetensors"))
    assert "ours layout, preset tiny" in alone.resolved_from
    for (k, x), y in zip(model.state_dict().items(), alone.state_dict().values()):
        assert torch.equal(x, y), k


def test_transformers_folder_and_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    swin = transformers.SwinConfig(embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4], window_size=2,
                                   out_indices=[2, 3, 4])
    bert = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config = transformers.GroundingDinoConfig(
        backbone_config=swin, text_config=bert, d_model=128, encoder_layers=2, decoder_layers=3, encoder_ffn_dim=128,
        decoder_ffn_dim=128, encoder_attention_heads=4, decoder_attention_heads=4, num_queries=30)
    torch.manual_seed(0)
    transformers.GroundingDinoForObjectDetection(config).save_pretrained(tmp_path / "gdino")
    for path in (tmp_path / "gdino", tmp_path / "gdino" / "model.safetensors"):
        model = ReferDino.from_pretrained(str(path))
        assert "transformers GroundingDINO layout" in model.resolved_from
        assert model.config.d_model == 128 and model.config.swin.embed_dim == 16


def test_presets_are_recognised_from_shapes():
    from referdino.convert.official import official_key_shapes
    from referdino.resolve import OFFICIAL, detect_config, detect_layout

    for preset, expected in (("ytvos_swinb", "ytvos_swinb"), ("mevis_swint", "ytvos_swint"),
                             ("a2d_swinb", "a2d_swinb"), ("a2d_swint", "a2d_swint")):
        with torch.device("meta"):
            skeleton = ReferDino(get_preset(preset))
        state = {k: torch.empty(s, device="meta") for k, s in official_key_shapes(skeleton).items()}
        assert detect_layout(state) == OFFICIAL
        config, name = detect_config(state, OFFICIAL)
        assert name == expected and config.with_merged_lora() == get_preset(preset).with_merged_lora()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_and_non_checkpoints_are_one_line(official_state, tmp_path, capsys):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "hook": _Evil(marker)}, evil)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint at all")
    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}, resnet)
    cut = tmp_path / "cut.pth"
    torch.save({"model_state_dict": official_state}, cut)
    cut.write_bytes(cut.read_bytes()[:30000])
    for path, words in ((evil, ("refusing", "nothing in it was executed")), (text, ("not a checkpoint",)),
                        (resnet, ("not a ReferDINO or GroundingDINO checkpoint", "conv1.weight")),
                        (cut, ("incomplete or corrupt",))):
        with pytest.raises(CheckpointError) as err:
            ReferDino.from_pretrained(str(path))
        assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)
        line = _one_line_error(capsys, main(["segment", str(_image(tmp_path)), "--text", "a", "--checkpoint",
                                             str(path), "--out", str(tmp_path / "o"), "--no-progress"]))
        assert words[0] in line
    assert not marker.exists()
