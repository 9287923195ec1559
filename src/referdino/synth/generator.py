"""The synthetic RVOS world: seeded videos of moving shapes with static and motion-only referring expressions.

`generate_clip` builds one video in memory; `generate_world` writes many in the Ref-YouTube-VOS layout::

    <out>/world.json                                      generator parameters, seed, per-video seeds, vocabulary
    <out>/.referdino.json                                 the entries referdino wrote (see referdino.output_dirs)
    <out>/meta_expressions/<split>/meta_expressions.json  {"videos": {vid: {"expressions": {"0": {"exp", "obj_id"}},
                                                                           "frames": [...]}}}
    <out>/<split>/JPEGImages/<vid>/<frame>.jpg            frames named 00000, 00005, ... (every 5th, as in YTVOS)
    <out>/<split>/Annotations/<vid>/<frame>.png           palette PNG, pixel = object id, 0 = background
    <out>/<split>/meta.json                               {"videos": {vid: {"objects": {"1": {"category", "frames",
                                                                           "colour", "size", "motion", "direction"}}}}}
    <out>/<split>/expression_kinds.json                   {vid: {exp_id: "static" | "motion"}}

Annotations are written for every split (valid included) so that the world can be evaluated locally.
Same seed and parameters -> byte-identical files. Video ``i`` of a split depends only on (seed, split, i), so
asking for more videos keeps the first ones unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..output_dirs import OutputError, check_output_dir, record_outputs, remove_outputs
from .io import JPEG_QUALITY, write_json, write_video_annotations, write_video_frames
from .render import background, half_extent, half_size, shape_mask
from .vocab import (
    COLOURS,
    DIRECTIONS,
    KINDS,
    MOTION_PHRASES,
    MOTIONS,
    SIZES,
    STATIC_FIELDS,
    TEMPLATES,
    VOCABULARY,
    Description,
    ExpressionKind,
    unique_descriptions,
)

FORMAT = "referdino-synth"
FORMAT_VERSION = 1
#: marked an unfinished world before `referdino.output_dirs`; still recognised, and removed on rewrite
_MARKER = ".referdino-synth-incomplete"
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_STATIC_VALUES = {"kind": KINDS, "colour": tuple(COLOURS), "size": SIZES}


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generated videos (the output layout does not depend on them)."""

    frames: tuple[int, int] = (8, 12)  #: min and max frames per video (inclusive)
    height: int = 96  #: frame height in pixels
    width: int = 160  #: frame width in pixels
    objects: tuple[int, int] = (2, 4)  #: min and max shapes per video; with 3+ two of them are twins
    frame_step: int = 5  #: frame names are t * frame_step, 5 digits (00000, 00005, ... as in Ref-YouTube-VOS)
    expressions_per_object: int = 2  #: at most this many distinct expressions per object
    min_visible: float = 0.7  #: every object keeps at least this fraction of its area visible in every frame
    textured: bool = True  #: smooth low-contrast texture on the grey background (else plain)
    noise: float = 2.0  #: std of per-pixel Gaussian noise (grey levels)
    #: probability that a shape beside the twins copies another shape and changes one attribute (a near miss:
    #: the expression must then name that attribute); 1.0 with ``near_miss_field="colour"`` makes a training
    #: world where every such shape differs from another in colour only (a curriculum for the colour words)
    near_miss: float = 0.5
    near_miss_field: str = "any"  #: the attribute a near miss changes: "any" (drawn), "kind", "colour" or "size"

    @classmethod
    def make(cls, config: SynthConfig | None = None, **params: Any) -> SynthConfig:
        """`config` (or the defaults) with `params` replaced; ints are accepted for the (min, max) ranges."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise TypeError(f"unknown synthetic-world parameter(s): {', '.join(unknown)}")
        for key in ("frames", "objects"):
            if key in params and isinstance(params[key], (int, np.integer)):
                params[key] = (int(params[key]), int(params[key]))
            elif key in params:
                params[key] = tuple(int(v) for v in params[key])
        cfg = dataclasses.replace(config or cls(), **params)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"synthetic world: {msg}")

        if len(self.frames) != 2 or not 4 <= self.frames[0] <= self.frames[1]:
            raise bad(f"frames must be a count >= 4 or a range min-max with 4 <= min <= max, got {self.frames}")
        if len(self.objects) != 2 or not 1 <= self.objects[0] <= self.objects[1] <= 6:
            raise bad(f"objects must be in 1..6 with min <= max, got {self.objects}")
        if not (32 <= self.height <= 4096 and 32 <= self.width <= 4096):
            raise bad(f"frame size must be between 32 and 4096 pixels, got {self.height}x{self.width}")
        if self.frame_step < 1 or (self.frames[1] - 1) * self.frame_step > 99999:
            raise bad(f"frame_step must be >= 1 and keep frame names within 5 digits, got {self.frame_step}")
        if self.expressions_per_object < 1:
            raise bad(f"expressions_per_object must be >= 1, got {self.expressions_per_object}")
        if not 0.0 <= self.min_visible <= 1.0:
            raise bad(f"min_visible must be in [0, 1], got {self.min_visible}")
        if self.noise < 0:
            raise bad(f"noise must be >= 0, got {self.noise}")
        if not 0.0 <= self.near_miss <= 1.0:
            raise bad(f"near_miss must be a probability in [0, 1], got {self.near_miss}")
        if self.near_miss_field not in ("any", *STATIC_FIELDS):
            raise bad(f"near_miss_field must be 'any' or one of {', '.join(STATIC_FIELDS)}, "
                      f"got {self.near_miss_field!r}")

    @classmethod
    def parse(cls, text: str) -> SynthConfig:
        """``"objects=3-4,near_miss=1,near_miss_field=colour"`` -> the defaults with those fields replaced,
        validated (one-line ValueError naming the bad entry)."""
        fields = [f.name for f in dataclasses.fields(cls)]
        defaults = cls()
        params: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = (x.strip() for x in item.partition("="))
            if not sep or key not in fields:
                raise ValueError(f"synthetic world: expected KEY=VALUE with KEY one of {', '.join(fields)}, "
                                 f"got {item!r}")
            default = getattr(defaults, key)
            try:
                if isinstance(default, tuple):
                    params[key] = _int_range(value)
                elif isinstance(default, bool):
                    params[key] = {"true": True, "false": False, "1": True, "0": False}[value.lower()]
                else:
                    params[key] = type(default)(value)
            except (KeyError, ValueError, argparse.ArgumentTypeError):
                raise ValueError(f"synthetic world: bad value for {key}: {value!r}") from None
        return cls.make(defaults, **params)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class SynthObject:
    """One shape. `direction` is the direction of travel (None for 'still'); for 'stops' it is not in the text."""

    obj_id: int  #: 1-based; also the z-order (higher ids are drawn on top) and the annotation pixel value
    kind: str
    colour: str
    size: str
    motion: str  #: one of vocab.MOTIONS
    direction: str | None
    centers: np.ndarray  #: (T, 2) float, (x, y) centre of the bounding box in pixels

    @property
    def static(self) -> dict[str, str]:
        return {"size": self.size, "colour": self.colour, "kind": self.kind}


@dataclass(frozen=True)
class SynthExpression:
    exp_id: str  #: "0", "1", ... as in meta_expressions.json
    text: str
    obj_id: int
    kind: ExpressionKind  #: "static": unique by static attributes; "motion": only the motion tells the target apart
    description: Description


@dataclass
class Clip:
    """An in-memory video: frames, visible masks per object, and referring expressions."""

    name: str
    seed: int
    frame_names: list[str]
    frames: np.ndarray  #: (T, H, W, 3) uint8 RGB
    masks: np.ndarray  #: (N, T, H, W) bool visible region of objects[i] (disjoint across objects)
    objects: list[SynthObject]
    expressions: list[SynthExpression]

    def object_mask(self, obj_id: int) -> np.ndarray:
        """(T, H, W) bool visible mask of an object."""
        for obj, mask in zip(self.objects, self.masks):
            if obj.obj_id == int(obj_id):
                return mask
        raise KeyError(f"no object {obj_id} in clip {self.name}")

    def expression_mask(self, expression: SynthExpression | str) -> np.ndarray:
        """(T, H, W) bool target of an expression (object or exp_id)."""
        if isinstance(expression, str):
            expression = next(e for e in self.expressions if e.exp_id == expression)
        return self.object_mask(expression.obj_id)

    def label_maps(self) -> np.ndarray:
        """(T, H, W) uint8 annotation: object id per pixel, 0 = background."""
        labels = np.zeros(self.masks.shape[1:], dtype=np.uint8)
        for obj, mask in zip(self.objects, self.masks):
            labels[mask] = obj.obj_id
        return labels

    def meta_entry(self) -> dict[str, Any]:
        """The clip's entry of ``<split>/meta.json`` (frames: where the object has visible pixels)."""
        objects = {}
        for obj, mask in zip(self.objects, self.masks):
            visible = mask.any(axis=(1, 2))
            objects[str(obj.obj_id)] = {
                "category": obj.kind,
                "frames": [n for n, v in zip(self.frame_names, visible) if v],
                "colour": obj.colour,
                "size": obj.size,
                "motion": obj.motion,
                "direction": obj.direction,
            }
        return {"objects": objects}

    def expressions_entry(self) -> dict[str, Any]:
        """The clip's entry of ``meta_expressions.json`` (string obj_ids, as in the real data)."""
        return {
            "expressions": {e.exp_id: {"exp": e.text, "obj_id": str(e.obj_id)} for e in self.expressions},
            "frames": list(self.frame_names),
        }

    def expression_kinds(self) -> dict[str, ExpressionKind]:
        return {e.exp_id: e.kind for e in self.expressions}


