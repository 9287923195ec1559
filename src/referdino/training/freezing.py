"""Which parameters train (official recipe, account Sec. 2.8), decided by module rather than by substring.

Trainable: the text projection, every BERT LayerNorm, the new Swin stride-4 norm, the shared box head,
all LoRA adapters, the pixel decoder, the mask decoder and (video datasets) the temporal decoder.
Everything else (Swin, BERT, encoder/decoder weights under LoRA, attention, query selection) is frozen.
"""

from __future__ import annotations

from torch import nn

from ..modeling.lora import LoRALinear


def apply_official_freezing(model: nn.Module, *, train_temporal: bool = True) -> set[str]:
    """Set `requires_grad` as the official trainer does; return the trainable parameter names."""
    model.requires_grad_(False)
    trainable: list[nn.Module] = [
        model.text_encoder.projection,
        model.backbone.norm0,
        model.decoder.bbox_embed,
        model.pixel_decoder,
        model.mask_decoder,
    ]
    trainable += [m for m in model.text_encoder.bert.modules() if isinstance(m, nn.LayerNorm)]
    if train_temporal and model.temporal_decoder is not None:
        trainable.append(model.temporal_decoder)
    for module in trainable:
        module.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.lora_A.requires_grad_(True)
            module.lora_B.requires_grad_(True)
    return {name for name, p in model.named_parameters() if p.requires_grad}
