"""Turn a training checkpoint into a model folder (`config.json` + `model.safetensors`) for inference."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ReferDinoConfig
from ..modeling.lora import fold_lora
from ..modeling.referdino import ReferDino
from ..output_dirs import check_output_dir
from ..weights import CONFIG_NAME, MODEL_KIND, WEIGHTS_NAME, load_state_dict_strict
from .checkpoint import load_checkpoint


def export_checkpoint(checkpoint: str, destination: str, *, fold: bool = True, overwrite: bool = False) -> Path:
    """Load a `referdino train` checkpoint (.pt) strictly and save it with `save_pretrained`.

    fold: fold LoRA adapters into their weights (smaller, plain linears, identical outputs).
    overwrite: `destination` may hold other files (they are kept; see `referdino.output_dirs`).
    """
    check_output_dir(destination, MODEL_KIND, [WEIGHTS_NAME, CONFIG_NAME], overwrite=overwrite)  # before any work
    state = load_checkpoint(Path(checkpoint))
    config = ReferDinoConfig.from_dict(json.loads(state["model_config"]))
    model = ReferDino(config)
    load_state_dict_strict(model, state["model"], source=checkpoint)
    model.eval()
    if fold and config.lora.active_rank:
        fold_lora(model)
        model.config = config.with_merged_lora()
    model.save_pretrained(destination, overwrite=overwrite)
    return Path(destination)
