"""The training loop: one process or many (torchrun/DDP), CPU or CUDA, exact resume.

Determinism: the clip order of epoch e is a permutation drawn from (seed, e), sharded over ranks like
`DistributedSampler`; every clip's augmentation is drawn from RNGs seeded by (seed, e, index), so it does not
depend on workers or on where a run was interrupted. The model's own randomness (stochastic depth) uses the
global torch RNG, whose state is in every checkpoint. A resumed run therefore continues with exactly the
batches and losses the uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..modeling.referdino import ReferDino
from ..output_dirs import check_output_dir, record_outputs
from ..processing.text import tokenize
from ..weights import CheckpointError, load_state_dict_strict, read_config, read_safetensors
from .checkpoint import LAST, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from .freezing import apply_official_freezing
from .step import backward_and_clip, forward_losses

logger = logging.getLogger(__name__)
#: model options that change no parameter and that a run may set apart from its init_weights folder: the
#: tracker's settings, the distinct-object pruning, the temporal decoder's sentence feature and the inference
#: frame chunk (other options without weights, such as the class head's token reduction or dropout, still have to
#: match)
_RUN_OWN_OPTIONS = ("tracker_box_cost", "tracking_alpha", "tracker_confidence", "frame_chunk", "temporal_sentence",
                    "pruning_distinct_iou")
#: what a run writes into its out_dir (`referdino.output_dirs`)
RUN_OUTPUTS = ("train_config.json", "model_config.json", "checkpoints", "log.csv", "tensorboard")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `amp` (TrainConfig.amp) on `device`, None for full float32."""
    from ..precision import resolve_dtype

    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp=fp16 needs a CUDA device (fp16 autocast with a gradient scaler); use amp=bf16 on a CPU")
    dtype, why = resolve_dtype(amp, device)
    logger.info("training precision: %s autocast (%s)", dtype, why)
    return None if dtype == torch.float32 else dtype


def optimizer_kernel(device: torch.device) -> dict[str, bool]:
    """AdamW's implementation: the fused kernel (one C++ loop over all tensors) on CPUs and CUDA, else foreach.
    Same update up to float rounding. On a CPU torch's default is a per-tensor Python loop: on a synthetic_tiny
    video step (1 thread) fused took 0.290-0.295 s/step against 0.312 for foreach (benchmarks/RESULTS.md)."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index) % (2**31 - 1)


class SeededClips(Dataset):
    """Wraps a dataset: item (epoch, index) is produced with RNGs seeded from (seed, epoch, index)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        s = _sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(s)
                np.random.seed(s)
                torch.manual_seed(s)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class EpochOrder(torch.utils.data.Sampler):
    """Deterministic per-epoch permutation, sharded over ranks, optionally skipping the first batches."""

    def __init__(self, size: int, seed: int, rank: int, world: int) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch = 0
        self.skip = 0  # indices of this rank to skip (resume mid-epoch)

    def indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        per_rank = math.ceil(self.size / self.world)
        order += order[: per_rank * self.world - self.size]  # pad like DistributedSampler
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices(self.epoch)[self.skip :]:
            yield (self.epoch, index)

    def __len__(self) -> int:
        return len(self.indices(self.epoch)) - self.skip


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  #: training time of the earlier runs this one resumed (`max_minutes` counts it too)


