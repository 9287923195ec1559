"""Run the model on a prepared clip for one or more expressions and return per-frame masks.

The Swin backbone runs once per frame chunk and its features are shared by every expression; the
text-dependent stages (feature enhancer onwards) run per expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..modeling.outputs import ReferDinoOutput
from ..modeling.referdino import ReferDino
from ..processing.postprocess import query_scores, upsample_masks
from ..modeling.tracker import TrackerState
from ..processing.text import TokenizedText, tokenize


@dataclass
class ExpressionPrediction:
    expression: str
    masks: torch.Tensor  #: (T, H, W) bool at the requested output size
    boxes: torch.Tensor  #: (T, 4) normalised cx, cy, w, h of the chosen query
    scores: torch.Tensor  #: (T,) per-frame sigmoid score of the chosen query
    query: int  #: index of the chosen query (top-1 by mean score)


#: frames grounded at once on a CPU: a small working set is faster there (GPUs use the config's frame_chunk)
CPU_GROUNDING_CHUNK = 4


def grounding_chunk(model: ReferDino, device: torch.device) -> int:
    chunk = model.config.frame_chunk
    return min(chunk, CPU_GROUNDING_CHUNK) if device.type == "cpu" else chunk


def predict_window(
    model: ReferDino, pixels: torch.Tensor, text: TokenizedText, text_feats: torch.Tensor,
    tracker_state: TrackerState | None = None,
) -> ReferDinoOutput:
    """The inference stages for one window of one video and E expressions: the backbone once per frame chunk
    (shared by every expression), then grounding, tracker, temporal decoder and masks per expression.

    pixels (t, 3, h, w) normalised; text / text_feats for E expressions; tracker_state carries the tracker's
    memory from the previous window. Returns outputs with B = E (last decoder layer)."""
    t, e = pixels.shape[0], text_feats.shape[0]
    chunk = model.config.frame_chunk
    stage_chunks = [model.encode_images(pixels[i : i + chunk]) for i in range(0, t, chunk)]
    stages = [torch.cat([c[s] for c in stage_chunks]) for s in range(len(stage_chunks[0]))]
    repeated = [s.repeat(e, 1, 1, 1) for s in stages]  # (E*t, C, H, W), expression-major like the forward
    grounding = model.ground_video(
        None, text_feats, text, t, stages=repeated, chunk=grounding_chunk(model, pixels.device)  # type: ignore[arg-type]
    )
    return model.predict(grounding, text, e, t, all_layers=False, tracker_state=tracker_state)


@torch.inference_mode()
def run_expressions(model: ReferDino, pixels: torch.Tensor, expressions: list[str]) -> ReferDinoOutput:
    """pixels (T, 3, h, w) normalised, one window; returns outputs with B = len(expressions)."""
    text = tokenize(expressions, model.config.text.max_text_len).to(pixels.device)
    return predict_window(model, pixels, text, model.encode_text(text))


def predict_expressions(
    model: ReferDino, pixels: torch.Tensor, expressions: list[str], out_size: tuple[int, int]
) -> list[ExpressionPrediction]:
    """Top-1 query per expression (highest mean score over frames), masks upsampled to `out_size`."""
    out = run_expressions(model, pixels, expressions)
    results = []
    for i, expr in enumerate(expressions):
        logits = out.pred_logits[i]
        j = int(query_scores(logits).argmax())
        masks = upsample_masks(out.pred_masks[i, :, j], out_size) > 0
        results.append(ExpressionPrediction(expr, masks.cpu(), out.pred_boxes[i, :, j].cpu(),
                                            logits[:, j, 0].sigmoid().cpu(), j))
    return results
