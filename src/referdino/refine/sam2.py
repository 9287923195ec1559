"""SAM2 refinement of ReferDINO's masks: the ReferDINO-Plus recipe on transformers' `Sam2VideoModel`.

The recipe (ReferDINO-Plus, arXiv 2503.23509, its ``refine_from_refdino.py``; the rules and constants are in
`referdino.refine.rules`): per expression, keep the queries whose scores pass sigma = 0.275, prompt SAM2 with each
kept query's mask on its best frame as a new object, propagate forward then in reverse, and output SAM2's union of
objects, united with ReferDINO's kept masks when SAM2's boxes are mostly below 2/3 of ReferDINO's. No kept query:
empty masks, as the recipe.

Pieces:
- `resolve_sam2(size)`: the checkpoint ``facebook/sam2.1-hiera-{tiny,small,base-plus,large}`` through the hub cache
  (`huggingface_hub.snapshot_download`, only its ``*.json`` and ``*.safetensors``; offline with ``HF_HUB_OFFLINE=1``
  it reads the cache only, and says how to get the files when they are not there). Nothing is vendored.
- `Sam2VideoRunner`: frames + prompts (frame index, mask) -> per-object masks for every frame.
- `refine_with_sam2(frames, result, ...)`: the whole recipe on a `segment_frames(..., keep_queries=True)` result.

Deviations from ReferDINO-Plus, all known:
- ReferDINO-Plus runs a modified SAM2 with SAMURAI's motion-aware memory switched on (``samurai_mode: True`` in
  its bundled ``sam2.1_hiera_l.yaml``: a Kalman filter re-weights the mask candidates and gates the memory bank).
  transformers' `Sam2VideoModel` is plain SAM2.1, so we run plain SAM2.1.
- The SAM2 processor of transformers needs torchvision, which this project does not depend on, so its three steps
  are done here in torch with the same operations: frames resized to the model's square input (1024) bilinearly
  with antialiasing, scaled to [0, 1] and normalised with the ImageNet mean/std (read from the checkpoint's
  preprocessor config when it has one); mask prompts resized the same way and thresholded at 0.5; output logits
  upsampled bilinearly to the model's input size, then to the frame size, and thresholded at 0. (The original
  SAM2 loads frames with PIL's resize and upsamples logits to the frame size in one step.)
- SAM2's original video predictor removes small holes/sprinkles from masks (``fill_hole_area``); transformers'
  model does not, nor do we.
- Precision: the recipe runs under CUDA fp16 autocast; we run SAM2 in the dtype given (the CLI passes the one
  `--dtype` resolved for ReferDINO: bf16 on recent GPUs and on CPUs with bf16 matrix units, else fp32).

Memory (the streaming spirit of `referdino segment`): frames stay on the CPU as uint8 (the CLI records them in a
temporary file, `FrameStore`) and are resized for SAM2 one at a time, when SAM2 asks for them; transformers'
session keeps the image features of one frame. Of the inference state (per object and frame: 256x256 mask logits,
the 64x64x64 memory and its position encoding, the object pointer), we keep only what SAM2 can still read: the
prompt frames, and the last `window` tracked frames in the direction of travel (window = max(num_maskmem - 1,
max_object_pointers_in_encoder - 1) = 15 for SAM2.1; its memory reads the 6 previous frames and its object
pointers the 15 previous ones), plus, during the forward pass, the `window` frames after the last prompt frame,
which the reverse pass reads first. The 1024x1024 logits transformers stores per object and frame (needed only
inside the step) are dropped after each step. That state lives on `state_device` (the CPU by default, as the
original's ``offload_state_to_cpu``); the output masks are kept at one bit per pixel (`PackedMasks`). So memory
is bounded by the number of objects, not by the video length, except for those bit-packed masks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..weights import CheckpointError
from .rules import SIGMA, box_area, prompt_frames, select_queries, unite_decision
from .storage import PackedMasks

logger = logging.getLogger(__name__)

#: --sam2 sizes -> SAM2.1 checkpoints on the Hugging Face Hub (transformers format)
SAM2_SIZES = {
    "tiny": "facebook/sam2.1-hiera-tiny",
    "small": "facebook/sam2.1-hiera-small",
    "base-plus": "facebook/sam2.1-hiera-base-plus",
    "large": "facebook/sam2.1-hiera-large",
}
#: the recipe's size (ReferDINO-Plus loads sam2.1_hiera_large.pt)
DEFAULT_SAM2 = "large"
#: the files of a checkpoint repository we need (the repositories also hold the original .pt and .yaml)
HUB_PATTERNS = ["*.json", "*.safetensors"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Sam2UnavailableError(CheckpointError):
    """A SAM2 checkpoint that is neither cached nor downloadable now."""


def unknown_size_error(size: str) -> CheckpointError:
    return CheckpointError(f"unknown SAM2 size {size!r}; sizes: {', '.join(SAM2_SIZES)}")


# ------------------------------------------------------------------------------------------ checkpoints
def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _unavailable(size: str, repo: str, reason: str) -> Sam2UnavailableError:
    from ..zoo import hub_cache_dir

    return Sam2UnavailableError(
        f"the SAM2 checkpoint {repo} (--sam2 {size}) is not in the local cache ({hub_cache_dir()}) and {reason}; "
        f"connect once to download it (run again online, or `hf download {repo} --include '*.json' "
        "'*.safetensors'`), or choose a cached size with --sam2"
    )


def resolve_sam2(size: str = DEFAULT_SAM2) -> Path:
    """The local folder of SAM2 checkpoint `size` (one of `SAM2_SIZES`, or the path of a transformers Sam2Video
    folder), downloading it into the hub cache when needed and allowed."""
    if size not in SAM2_SIZES:
        folder = Path(size)
        if folder.is_dir() and (folder / "config.json").is_file():
            return folder
        raise unknown_size_error(size)
    repo = SAM2_SIZES[size]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from ..zoo import _hub_kwargs, _no_network, offline

    kwargs = _hub_kwargs()
    reason = None
    if offline():
        reason = "HF_HUB_OFFLINE is set, so it cannot be downloaded"
    else:
        unreachable = _no_network(kwargs["endpoint"])
        if unreachable is not None:
            reason = f"the Hugging Face Hub cannot be reached ({unreachable})"
    folder = None
    if reason is None:
        try:
            folder = snapshot_download(repo, allow_patterns=HUB_PATTERNS, **kwargs)
        except LocalEntryNotFoundError as exc:  # no connection and not cached (or the cached copy is incomplete)
            reason = f"the Hugging Face Hub cannot be reached ({_first_line(exc.__cause__ or exc)})"
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot fetch the SAM2 checkpoint {repo} from the hub: {_first_line(exc)}") from None
    if folder is None:
        try:
            folder = snapshot_download(repo, allow_patterns=HUB_PATTERNS, local_files_only=True, **kwargs)
        except LocalEntryNotFoundError:
            raise _unavailable(size, repo, reason or "it cannot be downloaded now") from None
    path = Path(folder)
    if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
        raise _unavailable(size, repo, f"its cached copy {path} is incomplete" +
                           ("" if reason is None else f" and {reason}"))
    return path


# ------------------------------------------------------------------------------- published architectures
#: Hiera trunk of each SAM2.1 size as transformers' SAM2 converter builds it (``convert_sam2_to_hf.py``, from the
#: official ``sam2.1_hiera_{t,s,b+,l}.yaml``); the rest of the model is the same for every size. For building
#: random-weight models of the real sizes offline (`published_config`, benchmarks/sam2_cost.py).
_HIERA: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=96, blocks_per_stage=[1, 2, 7, 2], global_attention_blocks=[5, 7, 9]),
    "small": dict(hidden_size=96, blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
    "base-plus": dict(hidden_size=112, embed_dim_per_stage=[112, 224, 448, 896],
                      num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                      global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14]),
    "large": dict(hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152],
                  num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                  global_attention_blocks=[23, 33, 43], window_positional_embedding_background_size=[7, 7],
                  window_size_per_stage=[8, 4, 16, 8]),
}


def published_config(size: str):  # type: ignore[no-untyped-def]
    """`Sam2VideoConfig` with the published hyperparameters of SAM2.1 `size` (for random weights: no download)."""
    from transformers import Sam2VideoConfig

    if size not in _HIERA:
        raise unknown_size_error(size)
    hiera = dict(_HIERA[size])
    dims = hiera.get("embed_dim_per_stage", [96, 192, 384, 768])
    return Sam2VideoConfig(
        vision_config={"backbone_config": {"model_type": "sam2_hiera_det_model", **hiera},
                       "backbone_channel_list": list(reversed(dims))},
        enable_temporal_pos_encoding_for_object_pointers=True,  # SAM2.1 (not SAM2.0)
        enable_occlusion_spatial_embedding=True,
    )


# ------------------------------------------------------------------------------------------------ runner
class _LazyFrames(Mapping):
    """What transformers' session reads as its processed video: frame t is prepared when it is asked for."""

    def __init__(self, frames: Sequence[np.ndarray], prepare: Callable[[np.ndarray], torch.Tensor]) -> None:
        self.frames = frames
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(len(self.frames)))

    def __getitem__(self, t: int) -> torch.Tensor:
        if not 0 <= t < len(self.frames):
            raise KeyError(t)
        return self.prepare(self.frames[t])