# --------------------------------------------------------------------------------------------- sampling


def _random_static(rng: np.random.Generator) -> dict[str, str]:
    return {f: _STATIC_VALUES[f][rng.integers(len(_STATIC_VALUES[f]))] for f in STATIC_FIELDS}


def _sample_statics(rng: np.random.Generator, n: int, near_miss: float = 0.5,
                    near_miss_field: str = "any") -> tuple[list[dict[str, str]], int]:
    """Static attributes of n objects: a twin pair (identical attributes) when n >= 3 (half the time when
    n == 2), the others unique; with probability `near_miss` each of the others differs from an existing
    object in one attribute only (`near_miss_field`, or one drawn at random for "any")."""
    twins = 2 if n >= 3 or (n == 2 and rng.random() < 0.5) else 0
    statics: list[dict[str, str]] = []
    if twins:
        s = _random_static(rng)
        statics += [s, dict(s)]
    while len(statics) < n:
        if statics and rng.random() < near_miss:
            cand = dict(statics[rng.integers(len(statics))])
            field = STATIC_FIELDS[rng.integers(len(STATIC_FIELDS))] if near_miss_field == "any" else near_miss_field
            others = [v for v in _STATIC_VALUES[field] if v != cand[field]]
            cand[field] = others[rng.integers(len(others))]
        else:
            cand = _random_static(rng)
        if cand not in statics:
            statics.append(cand)
    return statics, twins