class Trainer:
    """Builds the model, data, optimizer and schedule from a `TrainConfig` and runs it."""

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset | None = None,
        collate_fn: Any = None,
        dist: DistInfo | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        """overwrite: out_dir may hold files referdino did not write (they are kept); an earlier run's own
        out_dir (--resume) and a new or empty one need no flag."""
        from ..losses import Criterion, get_loss_preset

        self.config = config.validate()
        self.dist = dist or init_distributed(config.device)
        self.device = self.dist.device
        self.out_dir = Path(config.out_dir)
        self.overwrite, self._out_checked = overwrite, False
        self.progress = progress and self.dist.is_main
        torch.manual_seed(config.seed + self.dist.rank)
        self.model_config = config.model_config()
        self.model = ReferDino(self.model_config)
        if config.init_weights:
            self._load_init_weights(config.init_weights)
        if config.freeze == "official":
            apply_official_freezing(self.model, train_temporal=config.train_temporal)
        self.model.to(self.device).train()
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.criterion = Criterion(get_loss_preset(config.losses))
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.lr = config.effective_lr(self.dist.world_size)
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=config.weight_decay,
                                           **optimizer_kernel(self.device))
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(config.lr_drop), gamma=config.lr_gamma
        )
        self.amp_dtype = autocast_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if dataset is None:
            dataset, collate_fn = self._build_dataset()
        self.dataset = SeededClips(dataset, config.seed)
        self.sampler = EpochOrder(len(self.dataset), config.seed, self.dist.rank, self.dist.world_size)
        self.collate_fn = collate_fn
        self.state = TrainState()
        self._csv_path = self.out_dir / "log.csv"
        self._step_lr = self.lr  # the lr the last step used, warm-up and time drop included (logged)
        self._tb = None

    # ------------------------------------------------------------------ setup helpers
    def _build_dataset(self) -> tuple[Dataset, Any]:
        from ..data import build_dataset
        from ..data.collate import collate_clips

        c = self.config
        options: dict[str, Any] = {"num_frames": c.num_frames, "reverse_prob": c.reverse_prob}
        if c.sampling_step:
            options["sampling_step"] = c.sampling_step
        if c.expressions != "all":
            from ..synth import read_expression_kinds

            kinds = read_expression_kinds(c.data_root, c.split)
            options["keep"] = (lambda e: kinds.get(e.video_id, {}).get(e.expression_id) == c.expressions,
                               c.expressions)
        if c.augment == "light":
            from ..data.transforms import Compose, Normalize, PhotometricDistort, RandomHorizontalFlip

            # no channel swap: the official jitter's channel permutation recolours the shapes the captions name
            options["transform"] = Compose([RandomHorizontalFlip(), PhotometricDistort(channel_swap=False), Normalize()])
        # the official collator pads every batch to a multiple of 32 (and the model masks the padding)
        return build_dataset(c.dataset, c.data_root, c.split, **options), partial(collate_clips, size_divisibility=32)

    def _load_init_weights(self, path: str) -> None:
        """Start from a model folder of the same architecture.

        The temporal decoder may differ (image pretraining -> video training, as the official COCO -> video
        flow, or a run with the temporal enhancer switched off): then its keys, and only those, are declared
        missing (trained from scratch) or unexpected (dropped). The options in `_RUN_OWN_OPTIONS` may differ:
        the run's own are used.
        """
        from dataclasses import replace

        cfg = read_config(path)
        ours = self.model_config.with_merged_lora(False)
        theirs = replace(cfg.with_merged_lora(False), **{f: getattr(ours, f) for f in _RUN_OWN_OPTIONS})
        allow_missing: list[str] = ["*.lora_A", "*.lora_B"]  # folded LoRA loads into the base weights
        allow_unexpected: list[str] = []
        temporal = {"temporal_layers": ours.temporal_layers, "temporal_position": ours.temporal_position,
                    "motion_logit": ours.motion_logit}
        if theirs != ours and replace(theirs, **temporal) == ours:
            # what the other temporal decoder lacks starts fresh; what ours lacks is dropped
            allow_missing.append("temporal_decoder.*")
            allow_unexpected.append("temporal_decoder.*")
            logger.info("init weights %s: temporal decoder %d layers/%s -> %d layers/%s", path, theirs.temporal_layers,
                        theirs.temporal_position, ours.temporal_layers, ours.temporal_position)
        elif theirs != ours:
            raise CheckpointError(f"{path} was made for another model configuration than {self.config.model}")
        state = read_safetensors(Path(path) / "model.safetensors")
        load_state_dict_strict(self.model, state, allow_missing=allow_missing, allow_unexpected=allow_unexpected,
                               source=path)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": self.state.epoch,
            "step_in_epoch": self.state.step_in_epoch,
            "global_step": self.state.global_step,
            "history": self.state.history,
            "seconds": self.seconds_spent(),
            "train_config": self.config.to_json(),
            "model_config": self.model_config.to_json(),
        }

    def _prepare_out_dir(self) -> None:
        """Refuse a file or a folder with files we did not write (every rank looks; rank 0 records the run)."""
        if self._out_checked:
            return
        check_output_dir(self.out_dir, "train", RUN_OUTPUTS, overwrite=self.overwrite)
        if self.dist.is_main:
            record_outputs(self.out_dir, "train", RUN_OUTPUTS)
        self._out_checked = True

    def save(self, tag: str) -> Path:
        self._prepare_out_dir()
        path = self.out_dir / "checkpoints" / f"{tag}.pt"
        if self.dist.is_main:
            state = self.checkpoint_state()
            save_checkpoint(path, state)
            save_checkpoint(self.out_dir / "checkpoints" / LAST, state)
        barrier()
        return path

    def resume(self, path: Path | None = None) -> None:
        path = path or self.out_dir / "checkpoints" / LAST
        ckpt = load_checkpoint(path)
        saved = json.loads(ckpt["model_config"])
        if saved != json.loads(self.model_config.to_json()):
            diff = sorted(k for k in set(saved) | set(self.model_config.to_dict())
                          if saved.get(k) != self.model_config.to_dict().get(k))
            raise CheckpointError(f"{path} is from another model configuration (differs in {', '.join(diff)})")
        load_state_dict_strict(self.model, ckpt["model"], source=str(path))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.state = TrainState(ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"], list(ckpt["history"]),
                                float(ckpt.get("seconds", 0.0)))  # checkpoints before the field: 0
        logger.info("resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.global_step)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Any) -> dict[str, float]:
        batch = batch.to(self.device)
        text = tokenize(batch.captions, self.model_config.text.max_text_len).to(self.device)
        _, losses = forward_losses(
            self.ddp_model, self.criterion, batch.frames, text, batch,
            autocast_dtype=self.amp_dtype,
        )
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.state.global_step}; lower the lr")
        self.optimizer.zero_grad(set_to_none=True)
        backward_and_clip(loss, self.model, self.config.clip_max_norm, self.scaler, self.optimizer)
        warm = self._lr_factor()
        self._step_lr = self.optimizer.param_groups[0]["lr"] * warm
        scheduled = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] *= warm
        self.scaler.step(self.optimizer)
        for group, lr in zip(self.optimizer.param_groups, scheduled):
            group["lr"] = lr  # the epoch schedule keeps its own value; the warm-up only scales this step
        self.scaler.update()
        return {k: all_reduce_mean(v.detach().float()).item() for k, v in losses.items()}

    def _lr_factor(self) -> float:
        """The step's lr factor on top of the epoch schedule: the linear warm-up, and lr_gamma once the
        lr_drop_time fraction of max_minutes is spent (counted over resumes)."""
        c = self.config
        factor = min(1.0, (self.state.global_step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.lr_drop_time and self.seconds_spent() / 60 >= c.lr_drop_time * c.max_minutes:
            factor *= c.lr_gamma
        return factor

    # ------------------------------------------------------------------ loop
    def _loader(self) -> DataLoader:
        return DataLoader(
            self.dataset, batch_size=self.config.batch_size, sampler=self.sampler,
            num_workers=self.config.num_workers, collate_fn=self.collate_fn,
            persistent_workers=False,
            # its own generator: creating the loader must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.config.seed + self.state.epoch),
        )

    def _out_of_budget(self) -> bool:
        c = self.config
        if c.max_steps and self.state.global_step >= c.max_steps:
            return True
        if not c.max_minutes:
            return False
        # every rank must stop at the same step: rank 0's clock decides; a resumed run counts its earlier time
        late = torch.tensor(float(self.seconds_spent() / 60 >= c.max_minutes))
        if self.dist.enabled:
            late = late.to(self.device)
            torch.distributed.broadcast(late, src=0)
        return bool(late.item())

    def seconds_spent(self) -> float:
        """Training time of this run and of the earlier runs it resumed (what `max_minutes` counts)."""
        return self.state.seconds + self._elapsed()

    def _elapsed(self) -> float:
        """Seconds since this process's `fit` started (0 before it)."""
        start = getattr(self, "_fit_start", None)
        return 0.0 if start is None else time.perf_counter() - start

    def fit(self) -> TrainState:
        c = self.config
        self._fit_start = time.perf_counter()
        self._prepare_out_dir()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.out_dir / "train_config.json").write_text(c.to_json())
            (self.out_dir / "model_config.json").write_text(self.model_config.to_json())
        while self.state.epoch < c.epochs:
            if self._out_of_budget():
                break
            self.sampler.epoch = self.state.epoch
            self.sampler.skip = self.state.step_in_epoch * c.batch_size
            self._run_epoch()
            if self._out_of_budget():
                self.save(f"step_{self.state.global_step:07d}")
                break
            self.state.epoch += 1
            self.state.step_in_epoch = 0
            self.scheduler.step()
            self.save(f"epoch_{self.state.epoch:03d}")
        return self.state

    def _run_epoch(self) -> None:
        c = self.config
        loader = self._loader()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(loader), desc=f"epoch {self.state.epoch + 1}/{c.epochs}", dynamic_ncols=True)
        start = time.perf_counter()
        for batch in loader:
            losses = self.train_step(batch)
            self.state.step_in_epoch += 1
            self.state.global_step += 1
            row = {"step": self.state.global_step, "epoch": self.state.epoch, "lr": self._step_lr,
                   **losses}
            self.state.history.append({k: float(v) for k, v in row.items()})
            if self.dist.is_main and (self.state.global_step % c.log_every == 0):
                self._log(row)
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{losses['loss']:.3f}", clips_s=f"{bar.n * c.batch_size / max(elapsed, 1e-9):.2f}")
                bar.update(1)
            if c.ckpt_every and self.state.global_step % c.ckpt_every == 0:
                self.save(f"step_{self.state.global_step:07d}")
            if self._out_of_budget():
                break
        if bar is not None:
            bar.close()

    def _log(self, row: dict[str, float]) -> None:
        new = not self._csv_path.exists()
        with self._csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self._tb = False
        if self._tb:
            for key, value in row.items():
                if key not in ("step", "epoch"):
                    self._tb.add_scalar(key, value, int(row["step"]))
