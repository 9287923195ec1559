"""`referdino infer`: a checkpoint over a benchmark split -> official PNG layout + submission zip, scored by
`referdino evaluate`."""

import zipfile

import torch

from referdino import ReferDino, get_preset
from referdino.cli import main
from referdino.synth import generate_world


def test_infer_ytvos_split_and_zip_then_evaluate(tmp_path, capsys):
    world = tmp_path / "world"
    generate_world(world, videos={"train": 1, "valid": 2}, seed=5)
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    ReferDino(get_preset("tiny")).save_pretrained(str(ckpt))
    out = tmp_path / "pred"
    assert main(["infer", "ytvos", "--checkpoint", str(ckpt), "--data-root", str(world), "--split", "valid",
                 "--out", str(out), "--short-side", "96", "--device", "cpu", "--no-progress"]) == 0
    videos = sorted(p.name for p in (out / "Annotations").iterdir())
    assert videos == ["valid_00000", "valid_00001"]
    with zipfile.ZipFile(out / "submission_ytvos.zip") as z:
        names = z.namelist()
    assert names and all(n.startswith("Annotations/") for n in names)
    first = sorted((out / "Annotations" / "valid_00000").iterdir())[0]
    assert len(list(first.glob("*.png"))) >= 8
    # the predictions score in [0, 1] against the world's own ground truth (YTVOS-style GT reader)
    capsys.readouterr()
    code = main(["evaluate", "mevis", "--pred", str(out / "Annotations"), "--gt", str(world / "valid"),
                 "--json", str(tmp_path / "scores.json")])
    assert code == 0, capsys.readouterr().err


def test_mevis_zip_has_no_top_folder(tmp_path):
    from referdino.evaluation.predict_split import write_submission_zip

    (tmp_path / "Annotations" / "v1" / "0").mkdir(parents=True)
    (tmp_path / "Annotations" / "v1" / "0" / "00000.png").write_bytes(b"png")
    with zipfile.ZipFile(write_submission_zip(tmp_path, "mevis")) as z:
        assert z.namelist() == ["v1/0/00000.png"]
    with zipfile.ZipFile(write_submission_zip(tmp_path, "ytvos")) as z:
        assert z.namelist() == ["Annotations/v1/0/00000.png"]
