"""Dataset layer: readers on tiny folders in each layout, sampling, transforms, RLE, collate, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from referdino.data import (
    ClipBatch, DatasetError, ReferringVideoDataset, build_dataset, collate_clips, masks_to_boxes, read_a2d,
    read_davis, read_jhmdb, read_mevis, read_refcoco, read_ytvos, rle, sample_clip_indices,
)
from referdino.data.loading import load_image
from referdino.data.transforms import (
    IMAGENET_MEAN, IMAGENET_STD, Clip, Compose, Normalize, PhotometricDistort, RandomHorizontalFlip, RandomSizeCrop,
    resized_shape, swap_left_right, video_train_transform,
)

H, W = 32, 48
IDENTITY = Compose([Normalize()])  # no augmentation: exact values can be checked


# ----------------------------------------------------------------------------------------- helpers


def frame_pixels(i: int) -> np.ndarray:
    """A distinct, exactly checkable frame: constant colour depending on i."""
    img = np.zeros((H, W, 3), dtype=np.uint8)
    img[...] = (10 * i, 100, 200 - 10 * i)
    return img


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def save_palette(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.astype(np.uint8).tobytes())
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    img.save(path)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def unnormalise(frames: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (frames * std + mean) * 255


OBJ1 = box_mask(4, 12, 8, 20)  # object 1 in every frame
OBJ2 = box_mask(20, 30, 30, 46)  # object 2 only in even frames


def make_ytvos(root: Path, split: str = "train", num_frames: int = 8, png_frames: bool = True,
               annotations: bool = True) -> Path:
    """Video v1 with objects 1 (always) and 2 (even frames); expressions 0 -> obj 1, 1 -> obj 2."""
    frames = [f"{5 * i:05d}" for i in range(num_frames)]
    for i, f in enumerate(frames):
        path = root / split / "JPEGImages" / "v1" / f"{f}.{'png' if png_frames else 'jpg'}"
        save_png(path, frame_pixels(i))
        if annotations:
            ids = np.where(OBJ1, 1, 0) + np.where(OBJ2 & (i % 2 == 0), 2, 0)
            save_palette(root / split / "Annotations" / "v1" / f"{f}.png", ids)
    expressions = {"0": {"exp": "the  Man on the LEFT", "obj_id": "1"}, "1": {"exp": "a dog", "obj_id": "2"}}
    if not annotations:
        expressions = {k: {"exp": v["exp"]} for k, v in expressions.items()}
    write_json(root / "meta_expressions" / split / "meta_expressions.json",
               {"videos": {"v1": {"expressions": expressions, "frames": frames}}})
    write_json(root / split / "meta.json", {"videos": {"v1": {"objects": {
        "1": {"category": "person", "frames": frames}, "2": {"category": "dog", "frames": frames[::2]}}}}})
    return root


def make_mevis(root: Path, split: str = "train", num_frames: int = 5) -> Path:
    """Video m1; anno 10 = OBJ1 in all frames, anno 11 = OBJ2 in frames 1 and 3 only (null elsewhere)."""
    frames = [f"{i:05d}" for i in range(num_frames)]
    for i, f in enumerate(frames):
        save_png(root / split / "JPEGImages" / "m1" / f"{f}.png", frame_pixels(i))
    mask_dict = {
        "10": [rle.encode(OBJ1) for _ in frames],
        "11": [rle.encode(OBJ2) if i in (1, 3) else None for i in range(num_frames)],
    }
    write_json(root / split / "mask_dict.json", mask_dict)
    write_json(root / split / "meta_expressions.json", {"videos": {"m1": {"frames": frames, "expressions": {
        "0": {"exp": "two things moving", "obj_id": [0, 1], "anno_id": [10, 11]},
        "1": {"exp": "the thing that appears", "obj_id": [1], "anno_id": [11]},
    }}}})
    return root


def write_mp4(path: Path, num_frames: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(num_frames):
            gray = np.full((H, W, 3), 30 * i + 20, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(gray, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_a2d(root: Path, split: str = "test") -> Path:
    """Video vidA (6 frames); instance 1 annotated in frames 2 and 4, instance 2 in frame 4 (1-based)."""
    write_mp4(root / "Release" / "clips320H" / "vidA.mp4", 6)
    samples = [["the man on the left", "vidA", 2, 1], ["the man on the left", "vidA", 4, 1], ["a dog", "vidA", 4, 2]]
    write_json(root / f"a2d_sentences_single_frame_{split}_annotations.json", samples)
    masks = {(2, 1): OBJ1, (4, 1): OBJ1, (4, 2): OBJ2}
    images = [{"id": f"v_vidA_f_{f}_i_{i}", "height": H, "width": W} for f, i in masks]
    annotations = [{"id": k + 1, "image_id": f"v_vidA_f_{f}_i_{i}", "category_id": 1, "segmentation": rle.encode(m),
                    "iscrowd": 0} for k, ((f, i), m) in enumerate(masks.items())]
    write_json(root / f"a2d_sentences_{split}_annotations_in_coco_format.json",
               {"categories": [{"id": 1, "name": "dummy_class"}], "images": images, "annotations": annotations})
    return root


def make_jhmdb(root: Path, metadata: bool = False) -> Path:
    """Video jv1 (action clap): 5 frames but 4 masks; the mask moves one pixel right per frame."""
    import scipy.io

    for i in range(1, 6):
        save_png(root / "Rename_Images" / "clap" / "jv1" / f"{i:05d}.png", frame_pixels(i))
    part_mask = np.stack([np.roll(OBJ1, t, axis=1) for t in range(4)], axis=2).astype(np.uint8)
    (root / "puppet_mask" / "clap" / "jv1").mkdir(parents=True)
    scipy.io.savemat(str(root / "puppet_mask" / "clap" / "jv1" / "puppet_mask.mat"), {"part_mask": part_mask})
    (root / "jhmdb_annotation.txt").write_text("video_id,query\njv1,a woman clapping her hands\n")
    if metadata:
        write_json(root / "jhmdb_sentences_samples_metadata.json", [
            ["jv1", f"./jhmdb_sentences/Rename_Images/clap/jv1/{f:05d}.png",
             "./jhmdb_sentences/puppet_mask/clap/jv1/puppet_mask.mat", 4, "a woman clapping her hands"]
            for f in (2, 3)])
    return root


def make_refcoco(root: Path, variants: tuple[str, ...] = ("refcoco",)) -> Path:
    """One COCO image; expression 1 = polygon (OBJ1's rectangle), expression 2 = RLE of OBJ2."""
    save_png(root / "train2014" / "COCO_train2014_000000000009.png", frame_pixels(3))
    polygon = [8, 4, 20, 4, 20, 12, 8, 12]
    for v in variants:
        images = [{"id": 1, "file_name": "COCO_train2014_000000000009.png", "height": H, "width": W,
                   "caption": "the box on the right"},
                  {"id": 2, "file_name": "COCO_train2014_000000000009.png", "height": H, "width": W,
                   "caption": "bottom thing"}]
        annotations = [{"id": 1, "image_id": 1, "segmentation": [polygon], "bbox": [8, 4, 12, 8], "category_id": 1},
                       {"id": 2, "image_id": 2, "segmentation": rle.encode(OBJ2), "bbox": [30, 20, 16, 10],
                        "category_id": 1}]
        write_json(root / v / f"instances_{v}_train.json", {"images": images, "annotations": annotations})
    return root


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError) and "\n" not in message
    for needle in needles:
        assert needle in message, message


