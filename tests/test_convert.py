import dataclasses
import json

import pytest
import torch

from referdino.config import get_preset
from referdino.convert.official import convert_official, official_key_shapes
from referdino.modeling.referdino import ReferDino
from referdino.parity import filled_official_state_dict
from referdino.weights import CheckpointError, load_state_dict_strict


def merged(cfg):
    return cfg.with_merged_lora()


def test_official_names_match_schema(official_fixtures):
    for preset, schema in (("ytvos_swint", "schema_swint.json"), ("ytvos_swinb", "schema_swinb.json")):
        with torch.device("meta"):
            model = ReferDino(get_preset(preset))
        s = json.loads((official_fixtures / schema).read_text())
        assert official_key_shapes(model) == {e["name"]: tuple(e["shape"]) for e in s["entries"]}


def _state_from_schema(schema):
    state, first = {}, {}
    for e in schema["entries"]:
        if e["alias_of"]:
            state[e["name"]] = state[e["alias_of"]]
        elif e["dtype"] == "int64":
            from referdino.modeling.swin import relative_position_index

            state[e["name"]] = relative_position_index(int(round(e["shape"][0] ** 0.5)))
        else:
            state[e["name"]] = torch.zeros(e["shape"])
    return state


def test_swinb_preset_builds_and_converts_from_schema(official_fixtures):
    schema = json.loads((official_fixtures / "schema_swinb.json").read_text())
    state = _state_from_schema(schema)
    cfg = get_preset("ytvos_swinb")
    ours, report = convert_official(state, cfg)
    assert report.folded_lora == 122
    with torch.device("meta"):
        model = ReferDino(merged(cfg))
    assert load_state_dict_strict(model, {k: v.to("meta") for k, v in ours.items()}).ok
    # and with the adapters kept for training
    ours, _ = convert_official(state, cfg, keep_lora=True)
    with torch.device("meta"):
        model = ReferDino(cfg)
    assert load_state_dict_strict(model, {k: v.to("meta") for k, v in ours.items()}).ok


def test_wrong_backbone_is_one_clear_error(official_fixtures):
    schema = json.loads((official_fixtures / "schema_swinb.json").read_text())
    ours, _ = convert_official(_state_from_schema(schema), get_preset("ytvos_swinb"))
    with torch.device("meta"):
        model = ReferDino(merged(get_preset("ytvos_swint")))
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, {k: v.to("meta") for k, v in ours.items()})
    msg = str(err.value)
    assert "\n" not in msg and "mis-shaped" in msg and "Swin-B" in msg and "unexpected" in msg


def test_tiny_official_roundtrip_and_strictness(tmp_path):
    cfg = get_preset("tiny")
    official = filled_official_state_dict(cfg)
    folded, _ = convert_official(official, cfg)
    kept, _ = convert_official(official, cfg, keep_lora=True)
    a = ReferDino(merged(cfg)).eval()
    load_state_dict_strict(a, folded)
    b = ReferDino(cfg).eval()
    load_state_dict_strict(b, kept)
    from referdino.processing.text import tokenize

    x, t = torch.randn(1, 2, 3, 64, 64), tokenize(["the dog"])
    with torch.no_grad():
        assert torch.allclose(a(x, t).pred_masks, b(x, t).pred_masks, atol=1e-3, rtol=1e-4)
    # missing, unexpected, mis-shaped keys: each named
    broken = dict(official)
    del broken["transformer.level_embed"]
    broken["transformer.encoder.bogus.weight"] = torch.zeros(1)
    converted, _ = convert_official(broken, cfg)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(ReferDino(merged(cfg)), converted)
    assert "encoder.bogus.weight" in str(err.value) and "level_embed" in str(err.value)
    with pytest.raises(CheckpointError, match="unknown key"):
        convert_official({**official, "something.else": torch.zeros(1)}, cfg)
    bad = dict(folded)
    bad.pop("level_embed")
    bad["decoder.norm.weight"] = torch.zeros(7)
    bad["extra.key"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(ReferDino(merged(cfg)), bad)
    msg = str(err.value)
    assert "level_embed" in msg and "decoder.norm.weight" in msg and "extra.key" in msg
    # shared copies that differ are rejected
    bad = dict(official)
    bad["bbox_embed.2.layers.0.bias"] = bad["bbox_embed.2.layers.0.bias"] + 1
    with pytest.raises(CheckpointError, match="shared copies differ"):
        convert_official(bad, cfg)


def test_cli_convert_official_and_groundingdino(tmp_path, capsys):
    from referdino.cli import main

    cfg = get_preset("tiny")
    official = filled_official_state_dict(cfg)
    src = tmp_path / "official.pth"
    torch.save({"model_state_dict": official, "epoch": 1}, src)
    assert main(["convert", str(src), str(tmp_path / "ours"), "--from", "referdino", "--config", "tiny"]) == 0
    model = ReferDino.from_pretrained(str(tmp_path / "ours"))
    assert model.config.lora.merged
    # an upstream GroundingDINO checkpoint lacks the ReferDINO-only modules and the adapters
    gd = {
        "module." + k: v
        for k, v in official.items()
        if not k.startswith(("pixel_decoder", "mask_decoder", "temporal_decoder", "ref_point_head", "backbone.0.norm0"))
        and "lora_" not in k
    }
    torch.save({"model": gd}, tmp_path / "gd.pth")
    assert main(["convert", str(tmp_path / "gd.pth"), str(tmp_path / "gd"), "--from", "groundingdino", "--config", "tiny"]) == 0
    ReferDino.from_pretrained(str(tmp_path / "gd"))
    # bad inputs: one line, exit code 2
    capsys.readouterr()
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    assert main(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "x"), "--from", "referdino", "--config", "tiny"]) == 2
    assert main(["convert", str(tmp_path / "nope.pth"), str(tmp_path / "x"), "--from", "referdino", "--config", "tiny"]) == 2
    assert main(["convert", str(src), str(tmp_path / "y"), "--from", "referdino", "--config", "ytvos_swint"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("error:" in line for line in err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_save_and_from_pretrained_identical(tmp_path):
    from referdino.processing.text import tokenize

    model = ReferDino(get_preset("tiny")).eval()
    model.save_pretrained(str(tmp_path / "m"))
    again = ReferDino.from_pretrained(str(tmp_path / "m"))
    x, t = torch.randn(1, 2, 3, 64, 64), tokenize(["a cat"])
    with torch.no_grad():
        assert torch.equal(model(x, t).pred_masks, again(x, t).pred_masks)
    (tmp_path / "m" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="safetensors"):
        ReferDino.from_pretrained(str(tmp_path / "m"))
