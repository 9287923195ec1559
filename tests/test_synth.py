"""The synthetic RVOS world: determinism, Ref-YouTube-VOS layout, expression semantics, masks, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from referdino.synth import (
    COLOURS,
    KINDS,
    SynthConfig,
    VOCABULARY,
    generate_clip,
    generate_world,
    matches,
    parse_expression,
    synth_main,
    video_seed,
)
from referdino.synth.render import half_size, palette, shape_mask

SEED = 7
VIDEOS = 3


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    summary = generate_world(out, videos=VIDEOS, seed=SEED)
    assert summary.videos == {"train": VIDEOS, "valid": VIDEOS}
    return out


def _load(path: Path):
    return json.loads(path.read_text("utf-8"))


def _centroids(labels: np.ndarray, obj_id: int) -> np.ndarray:
    out = []
    for frame in labels:
        ys, xs = np.nonzero(frame == obj_id)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def test_same_seed_same_bytes(world, tmp_path):
    again = generate_world(tmp_path / "again", videos=VIDEOS, seed=SEED)
    assert _files(world) == _files(tmp_path / "again")
    assert again.count() == again.count("static") + again.count("motion") > 0
    other = _files(generate_world(tmp_path / "other", videos=VIDEOS, seed=SEED + 1).out_dir)
    assert other["train/JPEGImages/train_00000/00000.jpg"] != _files(world)["train/JPEGImages/train_00000/00000.jpg"]
    w = _load(world / "world.json")
    assert w["seed"] == SEED and w["params"]["height"] == 96 and w["vocabulary"] == list(VOCABULARY)


def test_layout_is_ref_youtube_vos(world):
    assert [p for p in world.rglob(".*")] == [world / ".referdino.json"], "temporary files left behind"
    pal = palette()
    for split in ("train", "valid"):
        meta = _load(world / split / "meta.json")["videos"]
        exps = _load(world / "meta_expressions" / split / "meta_expressions.json")["videos"]
        kinds = _load(world / split / "expression_kinds.json")
        assert list(meta) == list(exps) == list(kinds) == [f"{split}_{i:05d}" for i in range(VIDEOS)]
        assert sorted(p.name for p in (world / split / "JPEGImages").iterdir()) == list(meta)
        assert sorted(p.name for p in (world / split / "Annotations").iterdir()) == list(meta)
        for vid, entry in exps.items():
            frames = entry["frames"]
            assert frames == [f"{5 * t:05d}" for t in range(len(frames))] and 8 <= len(frames) <= 12
            assert sorted(p.stem for p in (world / split / "JPEGImages" / vid).glob("*.jpg")) == frames
            assert list(entry["expressions"]) == [str(i) for i in range(len(entry["expressions"]))]
            assert set(kinds[vid]) == set(entry["expressions"]) and set(kinds[vid].values()) <= {"static", "motion"}
            objects = meta[vid]["objects"]
            for e in entry["expressions"].values():
                assert isinstance(e["obj_id"], str) and e["obj_id"] in objects
            if len(objects) >= 3:
                assert set(kinds[vid].values()) == {"static", "motion"}
            ids = {int(k) for k in objects}
            present = {k: [] for k in ids}
            for name in frames:
                jpg = Image.open(world / split / "JPEGImages" / vid / f"{name}.jpg")
                assert jpg.mode == "RGB" and jpg.size == (160, 96)
                png = Image.open(world / split / "Annotations" / vid / f"{name}.png")
                assert png.mode == "P" and png.size == (160, 96) and png.getpalette()[:12] == pal[:12]
                values = set(np.unique(np.asarray(png)).tolist())
                assert values <= {0} | ids
                for k in ids:
                    if k in values:
                        present[k].append(name)
            for k, info in objects.items():
                assert info["frames"] == present[int(k)]
                assert info["category"] in KINDS and info["colour"] in COLOURS


def test_disk_matches_in_memory_clip(world):
    """PNGs are exactly the clip's label maps; JPEG colours inside each mask are the object's colour."""
    meta = _load(world / "valid" / "meta.json")["videos"]
    clip = generate_clip(video_seed(SEED, "valid", 1), name="valid_00001")
    labels = np.stack([np.asarray(Image.open(world / "valid/Annotations/valid_00001" / f"{n}.png"))
                       for n in clip.frame_names])
    np.testing.assert_array_equal(labels, clip.label_maps())
    for obj in clip.objects:
        assert meta["valid_00001"]["objects"][str(obj.obj_id)]["colour"] == obj.colour
        for name, mask in zip(clip.frame_names, clip.object_mask(obj.obj_id)):
            rgb = np.asarray(Image.open(world / "valid/JPEGImages/valid_00001" / f"{name}.jpg"), dtype=float)
            assert np.abs(rgb[mask].mean(0) - COLOURS[obj.colour]).max() < 15


def test_static_expressions_are_unique_by_static_attributes(world):
    n = 0
    for split in ("train", "valid"):
        meta = _load(world / split / "meta.json")["videos"]
        kinds = _load(world / split / "expression_kinds.json")
        for vid, entry in _load(world / "meta_expressions" / split / "meta_expressions.json")["videos"].items():
            objects = meta[vid]["objects"]
            for exp_id, e in entry["expressions"].items():
                desc = parse_expression(e["exp"])
                assert desc.text() == e["exp"] and desc.kind == kinds[vid][exp_id]
                if desc.kind != "static":
                    continue
                n += 1
                hits = [k for k, o in objects.items()
                        if all({"kind": o["category"], **o}[f] == v for f, v in desc.attributes.items())]
                assert hits == [e["obj_id"]], e["exp"]
    assert n > 0


def test_motion_expressions_need_motion(world):
    """A motion expression's target has a twin (same kind, colour, size) that moves differently; static words
    alone do not single the target out, the full expression does."""
    n = 0
    for split in ("train", "valid"):
        meta = _load(world / split / "meta.json")["videos"]
        for vid, entry in _load(world / "meta_expressions" / split / "meta_expressions.json")["videos"].items():
            objects = meta[vid]["objects"]
            statics = {k: {"kind": o["category"], "colour": o["colour"], "size": o["size"]} for k, o in objects.items()}
            labels = np.stack([np.asarray(Image.open(world / split / "Annotations" / vid / f"{f}.png"))
                               for f in entry["frames"]])
            for e in entry["expressions"].values():
                desc = parse_expression(e["exp"])
                if desc.kind != "motion":
                    continue
                n += 1
                target = e["obj_id"]
                twins = [k for k in objects if k != target and statics[k] == statics[target]]
                assert twins, e["exp"]
                hits = [k for k, o in objects.items() if matches(desc, statics[k], o["motion"], o["direction"])]
                assert hits == [target], e["exp"]
                path = _centroids(labels, int(target))
                for k in twins:
                    other = _centroids(labels, int(k))
                    assert np.abs((path - path[0]) - (other - other[0])).max() > 3.0, (vid, e["exp"])
    assert n > 0


def test_motions_and_masks_match_drawn_shapes():
    for seed in range(12):
        clip = generate_clip(seed)
        t, h, w = clip.masks.shape[1:]
        assert clip.frames.shape == (t, h, w, 3) and clip.frames.dtype == np.uint8
        assert clip.masks.sum(0).max() <= 1, "visible masks overlap"
        fulls = []
        for obj in clip.objects:
            s = half_size(obj.size, h, w)
            fulls.append(np.stack([shape_mask(obj.kind, x, y, s, h, w) for x, y in obj.centers]))
        for i, obj in enumerate(clip.objects):
            above = np.zeros_like(fulls[i])
            for f in fulls[i + 1:]:
                above |= f
            mask = clip.object_mask(obj.obj_id)
            np.testing.assert_array_equal(mask, fulls[i] & ~above)
            assert (mask.sum((1, 2)) >= 0.7 * fulls[i].sum((1, 2))).all()
            assert np.abs(clip.frames[mask].mean(0) - COLOURS[obj.colour]).max() < 3
            d = obj.centers - obj.centers[0]
            if obj.motion == "still":
                assert np.abs(d).max() == 0
            else:
                unit = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[obj.direction]
                along = d @ np.array(unit, dtype=float)
                assert along[-1] > 0.25 * min(h, w) and (np.diff(along) >= 0).all()
                if obj.motion == "stops":
                    assert np.diff(along)[-2:].max() == 0 and np.diff(along)[0] > 0
                else:
                    assert np.diff(along).min() > 0
        background = ~np.any(fulls, axis=0)
        spread = clip.frames.max(-1).astype(int) - clip.frames.min(-1)
        assert spread[background].max() < 80, "background should be greyish, shapes saturated"


def test_generate_clip_is_deterministic_and_configurable():
    a, b = generate_clip(3), generate_clip(3)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert [e.text for e in a.expressions] == [e.text for e in b.expressions]
    assert not np.array_equal(generate_clip(4).frames[0], a.frames[0])
    c = generate_clip(5, frames=6, height=64, width=80, objects=3, textured=False, noise=0)
    assert c.frames.shape == (6, 64, 80, 3) and len(c.objects) == 3
    assert {e.kind for e in c.expressions} == {"static", "motion"}
    assert set(" ".join(e.text for e in c.expressions).split()) <= set(VOCABULARY)
    with pytest.raises(ValueError):
        generate_clip(-1)
    with pytest.raises(ValueError):
        generate_clip(0, frames=2)


def test_near_miss_colour_world_needs_the_colour_words():
    """near_miss=1 with near_miss_field="colour": every shape beside the twins has a look-alike that differs from
    it in colour only, so its static expressions must name the colour."""
    statics_seen = 0
    for seed in range(12):
        clip = generate_clip(seed, objects=(3, 4), near_miss=1.0, near_miss_field="colour")
        statics = [o.static for o in clip.objects]
        for i, s in enumerate(statics):
            if statics.count(s) > 1:  # a twin
                continue
            assert any(j != i and t["kind"] == s["kind"] and t["size"] == s["size"] and t["colour"] != s["colour"]
                       for j, t in enumerate(statics)), (seed, statics)
            for e in clip.expressions:
                if e.obj_id == clip.objects[i].obj_id and e.kind == "static":
                    assert s["colour"] in e.text.split()
                    statics_seen += 1
    assert statics_seen >= 10
    # the defaults draw exactly what they drew before the option existed: spelled out, the same clip
    a, b = generate_clip(11), generate_clip(11, near_miss=0.5, near_miss_field="any")
    np.testing.assert_array_equal(a.frames, b.frames)
    for bad in ({"near_miss": 1.5}, {"near_miss_field": "shape"}):
        with pytest.raises(ValueError, match="near_miss"):
            generate_clip(0, **bad)
    assert SynthConfig.parse("objects=3-4, near_miss=1,near_miss_field=colour,textured=false") == SynthConfig.make(
        objects=(3, 4), near_miss=1.0, near_miss_field="colour", textured=False)
    for bad in ("colours=2", "objects", "objects=x", "near_miss=2", "frames=2"):
        with pytest.raises(ValueError, match="synthetic world") as exc:
            SynthConfig.parse(bad)
        assert "\n" not in str(exc.value)


def test_parse_expression_round_trip():
    d = parse_expression("the small red square moving to the left")
    assert dict(d.attributes) == {"size": "small", "colour": "red", "kind": "square"} and d.motion == "left"
    assert parse_expression("the circle that stops").kind == "motion"
    assert parse_expression("the blue circle").kind == "static"
    for bad in ("a red square", "the red", "the square red", "the purple square"):
        with pytest.raises(ValueError):
            parse_expression(bad)


def test_cli(tmp_path, capsys):
    out = tmp_path / "w"
    assert synth_main(["--out", str(out), "--videos", "2", "--seed", "1", "--frames", "4-5", "--splits", "train"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "2 videos" in line and "static" in line and "motion" in line and str(out) in line
    assert sorted(p.name for p in (out / "train/JPEGImages").iterdir()) == ["train_00000", "train_00001"]
    # rewriting a previous world with fewer videos leaves nothing stale
    synth_main(["--out", str(out), "--videos", "1", "--seed", "1", "--frames", "4", "--height", "64", "--width", "64"])
    assert sorted(p.name for p in (out / "train/JPEGImages").iterdir()) == ["train_00000"]
    assert Image.open(out / "valid/JPEGImages/valid_00000/00000.jpg").size == (64, 64)
    synth_main(["--out", str(out), "--videos", "1", "--frames", "4", "--near-miss", "1", "--near-miss-field", "colour"])
    assert {"near_miss": 1.0, "near_miss_field": "colour"}.items() <= _load(out / "world.json")["params"].items()

    # a run interrupted after it started writing (marker present, no world.json) can be rerun in place
    (out / "world.json").unlink()
    (out / ".referdino-synth-incomplete").write_text("")
    synth_main(["--out", str(out), "--videos", "1", "--frames", "4", "--splits", "valid"])
    assert (out / "world.json").is_file() and not (out / ".referdino-synth-incomplete").exists()

    afile = tmp_path / "file.txt"
    afile.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    for argv in (["--out", str(afile)], ["--out", str(afile / "sub")], ["--out", str(tmp_path / "n"), "--videos", "0"],
                 ["--out", str(foreign)]):
        with pytest.raises(ValueError) as exc:
            synth_main(argv)
        assert "\n" not in str(exc.value)
    assert (foreign / "keep.txt").read_text() == "x" and not (tmp_path / "n").exists()