# --------------------------------------------------------------------------------------------- RLE


def test_rle_known_strings_worked_by_hand() -> None:
    # 2x3 mask, column-major 0,0 | 1,1 | 1,0 -> runs [2, 3, 1] -> one character each: "231"
    small = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    assert rle.encode(small) == {"size": [2, 3], "counts": "231"}
    # 10x4 mask with runs [5, 30, 2, 3]: 5 -> "5"; 30 = 0b11110 needs a continuation ("n" then "0");
    # 2 -> "2"; 4th count is stored as 3 - 30 = -27 -> groups 5 (+0x20) and 31 (sign) -> "UO".
    flat = np.zeros(40, dtype=bool)
    flat[5:35] = True
    flat[37:40] = True
    mask = flat.reshape(4, 10).T
    encoded = rle.encode(mask)
    assert encoded == {"size": [10, 4], "counts": "5n02UO"}
    assert rle.area(encoded) == 33
    assert np.array_equal(rle.decode(encoded), mask)
    assert rle.string_to_counts("5n02UO") == [5, 30, 2, 3]


def test_rle_round_trips() -> None:
    gen = np.random.default_rng(0)
    masks = [np.zeros((3, 5), bool), np.ones((4, 2), bool), np.eye(6, dtype=bool), np.ones((1, 1), bool),
             gen.random((7, 9)) > 0.5, OBJ1 | OBJ2, np.zeros((40, 50), bool)]
    masks[-1][:, 10:] = True  # long runs (> 2**10): multi-character counts
    for mask in masks:
        encoded = rle.encode(mask)
        assert np.array_equal(rle.decode(encoded), mask)
        assert rle.area(encoded) == int(mask.sum())
    assert rle.rle_counts(np.ones((2, 2), bool)) == [0, 4]  # starts with an empty run of zeros
    counts = [0, 70000, 3, 1, 123456, 2]
    assert rle.string_to_counts(rle.counts_to_string(counts)) == counts
    uncompressed = {"size": [2, 3], "counts": [2, 3, 1]}
    assert np.array_equal(rle.decode(uncompressed), np.array([[0, 1, 1], [0, 1, 0]], bool))
    with pytest.raises(ValueError):
        rle.decode({"size": [2, 3], "counts": [2, 3]})