def _stop_direction(rng: np.random.Generator, taken: Sequence[str]) -> str:
    free = [d for d in DIRECTIONS if d not in taken]
    return free[rng.integers(len(free))]


def _sample_motions(rng: np.random.Generator, n: int, twins: int) -> list[tuple[str, str | None]]:
    """(motion, direction) per object. Twins get distinct labels, and a twin that stops never travelled in the
    direction another twin moves, so each twin's motion phrase fits it alone."""
    out: list[tuple[str, str | None]] = []
    labels = [MOTIONS[i] for i in rng.choice(len(MOTIONS), size=twins, replace=False)] if twins else []
    moving = [m for m in labels if m in DIRECTIONS]
    for m in labels:
        out.append((m, m if m in DIRECTIONS else _stop_direction(rng, moving) if m == "stops" else None))
    for _ in range(n - twins):
        m = MOTIONS[rng.integers(len(MOTIONS))]
        out.append((m, m if m in DIRECTIONS else _stop_direction(rng, ()) if m == "stops" else None))
    return out


def _trajectory(
    rng: np.random.Generator, motion: str, direction: str | None, num_frames: int, extent: float, h: int, w: int
) -> np.ndarray:
    """(T, 2) centres that keep the whole shape inside the frame. Moving shapes travel 45-90% of the free
    range at constant speed; 'stops' covers it in the first 40-60% of the clip and then stays."""
    lo = np.array([extent + 1.0, extent + 1.0])
    hi = np.array([w - extent - 1.0, h - extent - 1.0])
    start = rng.uniform(lo, hi)
    if motion == "still":
        return np.repeat(start[None], num_frames, axis=0)
    d = np.array(DIRECTIONS[direction], dtype=np.float64)
    axis = 0 if d[0] != 0 else 1
    dist = rng.uniform(0.45, 0.9) * (hi[axis] - lo[axis])
    if d[axis] > 0:
        start[axis] = rng.uniform(lo[axis], hi[axis] - dist)
    else:
        start[axis] = rng.uniform(lo[axis] + dist, hi[axis])
    t = np.arange(num_frames, dtype=np.float64)
    if motion == "stops":
        first = max(1, math.ceil(0.4 * (num_frames - 1)))
        last = max(first, math.floor(0.6 * (num_frames - 1)))
        frac = np.minimum(t / rng.integers(first, last + 1), 1.0)
    else:
        frac = t / (num_frames - 1)
    return start[None] + frac[:, None] * dist * d[None]


