"""Run a checkpoint over a benchmark split and write its predictions in the official layouts.

* Ref-YouTube-VOS / MeViS: `OUT/Annotations/<video>/<exp_id>/<frame>.png` (0/255), then the submission zip:
  Ref-YouTube-VOS with the top folder `Annotations/`, MeViS without a top folder.
* Ref-DAVIS17: `OUT/anno_<k>/<video>/<frame>.png` label maps per annotator k (object index + 1; later objects
  win overlaps), ready for `referdino evaluate davis`.

Videos are sharded over ranks when launched with torchrun (rank r takes videos r, r + world, ...); rank 0
writes the zip after every rank has finished.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..output_dirs import check_output_dir, record_outputs, remove_outputs

logger = logging.getLogger(__name__)


def _frames(video):  # type: ignore[no-untyped-def]
    from ..data.loading import load_frames

    def gen():  # type: ignore[no-untyped-def]
        for start in range(0, len(video.frame_ids), 8):
            positions = list(range(start, min(start + 8, len(video.frame_ids))))
            for pos, frame in zip(positions, load_frames(video, positions)):
                yield video.frame_ids[pos], frame

    return gen


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def predict_split(
    model,  # type: ignore[no-untyped-def]
    dataset: str,
    root: str,
    split: str,
    out_dir: str,
    *,
    multi: bool = False,
    threshold: float = 0.2,
    window: int = 36,
    short_side: int = 360,
    device: str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    max_videos: int = 0,
    overwrite: bool = False,
    dtype: torch.dtype | str | None = None,
    refine: str | None = None,
    sam2: str | None = None,
) -> Path:
    """overwrite: `out_dir` may hold other files (kept); our earlier predictions there are always replaced.
    dtype: None runs the model in its own dtype; a torch dtype or a name (auto, fp32, bf16, fp16) casts the model
    to it in place first (`referdino.precision`).
    refine="sam2", sam2=SIZE (or a Sam2Video folder): every video is refined with SAM2 after ReferDINO
    (`Segmenter.segment(..., refine=...)`) and the refined masks are written; the checkpoint is resolved first."""
    from ..data import DATASETS
    from ..inference.segmenter import Segmenter
    from ..refine.pipeline import resolve_refinement

    refinement = resolve_refinement(refine, sam2)  # before any work; SAM2 is then loaded once, for every video

    segmenter = Segmenter(model, device=device, dtype=dtype)
    if dtype is not None:
        logger.info("precision %s (%s)", segmenter.dtype, segmenter.dtype_reason)

    if dataset not in ("ytvos", "mevis", "davis"):
        raise ValueError(f"split inference supports ytvos, mevis and davis, not {dataset!r}")
    records = DATASETS[dataset](root, split)
    _prepare_out_dir(Path(out_dir), dataset, overwrite, rank)
    by_video = defaultdict(list)
    for e in records.expressions:
        by_video[e.video_id].append(e)
    video_ids = sorted(by_video)
    if max_videos:
        video_ids = video_ids[:max_videos]
    mine = video_ids[rank::world_size]
    out = Path(out_dir)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(mine, desc=f"{dataset} {split} (rank {rank})", unit="video", dynamic_ncols=True)
    for vid in mine:
        video = records.videos[vid]
        exprs = by_video[vid]

        def write(name, frame, masks, boxes, scores, exprs=exprs, vid=vid):  # type: ignore[no-untyped-def]
            if dataset == "davis":
                for k in range(4):
                    label = np.zeros(masks.shape[1:], np.uint8)
                    for i, e in enumerate(exprs):
                        if e.extra.get("annotator") == k:
                            label[masks[i]] = e.extra["object_index"] + 1
                    _save_png(out / f"anno_{k}" / vid / f"{name}.png", label)
            else:
                for i, e in enumerate(exprs):
                    _save_png(out / "Annotations" / vid / e.expression_id / f"{name}.png", masks[i].astype(np.uint8) * 255)

        segmenter.segment(
            _frames(video), [e.caption for e in exprs], window=window, short_side=short_side, multi=multi,
            threshold=threshold, keep_masks=False, on_frame_masks=write,
            **({} if refinement is None else {"refine": refine, "sam2": str(refinement.folder)}),
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    from ..training.distributed import barrier

    barrier()
    if rank == 0 and dataset in ("ytvos", "mevis"):
        return write_submission_zip(out, dataset)
    return out


def _prepare_out_dir(out: Path, dataset: str, overwrite: bool, rank: int) -> None:
    """Refuse a file or a folder with files we did not write; rank 0 clears our earlier predictions."""
    from ..training.distributed import barrier

    names = [f"anno_{k}" for k in range(4)] if dataset == "davis" else ["Annotations", f"submission_{dataset}.zip"]
    before = check_output_dir(out, "infer", names, overwrite=overwrite)
    if rank == 0:
        remove_outputs(out, [n for n in names if before.get(n) == "infer"])
        record_outputs(out, "infer", names)
    barrier()


def write_submission_zip(out: Path, dataset: str) -> Path:
    """Ref-YouTube-VOS: entries under `Annotations/`; MeViS: `<video>/<exp_id>/<frame>.png` at the top."""
    root = out / "Annotations"
    if not root.is_dir():
        raise ValueError(f"{root} does not exist: nothing to zip")
    target = out / f"submission_{dataset}.zip"

    def build(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for dirpath, _, files in sorted(os.walk(root)):
                for f in sorted(files):
                    path = Path(dirpath) / f
                    rel = path.relative_to(out if dataset == "ytvos" else root)
                    z.write(path, str(rel))

    atomic_write(target, build)
    return target