# ---------------------------------------------------------------------------------------- sampling


def test_clip_sampling_rules() -> None:
    rng = random.Random(0)
    reversed_count = 0
    for _ in range(400):
        anchor = rng.randrange(10, 90)
        clip = sample_clip_indices(anchor, 100, 6, rng)
        assert len(clip) == 6 and anchor in clip
        ordered = sorted(clip)
        assert clip == ordered or clip == ordered[::-1]
        reversed_count += clip != ordered
        before = [i for i in clip if anchor - 3 <= i < anchor]
        after = [i for i in clip if anchor < i <= anchor + 3]
        assert before and after  # one local frame on each side, within 3 of the anchor
        assert len(set(clip)) == 6  # long video: the globals come from outside the local span
    assert 0.2 < reversed_count / 400 < 0.4  # reversal with probability 0.3
    for length in (1, 2, 4):  # short videos: clamped locals and repeated globals, still 6 in range
        clip = sample_clip_indices(0, length, 6, rng)
        assert len(clip) == 6 and all(0 <= i < length for i in clip)
    assert sample_clip_indices(3, 5, 1, rng) == [3]


def test_masks_to_boxes() -> None:
    boxes = masks_to_boxes(torch.from_numpy(np.stack([OBJ1, np.zeros((H, W), bool)])))
    assert torch.allclose(boxes[0], torch.tensor([14 / W, 8 / H, 12 / W, 8 / H]))
    assert torch.equal(boxes[1], torch.zeros(4))


# ---------------------------------------------------------------------------------------- datasets


