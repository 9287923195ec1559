"""Synthetic referring-video world: moving shapes with static and motion-only expressions.

    from referdino.synth import generate_clip, generate_world

    clip = generate_clip(0)                      # in memory: clip.frames (T,H,W,3), clip.masks (N,T,H,W)
    generate_world("data/synth", videos=8, seed=0)  # Ref-YouTube-VOS layout on disk
"""

from .generator import (
    Clip,
    SynthConfig,
    SynthExpression,
    SynthObject,
    WorldSummary,
    add_synth_arguments,
    generate_clip,
    generate_world,
    run_synth,
    synth_main,
    video_seed,
    write_clip,
)
from .io import (
    encode_jpeg, encode_palette_png, read_expression_kinds, write_json, write_video_annotations, write_video_frames,
)
from .vocab import (
    COLOURS,
    KINDS,
    MOTION_PHRASES,
    MOTIONS,
    SIZES,
    TEMPLATES,
    VOCABULARY,
    Description,
    matches,
    parse_expression,
)

__all__ = [
    "COLOURS",
    "KINDS",
    "MOTIONS",
    "MOTION_PHRASES",
    "SIZES",
    "TEMPLATES",
    "VOCABULARY",
    "Clip",
    "Description",
    "SynthConfig",
    "SynthExpression",
    "SynthObject",
    "WorldSummary",
    "add_synth_arguments",
    "encode_jpeg",
    "encode_palette_png",
    "generate_clip",
    "generate_world",
    "matches",
    "parse_expression",
    "read_expression_kinds",
    "run_synth",
    "synth_main",
    "video_seed",
    "write_clip",
    "write_json",
    "write_video_annotations",
    "write_video_frames",
]
