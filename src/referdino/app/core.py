"""What the web app does, without Gradio: model choice and cache, the sample clip, input checks, runs and
their outputs, clean-up. `page.py` puts a Gradio page on top of it; the tests call it directly too.

Every failure a user can cause is an `AppError` with a message meant for the page (never a traceback)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MAX_MB = 200
MB = 1024 * 1024  #: the "MB" of the limits (Gradio's too)
DEFAULT_MAX_FRAMES = 600
DEFAULT_SHORT_SIDE = 360  #: "auto": the video's own short side, at most this (never enlarged)
SHORT_SIDES = ("auto", "240", "360", "480", "720")
SAMPLE_SEED = 7  #: a clip of the synthetic world on which the embedded model does fairly (J&F ~0.5)
SAMPLE_OBJECTS = 3
SAMPLE_FRAMES = 12
SAMPLE_FPS = 5.0
MASKS_ZIP = "referdino-masks.zip"


class AppError(ValueError):
    """A problem with what the user gave (shown on the page as it is)."""


# ------------------------------------------------------------------------------------------------ models
def model_cached(name: str) -> bool:
    """Whether zoo model `name` can be loaded without the network (embedded, or its hub file or converted copy
    is in the local cache). Paths and unknown names: False."""
    from ..zoo import ZOO, _status, get_entry

    try:
        entry = get_entry(name)
    except Exception:  # noqa: BLE001 - not a zoo name
        return False
    if entry.embedded or entry.name not in ZOO:
        return True
    try:
        hub, converted = _status(entry)
    except Exception:  # noqa: BLE001 - an unreadable cache is a cache we do not have
        return False
    return hub.startswith("yes") or converted.startswith("yes")


def default_model(requested: str | None) -> str:
    """`--model` when given, else the default published model when it is cached, else the embedded `demo`."""
    from ..zoo import DEFAULT_MODEL, DEMO

    if requested:
        return requested
    return DEFAULT_MODEL if model_cached(DEFAULT_MODEL) else DEMO


def model_choices(current: str) -> list[tuple[str, str]]:
    """(label, value) per zoo model, plus `current` when it is a path; labels say what is cached."""
    from ..zoo import DEFAULT_MODEL, ZOO

    choices = []
    for name, entry in ZOO.items():
        if entry.embedded:
            tag = "embedded, offline; synthetic shapes only, for trying the app"
        elif model_cached(name):
            tag = f"{entry.backbone}, cached"
        else:
            tag = f"{entry.backbone}, not cached: downloaded from the Hugging Face Hub on first use"
        default = ", the default published model" if name == DEFAULT_MODEL else ""
        choices.append((f"{name} ({tag}{default})", name))
    if current not in ZOO:
        choices.insert(0, (f"{current} (given with --model)", current))
    return choices


def describe_model(name: str) -> str:
    """One line of Markdown saying which model runs and what it is."""
    from ..zoo import ZOO

    entry = ZOO.get(name)
    if entry is None:
        return f"Model: **{name}** (a checkpoint on disk)."
    if entry.embedded:
        return (f"Model: **{name}**, the small model embedded in the package: offline, trained on synthetic "
                "shapes only, so expect weak masks on real videos. Pick a published model for real use.")
    where = "cached on this machine" if model_cached(name) else (
        "not cached yet: the first run downloads it from the Hugging Face Hub, then converts it once")
    return f"Model: **{name}** ({entry.backbone}, trained on {entry.trained_on}; {where})."


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ModelCache:
    """Segmenters by model name, each loaded once and reused; the `max_models` most recently used are kept.

    `lock(name)` serialises the runs of one model (the page also queues all runs one at a time)."""

    def __init__(self, device: str = "auto", dtype: str = "auto", max_models: int = 2) -> None:
        self.device = resolve_device(device)
        self.dtype = dtype
        self.max_models = max(1, max_models)
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def loaded(self, name: str) -> bool:
        return name in self._models

    def get(self, name: str) -> Any:
        """The `Segmenter` of `name`, loaded on first use (call with `lock(name)` held)."""
        from ..inference.segmenter import Segmenter
        from ..weights import CheckpointError

        with self._guard:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
        try:
            segmenter = Segmenter.from_pretrained(name, device=self.device, dtype=self.dtype)
        except (CheckpointError, FileNotFoundError, ValueError, OSError) as exc:
            raise AppError(f"cannot load the model {name!r}: {exc}") from None
        with self._guard:
            self._models[name] = segmenter
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
        return segmenter


# ------------------------------------------------------------------------------------------------ sample
@dataclass
class Sample:
    path: Path  #: an H.264 MP4
    expressions: list[str]  #: all of the clip's expressions: one per object first, then the others
    num_frames: int


def write_video(frames: np.ndarray, path: str | Path, fps: float) -> None:
    """(T, H, W, 3) uint8 RGB -> an H.264 (else MPEG-4) yuv420p MP4 that browsers play."""
    import av
    from fractions import Fraction

    t, h, w = frames.shape[:3]
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12"}  # tiny frames: keep the colours the model knows
        for frame in frames:
            img = np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_sample(folder: str | Path) -> Sample:
    """A clip of the synthetic shapes world (as `referdino demo` makes), written as `folder/sample_shapes.mp4`."""
    from ..synth.generator import generate_clip

    clip = generate_clip(SAMPLE_SEED, name="sample", frames=SAMPLE_FRAMES, objects=SAMPLE_OBJECTS)
    path = Path(folder) / "sample_shapes.mp4"
    write_video(clip.frames, path, SAMPLE_FPS)
    seen: set[int] = set()
    first = [e for e in clip.expressions if not (e.obj_id in seen or seen.add(e.obj_id))]  # one per object
    rest = [e for e in clip.expressions if e not in first]
    return Sample(path, [e.text for e in first + rest], len(clip.frames))


def sample_expressions(sample: Sample, count: int = 2) -> list[str]:
    return sample.expressions[:count]


# ------------------------------------------------------------------------------------------------ checks
@dataclass
class Request:
    """A checked request."""

    video: Path
    expressions: list[str]
    num_frames: int
    height: int
    width: int
    short_side: int
    multi: bool
    model: str
    refine: bool = False  #: refine with SAM2 after ReferDINO (README "Refining with SAM2")
    sam2: str = "large"  #: its SAM2.1 size (`referdino.refine.SAM2_SIZES`)


@dataclass
class Limits:
    max_mb: float = DEFAULT_MAX_MB
    max_frames: int = DEFAULT_MAX_FRAMES


def parse_expressions(text: str | None) -> list[str]:
    """One expression per non-blank line; each must be a usable sentence."""
    from ..processing.text import ExpressionError, normalize_caption

    lines = [" ".join(line.split()) for line in (text or "").splitlines()]
    exprs = [line for line in lines if line]
    if not exprs:
        raise AppError("Type at least one expression (one per line), e.g. \"the red diamond\".")
    if len(exprs) > 12:
        raise AppError(f"{len(exprs)} expressions: at most 12 per run, please.")
    for e in exprs:
        try:
            normalize_caption(e)
        except (ExpressionError, ValueError) as exc:
            raise AppError(f"expression {e!r}: {exc}") from None
    return exprs


def probe_video(path: str | Path, limits: Limits) -> tuple[int, int, int]:
    """(frames, height, width) of an uploaded video, within the limits; an `AppError` otherwise.

    Frames are counted by demuxing (no decoding), so a container that lies about its length is caught;
    counting stops at the cap."""
    import av

    from ..inference.video_io import VIDEO_EXTENSIONS

    p = Path(path)
    if not p.is_file():
        raise AppError("The uploaded video is gone (the page was open too long?); upload it again.")
    size_mb = p.stat().st_size / MB
    if size_mb > limits.max_mb:
        raise AppError(f"The video is {size_mb:.0f} MB; this app takes videos up to {limits.max_mb:g} MB.")
    shown = p.name
    if p.suffix.lower() not in VIDEO_EXTENSIONS:
        raise AppError(f"{shown} is not a video this app reads: give an {', '.join(VIDEO_EXTENSIONS)} file.")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise AppError(f"{shown} has no video stream: it holds no frames (or only audio).")
            stream = container.streams.video[0]
            count = 0
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    if count > limits.max_frames:
                        raise AppError(f"{shown} has more than {limits.max_frames} frames; this app takes videos "
                                       f"up to {limits.max_frames} frames (cut it, or lower its frame rate).")
            if count == 0:
                raise AppError(f"{shown} has no frames.")
            container.seek(0)
            first = next(container.decode(stream), None)
            if first is None:
                raise AppError(f"{shown} has no frame that can be decoded.")
            height, width = first.height, first.width
    except AppError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, StopIteration) as exc:
        raise AppError(f"{shown} cannot be read as a video ({type(exc).__name__}): is it a complete video "
                       "file?") from None
    return count, height, width


def choose_short_side(value: str | int | None, height: int, width: int) -> int:
    if value in (None, "", "auto"):
        return min(DEFAULT_SHORT_SIDE, height, width)
    try:
        side = int(value)
    except (TypeError, ValueError):
        raise AppError(f"short side {value!r}: give a number of pixels or 'auto'.") from None
    if not 32 <= side <= 2048:
        raise AppError(f"short side {side}: choose between 32 and 2048 pixels.")
    return side


def sam2_choices() -> list[str]:
    """The SAM2.1 sizes the page offers (the default, the recipe's, is `DEFAULT_SAM2`)."""
    from ..refine.sam2 import SAM2_SIZES

    return list(SAM2_SIZES)


def check_request(video: str | Path | None, text: str | None, model: str | None, multi: bool,
                  short_side: str | int | None, limits: Limits, allowed_models: list[str] | None = None, *,
                  refine: bool = False, sam2: str | None = None) -> Request:
    from ..refine.sam2 import DEFAULT_SAM2

    size = sam2 or DEFAULT_SAM2
    if refine and size not in sam2_choices():
        raise AppError(f"SAM2 size {size!r}: choose one of {', '.join(sam2_choices())}.")
    if not video:
        raise AppError("Upload a video first, or click \"Use the sample clip\".")
    exprs = parse_expressions(text)
    if not model or (allowed_models is not None and model not in allowed_models):
        raise AppError(f"Choose a model from the list{f' (not {model!r})' if model else ''}.")
    frames, height, width = probe_video(video, limits)
    side = choose_short_side(short_side, height, width)
    return Request(Path(video), exprs, frames, height, width, side, bool(multi), model, bool(refine), size)


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class RunResult:
    folder: Path  #: what `Segmenter.segment_to` wrote
    overlay: Path
    contact_sheet: Path
    masks_zip: Path
    num_frames: int
    expressions: list[str]
    seconds: float
    summary: str = ""  #: with SAM2 refinement: what the recipe did per expression, one line each


def zip_masks(out: Path, dirs: list[str], dest: Path) -> Path:
    """`dest`: every NN_slug/masks/*.png and NN_slug/masks.json of a run."""
    tmp = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            for png in sorted((out / d / "masks").glob("*.png")):
                zf.write(png, f"{d}/masks/{png.name}", compress_type=zipfile.ZIP_STORED)  # already compressed
            zf.write(out / d / "masks.json", f"{d}/masks.json")
    os.replace(tmp, dest)
    return dest


class FrameProgress:
    """tqdm-like `.update(n)` from the segmenter -> a callback(done, total)."""

    def __init__(self, total: int, callback: Any) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self.callback(min(self.done, self.total), self.total)


@dataclass
class Workspace:
    """A temporary folder for the sample clip and the runs: the newest `keep_runs` runs are kept (their files
    are served to the pages that asked for them), older ones deleted; all of it goes on `close()`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="referdino-app-")))
    keep_runs: int = 8

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def new_run(self) -> Path:
        with self._lock:
            runs = sorted((p for p in (self.root / "runs").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
            for old in runs[: max(0, len(runs) - self.keep_runs + 1)]:
                shutil.rmtree(old, ignore_errors=True)
            run = self.root / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
            run.mkdir()
            return run

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run_request(request: Request, models: ModelCache, workspace: Workspace, *, progress: Any = None,
                status: Any = None) -> RunResult:
    """Segment a checked request into a new run folder of `workspace`; `progress(done, total)` per frame batch,
    `status(text)` for the stages."""
    from ..inference.video_io import VideoError
    from ..inference.writers import COMBINED_VIDEO, CONTACT_SHEET, OutputError, expression_dirs

    say = status or (lambda text: None)
    start = time.perf_counter()
    refinement = None
    if request.refine:  # the SAM2 checkpoint first: not cached offline -> a message, before any work
        from ..refine.pipeline import resolve_refinement

        say(f"finding the SAM2 {request.sam2} checkpoint")
        try:
            refinement = resolve_refinement("sam2", request.sam2)
        except ValueError as exc:  # Sam2UnavailableError, CheckpointError
            raise AppError(f"Cannot refine with SAM2: {exc}") from None
    run = workspace.new_run()
    try:
        with models.lock(request.model):
            if not models.loaded(request.model):
                say(f"loading the model {request.model}")
            segmenter = models.get(request.model)
            say("segmenting")
            counter = FrameProgress(request.num_frames, progress) if progress is not None else None
            extra: dict[str, Any] = {}
            if refinement is not None:
                def refine_progress() -> Any:
                    say(f"refining with SAM2 {request.sam2}")
                    return FrameProgress(0, progress) if progress is not None else None

                extra = dict(refine="sam2", sam2=str(refinement.folder), refine_progress=refine_progress)
            try:
                result, _ = segmenter.segment_to(str(request.video), request.expressions, run / "out",
                                                 write_video=True, progress=counter, multi=request.multi,
                                                 short_side=request.short_side, **extra)
            except (VideoError, OutputError) as exc:
                raise AppError(str(exc)) from None
        out = run / "out"
        say("zipping the masks")
        masks_zip = zip_masks(out, expression_dirs(request.expressions), run / MASKS_ZIP)
        seconds = time.perf_counter() - start
        summary = ""
        if refinement is not None:
            summary = "\n".join(f"{r.expression}: SAM2 {request.sam2}, {r.outcome}" for r in result.expressions)
        return RunResult(out, out / COMBINED_VIDEO, out / CONTACT_SHEET, masks_zip, request.num_frames,
                         request.expressions, seconds, summary)
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