def test_ytvos_train_samples(tmp_path: Path) -> None:
    records = read_ytvos(make_ytvos(tmp_path), "train")
    assert [e.category for e in records.expressions] == ["person", "dog"]
    ds = ReferringVideoDataset(records, train=True, transform=IDENTITY, seed=1)
    assert len(ds) == 4  # 2 expressions x anchors 0 and 6 of 8 annotated frames
    sample = ds[0]
    assert sample.frames.shape == (6, 3, H, W) and sample.frames.dtype == torch.float32
    assert sample.masks.shape == (6, H, W) and sample.masks.dtype == torch.bool
    assert sample.boxes.shape == (6, 4) and sample.valid.shape == (6,)
    assert sample.caption == "the man on the left" and sample.video_id == "v1" and sample.expression_id == "0"
    assert sample.orig_size == (H, W) and sample.dataset == "ytvos"
    positions = [int(f) // 5 for f in sample.frame_ids]
    for t, p in enumerate(positions):
        assert torch.allclose(unnormalise(sample.frames[t]), torch.from_numpy(frame_pixels(p)).permute(2, 0, 1).float(),
                              atol=1e-3)
        assert torch.equal(sample.masks[t], torch.from_numpy(OBJ1))
    assert sample.valid.all()
    assert torch.allclose(sample.boxes, torch.tensor([14 / W, 8 / H, 12 / W, 8 / H]).expand(6, 4))
    dog = ds[2]  # expression 1: object 2 visible in even frames only
    positions = [int(f) // 5 for f in dog.frame_ids]
    assert dog.valid.tolist() == [p % 2 == 0 for p in positions]
    assert all(dog.boxes[t].eq(0).all() for t in range(6) if not dog.valid[t])


def test_ytvos_default_augmentation_shapes(tmp_path: Path) -> None:
    ds = build_dataset("ytvos", make_ytvos(tmp_path, png_frames=False), "train", seed=3)
    sample = ds[1]
    t, c, h, w = sample.frames.shape
    assert (t, c) == (6, 3) and max(h, w) <= 640 and sample.masks.shape == (6, h, w)
    assert sample.valid.any() and sample.caption in ("the man on the left", "the man on the right", "a dog")


def test_ytvos_eval_whole_video(tmp_path: Path) -> None:
    make_ytvos(tmp_path, "valid", num_frames=3, annotations=False)
    write_json(tmp_path / "meta_expressions" / "test" / "meta_expressions.json", {"videos": {"other": {}}})
    ds = build_dataset("ytvos", tmp_path, "valid")
    assert not ds.train and len(ds) == 2  # one item per expression
    sample = ds[1]
    assert sample.frames.shape == (3, 3, 360, 540) and sample.frame_ids == ["00000", "00005", "00010"]
    assert not sample.masks.any() and not sample.valid.any() and sample.orig_size == (H, W)
    write_json(tmp_path / "meta_expressions" / "test" / "meta_expressions.json", {"videos": {"v1": {}}})
    with pytest.raises(DatasetError, match="no expressions"):
        read_ytvos(tmp_path, "valid")  # the only video is a test video


def test_mevis_union_masks(tmp_path: Path) -> None:
    ds = build_dataset("mevis", make_mevis(tmp_path), "train", transform=IDENTITY, seed=0)
    assert ds.anchor_stride == 64 and len(ds) == 2  # one anchor (frame 0) per expression
    sample = ds[0]
    assert sample.frames.shape == (6, 3, H, W)
    for t, f in enumerate(sample.frame_ids):
        expected = OBJ1 | (OBJ2 if int(f) in (1, 3) else np.zeros_like(OBJ2))
        assert torch.equal(sample.masks[t], torch.from_numpy(expected))
    union_box = torch.tensor([(8 + 46) / 2 / W, (4 + 30) / 2 / H, 38 / W, 26 / H])
    for t, f in enumerate(sample.frame_ids):
        if int(f) in (1, 3):
            assert torch.allclose(sample.boxes[t], union_box)
    single = ds[1]  # anno 11 only: visible in frames 1 and 3 only
    assert single.valid.tolist() == [int(f) in (1, 3) for f in single.frame_ids]


def test_davis_annotators(tmp_path: Path) -> None:
    make_ytvos(tmp_path, "valid", num_frames=2)
    path = tmp_path / "meta_expressions" / "valid" / "meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v1"]["expressions"] = {str(k): {"exp": f"e{k}", "obj_id": str(1 + k // 4)} for k in range(8)}
    write_json(path, data)
    (tmp_path / "valid" / "meta.json").unlink()  # optional for DAVIS
    records = read_davis(tmp_path, "val")
    assert records.split == "valid"
    assert [e.extra["annotator"] for e in records.expressions] == [0, 1, 2, 3] * 2
    assert [e.object_ids for e in records.expressions] == [(1,)] * 4 + [(2,)] * 4
    ds = ReferringVideoDataset(records, train=False, eval_short_side=32)
    sample = ds[4]
    assert sample.frames.shape == (2, 3, H, W) and sample.valid.tolist() == [True, False]


def test_a2d_from_video_and_coco_rle(tmp_path: Path) -> None:
    ds = build_dataset("a2d", make_a2d(tmp_path), "val", eval_short_side=32)
    assert len(ds) == 3 and ds.num_frames == 1
    samples = [ds[i] for i in range(3)]
    assert [(s.expression_id, s.frame_ids) for s in samples] == [("1", ["00002"]), ("1", ["00004"]), ("2", ["00004"])]
    assert samples[0].frames.shape == (1, 3, H, W)
    gray = unnormalise(samples[1].frames[0]).mean().item()
    assert abs(gray - (30 * 3 + 20)) < 6  # 1-based frame 4 = decode index 3 (lossy codec)
    assert torch.equal(samples[0].masks[0], torch.from_numpy(OBJ1))
    assert torch.equal(samples[2].masks[0], torch.from_numpy(OBJ2))
    # pre-extracted frames instead of the .mp4
    for f in (2, 4):
        save_png(tmp_path / "frames" / "vidA" / f"{f:05d}.png", frame_pixels(f))
    ds = build_dataset("a2d", tmp_path, "test", frames_dir=tmp_path / "frames", train=True, transform=IDENTITY)
    sample = ds[1]
    assert sample.frame_ids == ["00004"] and sample.valid.tolist() == [True]
    assert torch.allclose(unnormalise(sample.frames[0]), torch.from_numpy(frame_pixels(4)).permute(2, 0, 1).float(),
                          atol=1e-3)
    with pytest.raises(ValueError, match="num_frames must be 1"):
        build_dataset("a2d", tmp_path, "test", num_frames=6)


def test_a2d_h5_masks_need_h5py(tmp_path: Path) -> None:
    make_a2d(tmp_path)
    (tmp_path / "a2d_sentences_test_annotations_in_coco_format.json").unlink()
    with pytest.raises(DatasetError, match="a2d_annotation_with_instances"):
        read_a2d(tmp_path, "test")
    (tmp_path / "text_annotations" / "a2d_annotation_with_instances" / "vidA").mkdir(parents=True)
    try:
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="h5py"):
            read_a2d(tmp_path, "test")
    else:
        assert len(read_a2d(tmp_path, "test").expressions) == 2


def test_jhmdb_mat_masks(tmp_path: Path) -> None:
    make_jhmdb(tmp_path)
    ds = build_dataset("jhmdb", tmp_path, "test", eval_short_side=32)
    assert len(ds) == 4  # 5 frames, but only 4 have masks
    for i in range(4):
        sample = ds[i]
        assert sample.frame_ids == [f"{i + 1:05d}"] and sample.frames.shape == (1, 3, H, W)
        assert torch.equal(sample.masks[0], torch.from_numpy(np.roll(OBJ1, i, axis=1)))
    assert ds.records.expressions[0].category == "clap"
    (tmp_path / "jhmdb_sentences_samples_metadata.json").unlink(missing_ok=True)
    make_jhmdb(tmp_path / "with_meta", metadata=True)
    ds = build_dataset("jhmdb", tmp_path / "with_meta", "test", eval_short_side=32)
    assert [ds[i].frame_ids for i in range(len(ds))] == [["00002"], ["00003"]]


def test_refcoco_polygon_and_rle(tmp_path: Path) -> None:
    make_refcoco(tmp_path, ("refcoco", "refcoco+"))
    ds = build_dataset("refcoco", tmp_path, "train", variants="refcoco", train=False, eval_short_side=32)
    assert len(ds) == 2 and len(ds.records.videos) == 1
    polygon_sample, rle_sample = ds[0], ds[1]
    assert polygon_sample.frames.shape == (1, 3, H, W) and polygon_sample.dataset == "refcoco"
    # PIL fills the polygon including its boundary: rows 4..12, cols 8..20
    assert torch.equal(polygon_sample.masks[0], torch.from_numpy(box_mask(4, 13, 8, 21)))
    assert torch.equal(rle_sample.masks[0], torch.from_numpy(OBJ2))
    both = build_dataset("refcoco", tmp_path, "train", variants=("refcoco", "refcoco+"), seed=0)
    assert len(both) == 4 and {both[i].dataset for i in range(4)} == {"refcoco", "refcoco+"}
    with pytest.raises(ValueError, match="unknown RefCOCO variant"):
        read_refcoco(tmp_path, "train", variants="refclef")


# ------------------------------------------------------------------------------------ determinism


def test_determinism_under_seed(tmp_path: Path) -> None:
    root = make_ytvos(tmp_path, num_frames=12)

    def draw(seed: int | None, epoch: int = 0) -> list[tuple]:
        ds = build_dataset("ytvos", root, "train", seed=seed)
        ds.set_epoch(epoch)
        return [(s.frame_ids, s.caption, s.frames.shape, float(s.frames.sum())) for s in (ds[i] for i in (0, 3))]

    first = draw(7)
    assert draw(7) == first  # same seed, epoch, index -> identical item (also out of order / in a new process)
    assert draw(7, epoch=1) != first and draw(8) != first
    torch.manual_seed(5)
    a = draw(None)
    torch.manual_seed(5)
    assert draw(None) == a  # seed=None follows torch's global RNG (DataLoader worker seeding)


# ------------------------------------------------------------------------------------- transforms


def test_flip_swaps_left_right() -> None:
    assert swap_left_right("the man on the left") == "the man on the right"
    assert swap_left_right("Left dog, RIGHT cat, leftmost one") == "Right dog, LEFT cat, rightmost one"
    assert swap_left_right("a bright lefty on the left-hand side") == "a bright lefty on the right-hand side"
    frames = torch.arange(2 * 3 * H * W, dtype=torch.float32).view(2, 3, H, W)
    masks = torch.from_numpy(np.stack([OBJ1, OBJ2]))
    out = RandomHorizontalFlip(p=1.0)(Clip(frames, masks, "left of the right one"), random.Random(0))
    assert out.caption == "right of the left one"
    assert torch.equal(out.frames, frames.flip(-1)) and torch.equal(out.masks, masks.flip(-1))


def test_flip_in_dataset(tmp_path: Path) -> None:
    transform = Compose([RandomHorizontalFlip(p=1.0), Normalize()])
    ds = build_dataset("ytvos", make_ytvos(tmp_path), "train", transform=transform)
    sample = ds[0]
    assert sample.caption == "the man on the right"
    assert torch.equal(sample.masks[0], torch.from_numpy(OBJ1[:, ::-1].copy()))
    assert torch.allclose(sample.boxes[0], torch.tensor([(W - 14) / W, 8 / H, 12 / W, 8 / H]))


def test_geometric_transforms_are_video_consistent() -> None:
    assert resized_shape(32, 48, 360) == (360, 540)
    assert resized_shape(32, 48, 512, max_size=640) == (427, 640)
    assert resized_shape(480, 360, 360) == (480, 360)
    frames = torch.rand(4, 3, 60, 80) * 255
    masks = torch.zeros(4, 60, 80, dtype=torch.bool)
    masks[:, 10:30, 20:50] = True
    out = RandomSizeCrop(20, 50)(Clip(frames, masks, ""), random.Random(1))
    assert out.frames.shape[:2] == (4, 3) and 20 <= out.frames.shape[-1] <= 50
    assert all(torch.equal(out.masks[0], out.masks[t]) for t in range(4))  # one crop for every frame
    distorted = PhotometricDistort()(Clip(frames, masks, ""), random.Random(2)).frames
    assert distorted.shape == frames.shape and distorted.min() >= 0 and distorted.max() <= 255
    out = video_train_transform()(Clip(frames, masks, "x"), random.Random(3))
    assert max(out.frames.shape[-2:]) <= 640 and min(out.frames.shape[-2:]) >= 288
    assert out.masks.shape[-2:] == out.frames.shape[-2:]


def test_image_mode_conversions(tmp_path: Path) -> None:
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(load_image(tmp_path / "gray.png"), np.repeat(gray[..., None], 3, axis=2))
    rgba = np.dstack([frame_pixels(2), np.full((H, W), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(load_image(tmp_path / "rgba.png"), frame_pixels(2))
    deep = (gray.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert np.array_equal(load_image(tmp_path / "deep.png")[..., 0], gray)
    save_palette(tmp_path / "pal.png", (OBJ1 * 1).astype(np.uint8))
    assert load_image(tmp_path / "pal.png")[5, 10].tolist() == [255, 0, 0]
    assert load_image(tmp_path / "deep.jpg").shape == (H, W, 3)  # falls back to the .png of that stem


# ----------------------------------------------------------------------------------------- collate


def test_collate_pads_and_masks(tmp_path: Path) -> None:
    ds = build_dataset("ytvos", make_ytvos(tmp_path), "train", transform=IDENTITY)
    big = ds[0]
    small = ds[1]
    small.frames, small.masks = small.frames[..., :20, :30], small.masks[..., :20, :30]
    batch = collate_clips([big, small])
    assert isinstance(batch, ClipBatch) and len(batch) == 2
    assert batch.frames.shape == (2, 6, 3, H, W) and batch.masks.shape == (2, 6, H, W)
    assert batch.pixel_mask.shape == (2, H, W) and batch.boxes.shape == (2, 6, 4) and batch.valid.shape == (2, 6)
    assert not batch.pixel_mask[0].any() and batch.pixel_mask[1, 20:].all() and not batch.pixel_mask[1, :20, :30].any()
    assert batch.frames[1, :, :, 20:].eq(0).all() and not batch.masks[1, :, :, 30:].any()
    assert batch.captions == [big.caption, small.caption] and batch.samples[1].size == (20, 30)
    padded = collate_clips([big], size_divisibility=32)
    assert padded.frames.shape[-2:] == (32, 64) and padded.pixel_mask[0, :, 48:].all()
    assert batch.to("cpu").frames.device.type == "cpu"
    small.frames = small.frames[:3]
    with pytest.raises(ValueError, match="same number of frames"):
        collate_clips([big, small])


# -------------------------------------------------------------------------------------- bad input


def test_bad_json_files(tmp_path: Path) -> None:
    make_ytvos(tmp_path)
    path = tmp_path / "meta_expressions" / "train" / "meta_expressions.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path, "train")
    assert_one_line_error(e, "meta_expressions.json", "malformed")
    path.write_text("{}")
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path, "train")
    assert_one_line_error(e, "meta_expressions.json", "empty")
    write_json(path, {"video": {}})
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path, "train")
    assert_one_line_error(e, "meta_expressions.json", "'videos' missing")
    path.unlink()
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path, "train")
    assert_one_line_error(e, "meta_expressions.json", "missing")
    make_ytvos(tmp_path)
    (tmp_path / "train" / "meta.json").unlink()
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path, "train")
    assert_one_line_error(e, "meta.json", "missing")


def test_unknown_objects(tmp_path: Path) -> None:
    make_ytvos(tmp_path / "y")
    path = tmp_path / "y" / "meta_expressions" / "train" / "meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["v1"]["expressions"]["1"]["obj_id"] = "7"
    write_json(path, data)
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path / "y", "train")
    assert_one_line_error(e, "unknown object '7'", "videos/v1/expressions/1")
    make_mevis(tmp_path / "m")
    path = tmp_path / "m" / "train" / "meta_expressions.json"
    data = json.loads(path.read_text())
    data["videos"]["m1"]["expressions"]["1"]["anno_id"] = [99]
    write_json(path, data)
    with pytest.raises(DatasetError) as e:
        read_mevis(tmp_path / "m", "train")
    assert_one_line_error(e, "unknown object anno_id 99", "mask_dict.json")
    mask_path = tmp_path / "m" / "train" / "mask_dict.json"
    mask_dict = json.loads(mask_path.read_text())
    mask_dict["99"] = [None]  # wrong number of frames
    write_json(mask_path, mask_dict)
    with pytest.raises(DatasetError) as e:
        read_mevis(tmp_path / "m", "train")
    assert_one_line_error(e, "mask_dict.json", "one RLE or null per frame")


def test_missing_files(tmp_path: Path) -> None:
    make_ytvos(tmp_path / "y")
    ds = build_dataset("ytvos", tmp_path / "y", "train", transform=IDENTITY, seed=0)
    frame = tmp_path / "y" / "train" / "JPEGImages" / "v1" / f"{ds[0].frame_ids[0]}.png"
    frame.unlink()
    with pytest.raises(DatasetError) as e:
        ds[0]
    assert_one_line_error(e, "missing frame", frame.stem)
    make_ytvos(tmp_path / "y")
    annotation = tmp_path / "y" / "train" / "Annotations" / "v1" / f"{ds[0].frame_ids[0]}.png"
    annotation.unlink()
    with pytest.raises(DatasetError) as e:
        ds[0]
    assert_one_line_error(e, "missing annotation PNG", annotation.name)
    for folder in (tmp_path / "y" / "train" / "JPEGImages" / "v1").iterdir():
        folder.unlink()
    (tmp_path / "y" / "train" / "JPEGImages" / "v1").rmdir()
    with pytest.raises(DatasetError) as e:
        read_ytvos(tmp_path / "y", "train")
    assert_one_line_error(e, "missing frames folder", "v1")
    make_a2d(tmp_path / "a")
    (tmp_path / "a" / "Release" / "clips320H" / "vidA.mp4").unlink()
    with pytest.raises(DatasetError) as e:
        read_a2d(tmp_path / "a", "test")
    assert_one_line_error(e, "vidA.mp4", "missing video file")
    make_jhmdb(tmp_path / "j")
    (tmp_path / "j" / "puppet_mask" / "clap" / "jv1" / "puppet_mask.mat").unlink()
    with pytest.raises(DatasetError) as e:
        read_jhmdb(tmp_path / "j")
    assert_one_line_error(e, "puppet_mask.mat", "missing mask file")
    make_refcoco(tmp_path / "r")
    path = tmp_path / "r" / "refcoco" / "instances_refcoco_train.json"
    data = json.loads(path.read_text())
    data["annotations"] = data["annotations"][:1]
    write_json(path, data)
    with pytest.raises(DatasetError) as e:
        read_refcoco(tmp_path / "r")
    assert_one_line_error(e, "instances_refcoco_train.json", "images[1]", "no annotation")


def test_invisible_target_raises_after_retries(tmp_path: Path) -> None:
    make_ytvos(tmp_path, num_frames=2)
    for f in (tmp_path / "train" / "Annotations" / "v1").iterdir():  # erase every object
        save_palette(f, np.zeros((H, W), np.uint8))
    ds = build_dataset("ytvos", tmp_path, "train", transform=IDENTITY, max_retries=3)
    with pytest.raises(DatasetError) as e:
        ds[0]
    assert_one_line_error(e, "invisible", "4 clips", "v1/")
    eval_ds = build_dataset("ytvos", tmp_path, "train", train=False, eval_short_side=32)
    assert not eval_ds[0].valid.any()  # evaluation never redraws


def test_build_dataset_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("kinetics", tmp_path, "train")
    with pytest.raises(TypeError):
        build_dataset("ytvos", make_ytvos(tmp_path), "train", not_an_option=1)


def test_light_augmentation_keeps_the_colours_that_captions_name():
    """The official jitter's channel swap turns a yellow shape cyan or magenta; the synthetic recipe's "light"
    augmentation leaves it out, so "the yellow square" stays yellow in every frame."""
    from referdino.data.transforms import Clip, PhotometricDistort

    yellow = torch.tensor([235.0, 205.0, 35.0]).view(3, 1, 1, 1).expand(3, 4, 8, 8).permute(1, 0, 2, 3).clone()
    clip = Clip(yellow, torch.zeros(4, 8, 8, dtype=torch.bool), "the yellow square")

    def darkest_channels(transform):
        out = set()
        for seed in range(100):
            frames = transform(clip, random.Random(seed)).frames
            out.update(frames.mean(dim=(2, 3)).argmin(dim=1).tolist())
        return out

    assert darkest_channels(PhotometricDistort(channel_swap=False)) == {2}  # blue stays the weakest: yellow
    assert darkest_channels(PhotometricDistort()) != {2}  # the official jitter recolours it