def _visible(fulls: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Visible masks in z-order (later objects on top)."""
    out = []
    cover = np.zeros_like(fulls[0])
    for full in reversed(fulls):
        out.append(full & ~cover)
        cover = cover | full
    return out[::-1]


def _visible_enough(fulls: Sequence[np.ndarray], min_visible: float) -> bool:
    for full, vis in zip(fulls, _visible(fulls)):
        area = full.sum(axis=(1, 2))
        if np.any(vis.sum(axis=(1, 2)) < min_visible * area):
            return False
    return True


def _place(
    rng: np.random.Generator, objects: Sequence[SynthObject], num_frames: int, cfg: SynthConfig
) -> list[np.ndarray]:
    """Sample trajectories in z-order until every object stays visible enough; fills obj.centers and returns
    the full (unoccluded) masks."""
    h, w = cfg.height, cfg.width
    for _ in range(50):
        fulls: list[np.ndarray] = []
        for obj in objects:
            s = half_size(obj.size, h, w)
            for _ in range(60):
                centers = _trajectory(rng, obj.motion, obj.direction, num_frames, half_extent(obj.kind, s), h, w)
                full = np.stack([shape_mask(obj.kind, x, y, s, h, w) for x, y in centers])
                if _visible_enough([*fulls, full], cfg.min_visible):
                    break
            else:
                break
            obj.centers = centers
            fulls.append(full)
        if len(fulls) == len(objects):
            return fulls
    raise RuntimeError(
        f"could not place {len(objects)} shapes in {h}x{w} frames with min_visible={cfg.min_visible}; "
        "use fewer objects, larger frames or a lower min_visible"
    )


def _as_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def generate_clip(seed: int, *, name: str = "clip", config: SynthConfig | None = None, **params: Any) -> Clip:
    """One synthetic video in memory, fully determined by `seed` and the parameters.

    `params` are `SynthConfig` fields (frames, height, width, objects, frame_step, expressions_per_object,
    min_visible, textured, noise, near_miss, near_miss_field); `frames` / `objects` take an int or a (min, max)
    pair.
    """
    cfg = SynthConfig.make(config, **params)
    seed = _as_seed(seed)
    rng = np.random.default_rng(seed)
    num_frames = int(rng.integers(cfg.frames[0], cfg.frames[1] + 1))
    n = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    statics, twins = _sample_statics(rng, n, cfg.near_miss, cfg.near_miss_field)
    motions = _sample_motions(rng, n, twins)
    order = rng.permutation(n)  # z-order and ids; keeps twins from always being objects 1 and 2
    objects = [
        SynthObject(k + 1, **statics[i], motion=motions[i][0], direction=motions[i][1], centers=np.zeros((0, 2)))
        for k, i in enumerate(order)
    ]
    fulls = _place(rng, objects, num_frames, cfg)

    img = np.repeat(background(rng, cfg.height, cfg.width, cfg.textured)[None], num_frames, axis=0)
    for obj, full in zip(objects, fulls):
        img[full] = COLOURS[obj.colour]
    if cfg.noise > 0:
        img += rng.normal(0.0, cfg.noise, size=img.shape)
    frames = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    masks = np.stack(_visible(fulls))

    statics = [o.static for o in objects]
    motions = [(o.motion, o.direction) for o in objects]
    expressions: list[SynthExpression] = []
    for i, obj in enumerate(objects):
        has_twin = any(statics[j] == statics[i] for j in range(n) if j != i)
        candidates = unique_descriptions(i, statics, motions, use_motion=has_twin)
        k = min(cfg.expressions_per_object, len(candidates))
        for c in rng.choice(len(candidates), size=k, replace=False) if k else []:
            desc = candidates[int(c)]
            expressions.append(SynthExpression(str(len(expressions)), desc.text(), obj.obj_id, desc.kind, desc))
    frame_names = [f"{t * cfg.frame_step:05d}" for t in range(num_frames)]
    return Clip(name, seed, frame_names, frames, masks, objects, expressions)


# --------------------------------------------------------------------------------------------- writing


def write_clip(split_dir: str | os.PathLike, clip: Clip, quality: int = JPEG_QUALITY) -> None:
    """Write a clip's ``JPEGImages/<name>/*.jpg`` and ``Annotations/<name>/*.png`` under a split folder."""
    split_dir = Path(split_dir)
    write_video_frames(split_dir / "JPEGImages" / clip.name, clip.frames, clip.frame_names, quality)
    write_video_annotations(split_dir / "Annotations" / clip.name, clip.label_maps(), clip.frame_names)


@dataclass
class WorldSummary:
    out_dir: Path
    videos: dict[str, int]  #: split -> number of videos
    expressions: dict[str, dict[str, int]]  #: split -> {"static": n, "motion": m}

    def count(self, kind: str | None = None) -> int:
        return sum(sum(v.values()) if kind is None else v.get(kind, 0) for v in self.expressions.values())

    def __str__(self) -> str:
        per_split = ", ".join(f"{s} {n}" for s, n in self.videos.items())
        return (
            f"synthetic world: {sum(self.videos.values())} videos ({per_split}), {self.count()} expressions "
            f"({self.count('static')} static, {self.count('motion')} motion) in {self.out_dir}"
        )


def video_seed(seed: int, split: str, index: int) -> int:
    """Seed of video `index` of `split`: independent of how many videos are asked for."""
    ss = np.random.SeedSequence([_as_seed(seed), zlib.crc32(split.encode("utf-8")), int(index)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _prepare_out_dir(out: Path, splits: Sequence[str], overwrite: bool = False) -> None:
    """Create `out` or clear our previous synthetic world in it (`referdino.output_dirs`: a file, or a folder
    with files we did not write unless `overwrite`, is refused; other files are never touched)."""
    names = [*splits, "meta_expressions", "world.json"]
    before = check_output_dir(out, "synth", names, overwrite=overwrite)
    record_outputs(out, "synth", names)  # from here an interrupted run is still recognised as ours
    # world.json goes first: an interrupted rewrite must not look complete
    ours = sorted((n for n, k in before.items() if k == "synth"), key=lambda n: n != "world.json")
    try:
        remove_outputs(out, ours)
    except OSError as exc:
        raise OutputError(f"cannot clear the previous world in {out} ({exc.strerror or exc})") from None
    record_outputs(out, "synth", names, exclusive=True)


def generate_world(
    out_dir: str | os.PathLike,
    *,
    videos: int | Mapping[str, int] = 8,
    seed: int = 0,
    splits: Sequence[str] = ("train", "valid"),
    jpeg_quality: int = JPEG_QUALITY,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    **params: Any,
) -> WorldSummary:
    """Write a synthetic world in the Ref-YouTube-VOS layout (see the module docstring) and return a summary.

    `videos` is the number of videos per split, or a {split: count} mapping. `params` are `SynthConfig` fields.
    A previous synthetic world in `out_dir` is replaced; a folder holding other files is refused (ValueError)
    unless `overwrite`, and even then those files are kept.
    """
    seed = _as_seed(seed)
    cfg = SynthConfig.make(config, **params)
    if isinstance(splits, str):
        splits = [splits]
    splits = list(dict.fromkeys(splits))
    if not splits or not all(isinstance(s, str) and _SPLIT_NAME.fullmatch(s) for s in splits):
        raise ValueError(f"splits must be non-empty names of letters, digits, '_' or '-', got {splits}")
    counts = {s: videos.get(s, 0) for s in splits} if isinstance(videos, Mapping) else {s: videos for s in splits}
    for s, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"videos must be an integer >= 1 (split {s!r}), got {n!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    out = Path(out_dir)
    _prepare_out_dir(out, splits, overwrite)

    world_splits: dict[str, Any] = {}
    expression_counts: dict[str, dict[str, int]] = {}
    for split in splits:
        split_dir = out / split
        meta: dict[str, Any] = {}
        meta_exp: dict[str, Any] = {}
        kinds: dict[str, Any] = {}
        listing: dict[str, Any] = {}
        tally = {"static": 0, "motion": 0}
        for i in range(int(counts[split])):
            vid = f"{split}_{i:05d}"
            clip = generate_clip(video_seed(seed, split, i), name=vid, config=cfg)
            write_clip(split_dir, clip, jpeg_quality)
            meta[vid] = clip.meta_entry()
            meta_exp[vid] = clip.expressions_entry()
            kinds[vid] = clip.expression_kinds()
            for e in clip.expressions:
                tally[e.kind] += 1
            listing[vid] = {
                "seed": clip.seed,
                "frames": len(clip.frame_names),
                "objects": len(clip.objects),
                "expressions": len(clip.expressions),
            }
        write_json(split_dir / "meta.json", {"videos": meta})
        write_json(split_dir / "expression_kinds.json", kinds)
        exp_dir = out / "meta_expressions" / split
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_json(exp_dir / "meta_expressions.json", {"videos": meta_exp})
        world_splits[split] = {"expressions": tally, "videos": listing}
        expression_counts[split] = tally

    write_json(
        out / "world.json",
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "seed": seed,
            "jpeg_quality": int(jpeg_quality),
            "params": cfg.to_dict(),
            "vocabulary": list(VOCABULARY),
            "templates": TEMPLATES,
            "motion_phrases": MOTION_PHRASES,
            "colours": {k: list(v) for k, v in COLOURS.items()},
            "splits": world_splits,
        },
    )
    (out / _MARKER).unlink(missing_ok=True)
    return WorldSummary(out, {s: int(n) for s, n in counts.items()}, expression_counts)


# --------------------------------------------------------------------------------------------- command line


def _int_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}")
    lo = int(m.group(1))
    return lo, int(m.group(2)) if m.group(2) else lo


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``referdino synth`` (for hooking into another parser's subcommand)."""
    d = SynthConfig()
    parser.add_argument("--out", required=True, help="output folder (new, empty, or a previous synthetic world)")
    parser.add_argument("--videos", type=int, default=8, help="videos per split (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--splits", default="train,valid", help="comma-separated splits (default train,valid)")
    parser.add_argument("--frames", type=_int_range, default=d.frames, help="frames per video, N or MIN-MAX (8-12)")
    parser.add_argument("--objects", type=_int_range, default=d.objects, help="shapes per video, N or MIN-MAX (2-4)")
    parser.add_argument("--height", type=int, default=d.height, help=f"frame height (default {d.height})")
    parser.add_argument("--width", type=int, default=d.width, help=f"frame width (default {d.width})")
    parser.add_argument("--near-miss", type=float, default=d.near_miss,
                        help=f"probability that a shape beside the twins differs from another in one attribute only "
                             f"(default {d.near_miss})")
    parser.add_argument("--near-miss-field", default=d.near_miss_field, choices=("any", *STATIC_FIELDS),
                        help="the attribute a near miss changes (default any: drawn per shape)")
    parser.add_argument("--quality", type=int, default=JPEG_QUALITY, help=f"JPEG quality (default {JPEG_QUALITY})")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a folder that holds other files (they are kept; only our world is replaced)")
    return parser


def run_synth(args: argparse.Namespace) -> WorldSummary:
    splits = [s.strip() for s in str(args.splits).split(",") if s.strip()]
    return generate_world(
        args.out, videos=args.videos, seed=args.seed, splits=splits, jpeg_quality=args.quality,
        frames=args.frames, objects=args.objects, height=args.height, width=args.width,
        near_miss=getattr(args, "near_miss", SynthConfig.near_miss),
        near_miss_field=getattr(args, "near_miss_field", SynthConfig.near_miss_field),
        overwrite=getattr(args, "overwrite", False),
    )


def synth_main(argv: Sequence[str] | None = None) -> int:
    """``referdino synth --out DIR --videos N --seed S``: write a world and print a one-line summary.

    Bad values (output is a file or not writable, videos < 1, ...) raise ValueError with a one-line message.
    """
    parser = add_synth_arguments(
        argparse.ArgumentParser(prog="referdino synth", description="write a synthetic RVOS world")
    )
    print(run_synth(parser.parse_args(argv)))
    return 0