def _preprocessor_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                cfg = json.loads(path.read_text())
                return tuple(cfg["image_mean"]), tuple(cfg["image_std"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return IMAGENET_MEAN, IMAGENET_STD


class Sam2VideoRunner:
    """Tracks objects given by mask prompts through a video with transformers' `Sam2VideoModel`.

    `track(frames, prompts)`: `frames` is any sequence of (H, W, 3) uint8 RGB frames with random access
    (a list, an array, a `FrameStore`); `prompts` a list of (frame index, (H, W) bool mask), one per object.
    Each object is added on its frame; SAM2 then propagates forward from the first prompt frame to the end and in
    reverse from the last prompt frame to the start (the reverse pass overwrites the frames up to the last
    prompt). Returns a `PackedMasks` (T, N, H, W), objects in prompt order. Memory: see the module docstring."""

    def __init__(self, model: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 state_device: str | torch.device | None = "cpu", image_mean: Sequence[float] = IMAGENET_MEAN,
                 image_std: Sequence[float] = IMAGENET_STD, prune: bool = True) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.state_device = torch.device(state_device) if state_device is not None else self.device
        self.model = model.to(device=self.device, dtype=dtype).eval()
        cfg = model.config
        size = cfg.image_size
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.mean = torch.tensor(image_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        #: how many tracked frames back SAM2 reads: its memory (num_maskmem - 1) and object pointers
        self.window = max(int(cfg.num_maskmem) - 1, int(cfg.max_object_pointers_in_encoder) - 1, 1)
        self.prune = prune

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_SAM2, **kwargs: Any) -> Sam2VideoRunner:
        """A size (`SAM2_SIZES`, resolved through the hub cache) or a transformers Sam2Video folder."""
        from transformers import Sam2VideoModel

        folder = resolve_sam2(str(name_or_path))
        model = Sam2VideoModel.from_pretrained(str(folder))
        mean, std = _preprocessor_stats(folder)
        kwargs.setdefault("image_mean", mean)
        kwargs.setdefault("image_std", std)
        return cls(model, **kwargs)

    # -- the processor's three steps (see the module docstring) --
    def prepare_frame(self, frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean) / self.std)[0].to(self.dtype)

    def prepare_mask(self, mask: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(np.asarray(mask, dtype=bool)).to(self.device).float()[None, None]
        if tuple(m.shape[-2:]) != self.size:
            m = F.interpolate(m, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        return m

    def frame_masks(self, pred_masks: torch.Tensor, frame_size: tuple[int, int]) -> np.ndarray:
        x = F.interpolate(pred_masks.float(), size=self.size, mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=frame_size, mode="bilinear", align_corners=False)
        return (x[:, 0] > 0).cpu().numpy()

    def _trim(self, session, t: int, reverse: bool, keep: range) -> None:  # type: ignore[no-untyped-def]
        for outputs in session.output_dict_per_obj.values():
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                out = outputs[kind].get(t)
                if out is not None:
                    out.pop("high_res_masks", None)  # used inside the step only
            if self.prune:
                old = t + self.window if reverse else t - self.window
                if old not in keep:
                    outputs["non_cond_frame_outputs"].pop(old, None)

    @torch.inference_mode()
    def track(self, frames: Sequence[np.ndarray], prompts: Sequence[tuple[int, np.ndarray]], *,
              union: bool = False, progress=None) -> PackedMasks:  # type: ignore[no-untyped-def]
        """Per-object masks (or, with `union`, their union as one object) for every frame."""
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        n = len(frames)
        if n == 0:
            raise ValueError("the video has no frames")
        h, w = np.asarray(frames[0]).shape[:2]
        out = PackedMasks(n, 1 if union else len(prompts), (h, w))
        if not prompts:
            return out
        for f, m in prompts:
            if not 0 <= f < n:
                raise ValueError(f"prompt frame {f} is outside the video (0..{n - 1})")
            if np.asarray(m).shape != (h, w):
                raise ValueError(f"prompt masks must be {h}x{w} (the frame size), got {np.asarray(m).shape}")
        session = Sam2VideoInferenceSession(
            video=None, video_height=h, video_width=w, inference_device=self.device,
            inference_state_device=self.state_device, video_storage_device="cpu", dtype=self.dtype,
            max_vision_features_cache_size=1,
        )
        session.processed_frames = _LazyFrames(frames, self.prepare_frame)

        def store(result) -> None:  # type: ignore[no-untyped-def]
            ids = list(result.object_ids)
            masks = self.frame_masks(result.pred_masks[[ids.index(j) for j in range(len(prompts))]], (h, w))
            out.set(int(result.frame_idx), masks.any(0, keepdims=True) if union else masks)

        by_frame: dict[int, list[int]] = {}
        for obj, (f, _) in enumerate(prompts):
            by_frame.setdefault(int(f), []).append(obj)
        first, last = min(by_frame), max(by_frame)
        keep = range(last + 1, last + 1 + self.window)  # read by the reverse pass first: kept in the forward one
        for f in sorted(by_frame):  # each object becomes a conditioning frame (its mask as SAM2's output there)
            for obj in by_frame[f]:
                idx = session.obj_id_to_idx(obj)
                session.add_mask_inputs(idx, f, self.prepare_mask(prompts[obj][1]))
                session.remove_point_inputs(idx, f)
            session.obj_with_new_inputs = list(by_frame[f])
            self.model(inference_session=session, frame_idx=f)
            self._trim(session, f, False, range(0, n))  # drop the big logits only
        for result in self.model.propagate_in_video_iterator(session, start_frame_idx=first, reverse=False):
            store(result)
            self._trim(session, int(result.frame_idx), False, keep)
            if progress is not None:
                progress.update(1)
        if last > 0:
            for result in self.model.propagate_in_video_iterator(session, start_frame_idx=last, reverse=True):
                store(result)
                self._trim(session, int(result.frame_idx), True, range(0))
                if progress is not None:
                    progress.update(1)
        elif progress is not None:
            progress.update(1)  # transformers skips a reverse pass that would start at frame 0
        session.reset_inference_session()
        return out

    @staticmethod
    def frames_processed(num_frames: int, prompt_frames_: Sequence[int]) -> int:
        """How many frame steps `track` takes (for progress bars)."""
        if not prompt_frames_:
            return 0
        return (num_frames - min(prompt_frames_)) + max(max(prompt_frames_), 0) + 1


# ------------------------------------------------------------------------------------------- the recipe
@dataclass
class RefinedExpression:
    """One expression after refinement (the fields of `ExpressionResult`, plus what the recipe decided)."""

    expression: str
    queries: list[int]  #: ReferDINO's queries kept by the selection rule (SAM2's objects, in order)
    masks: np.ndarray | None  #: (T, H, W) bool (None when only streamed to `on_frame_masks`)
    boxes: np.ndarray  #: (T, 4) x1, y1, x2, y2 pixel box of the output mask (zeros when empty)
    scores: np.ndarray  #: (T,) max ReferDINO score of the kept queries (0 with none kept)
    prompt_frames: list[int] = field(default_factory=list)  #: the frame each kept query prompted SAM2 on
    united: bool = False  #: output = SAM2's union | ReferDINO's kept masks (else SAM2's union alone)
    referdino_queries: list[int] = field(default_factory=list)  #: ReferDINO's own choice, for comparison

    @property
    def outcome(self) -> str:
        if not self.queries:
            return f"no query above {SIGMA}: empty masks"
        return "SAM2 united with ReferDINO" if self.united else "SAM2 alone"


def _as_frames(frames) -> Sequence[np.ndarray]:  # type: ignore[no-untyped-def]
    if isinstance(frames, np.ndarray):
        return frames
    seq = frames if hasattr(frames, "__getitem__") and hasattr(frames, "__len__") else list(frames)
    if len(seq) and isinstance(seq[0], tuple):  # (name, frame) pairs, as segment_frames takes them
        return [f for _, f in seq]
    return seq


def _mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def refine_with_sam2(frames: Any, result: Any, *, runner: Sam2VideoRunner | None = None, sam2: str = DEFAULT_SAM2,
                     sigma: float = SIGMA, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     keep_masks: bool = True, on_frame_masks: Any = None, progress: Any = None) -> Any:
    """The ReferDINO-Plus SAM2 refinement of a ReferDINO `SegmentationResult`.

    frames: the video's frames, (H, W, 3) uint8, with random access (a list or array of frames, (name, frame)
    pairs, or a `FrameStore`). result: from `segment_frames(..., keep_queries=True)` (its `per_query`; not closed
    here). runner: a `Sam2VideoRunner` (else one is loaded: `sam2` size on `device` in `dtype`).
    on_frame_masks(name, frame, masks (E, H, W), boxes (E, 4), scores (E,)) is called for each frame in order, as
    `segment_frames` does (writers use it). Returns a new `SegmentationResult` of `RefinedExpression`s (masks kept
    with `keep_masks`)."""
    from ..inference.segment import SegmentationResult
    from ..processing.postprocess import upsample_masks

    per_query = getattr(result, "per_query", None)
    if per_query is None:
        raise ValueError("refine_with_sam2 needs every query's scores and masks: run "
                         "segment_frames(..., keep_queries=True)")
    seq = _as_frames(frames)
    num = len(result.frame_names)
    if len(seq) != num:
        raise ValueError(f"{len(seq)} frames given for a result of {num} frames")
    size = tuple(result.frame_size)
    e = len(result.expressions)
    kept = [select_queries(per_query.scores[k], sigma) for k in range(e)]
    firsts = [prompt_frames(per_query.scores[k], kept[k]) for k in range(e)]

    # ReferDINO's side, one pass over the logit file: each expression's union of kept masks (bit-packed) and its
    # box areas, and the prompt masks on the prompt frames
    ref = [PackedMasks(num, 1, size) for _ in range(e)]
    ref_areas = np.zeros((e, num), np.int64)
    prompts: list[list[tuple[int, np.ndarray]]] = [[(0, np.zeros(0))] * len(kept[k]) for k in range(e)]
    for t in range(num):
        if not any(kept):
            break
        logits = per_query.mask_logits(t)
        for k in range(e):
            if not kept[k]:
                continue
            masks = (upsample_masks(torch.from_numpy(logits[k, kept[k]].astype(np.float32))[None], size)[0] > 0).numpy()
            union = masks.any(0)
            ref[k].set(t, union[None])
            ref_areas[k, t] = box_area(union)
            for j, f in enumerate(firsts[k]):
                if f == t:
                    prompts[k][j] = (t, masks[j])

    if progress is not None and hasattr(progress, "total"):
        progress.total = sum(Sam2VideoRunner.frames_processed(num, firsts[k]) for k in range(e))
        if hasattr(progress, "refresh"):
            progress.refresh()
    if runner is None and any(kept):
        runner = Sam2VideoRunner.from_pretrained(sam2, device=device, dtype=dtype)
    sam = []
    united = []
    for k in range(e):
        if not kept[k]:
            sam.append(PackedMasks(num, 1, size))
            united.append(False)
            continue
        logger.debug("SAM2: expression %d, queries %s prompted on frames %s", k, kept[k], firsts[k])
        masks = runner.track(seq, prompts[k], union=True, progress=progress)  # type: ignore[union-attr]
        sam.append(masks)
        united.append(unite_decision([box_area(masks[t][0]) for t in range(num)], ref_areas[k]))

    outs = [RefinedExpression(r.expression, kept[k], None, np.zeros((num, 4), np.float32),
                              np.zeros(num, np.float32), firsts[k], united[k], list(r.queries))
            for k, r in enumerate(result.expressions)]
    for k in range(e):
        if kept[k]:
            outs[k].scores = per_query.scores[k][:, kept[k]].max(-1).astype(np.float32)
    collected: list[list[np.ndarray]] | None = [[] for _ in range(e)] if keep_masks else None
    for t, name in enumerate(result.frame_names):
        frame_masks = []
        for k in range(e):
            m = sam[k][t][0]
            if united[k]:
                m = m | ref[k][t][0]
            frame_masks.append(m)
            outs[k].boxes[t] = _mask_box(m)
            if collected is not None:
                collected[k].append(m)
        if on_frame_masks is not None:
            on_frame_masks(name, np.asarray(seq[t]), np.stack(frame_masks), np.stack([o.boxes[t] for o in outs]),
                           np.array([o.scores[t] for o in outs], np.float32))
    if collected is not None:
        for k in range(e):
            outs[k].masks = np.stack(collected[k])
    return SegmentationResult(list(result.frame_names), size, result.fps, outs)  # type: ignore[arg-type]
