"""ReferDINO (Liang et al., ICCV 2025): GroundingDINO + confidence-aware query pruning + object-consistent
temporal enhancer + grounding-guided deformable mask decoder.

`ReferDino.forward` is the one path for training (all decoder layers) and inference (last layer only).
The stages are separate methods so that several expressions of one video can share the text-independent
visual work (`encode_images`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ReferDinoConfig
from ..processing.text import TokenizedText
from .decoder import CrossModalityDecoder, DecoderLayerOutput
from .feature_enhancer import FeatureEnhancer
from .heads import contrastive_logit, inverse_sigmoid
from .mask_head import MaskDecoder, PixelDecoder
from .outputs import ForcedSelections, LayerPrediction, ReferDinoOutput
from .padding import level_masks, valid_ratios
from .position_encoding import image_position_embedding
from .query_selection import QuerySelection
from .swin import SwinBackbone
from .temporal_decoder import TemporalDecoder
from .text_encoder import TextEncoder
from .tracker import TrackerState, track

Record = dict[str, torch.Tensor]


@dataclass
class FrameGrounding:
    """Per-frame results of the image-level grounding stages for N = B*T frames."""

    enhanced_text: torch.Tensor  #: (N, L, C)
    memory_maps: list[torch.Tensor]  #: encoder memory of levels 0..2 as (N, C, H_l, W_l)
    stride4: torch.Tensor  #: (N, C0, H/4, W/4) Swin stage-0 output
    layers: list[DecoderLayerOutput]
    proposal_logits: torch.Tensor  #: (N, K) two-stage scores of the selected tokens
    proposal_boxes: torch.Tensor  #: (N, K, 4) refined two-stage boxes (sigmoid)
    proposal_features: torch.Tensor  #: (N, K, C) projected encoder features of the selected tokens
    proposal_anchors: torch.Tensor  #: (N, K, 4) fixed anchors of the selected tokens (sigmoid space)


def concat_groundings(parts: list[FrameGrounding]) -> FrameGrounding:
    """Concatenate the groundings of consecutive frame chunks along the frame axis."""
    cat = lambda xs: torch.cat(list(xs), 0)  # noqa: E731
    layers = [
        DecoderLayerOutput(
            cat(p.layers[i].hidden for p in parts),
            cat(p.layers[i].reference for p in parts),
            cat(p.layers[i].refined for p in parts),
            cat(p.layers[i].kept for p in parts),
            None if parts[0].layers[i].gate is None else cat(p.layers[i].gate for p in parts),  # type: ignore[misc]
        )
        for i in range(len(parts[0].layers))
    ]
    return FrameGrounding(
        cat(p.enhanced_text for p in parts),
        [cat(p.memory_maps[i] for p in parts) for i in range(len(parts[0].memory_maps))],
        cat(p.stride4 for p in parts),
        layers,
        cat(p.proposal_logits for p in parts),
        cat(p.proposal_boxes for p in parts),
        cat(p.proposal_features for p in parts),
        cat(p.proposal_anchors for p in parts),
    )


def _forced_tracks(forced: ForcedSelections | None, n_layers: int) -> list[torch.Tensor | None]:
    """Tracker permutations to replay per decoder layer (None: match freely)."""
    if forced is None:
        return [None] * n_layers
    if forced.track_layers is not None:
        return list(forced.track_layers)
    return [None] * (n_layers - 1) + [forced.track]


class ReferDino(nn.Module):
    def __init__(self, config: ReferDinoConfig) -> None:
        super().__init__()
        self.config = config.validate()
        c = config
        d = c.d_model
        self.backbone = SwinBackbone(c.swin)
        self.text_encoder = TextEncoder(c.text, d)
        chans = c.swin.stage_channels
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(ch, d, 1), nn.GroupNorm(c.input_proj_groups, d)) for ch in chans[1:]]
            + [nn.Sequential(nn.Conv2d(chans[-1], d, 3, stride=2, padding=1), nn.GroupNorm(c.input_proj_groups, d))]
        )
        self.level_embed = nn.Parameter(torch.randn(c.num_feature_levels, d) * 0.02)
        self.encoder = FeatureEnhancer(c)
        self.query_selection = QuerySelection(d, c.num_queries, c.class_token_reduce)
        self.query_embed = nn.Embedding(c.num_queries, d)
        self.decoder = CrossModalityDecoder(c)
        self.temporal_decoder = (
            TemporalDecoder(d, c.num_heads, c.temporal_layers, position=c.temporal_position,
                            motion_logit=c.motion_logit) if c.temporal_layers else None
        )
        self.pixel_decoder = PixelDecoder(d, chans[0], c.pixel_decoder_channels, c.mask_dim)
        self.mask_decoder = MaskDecoder(d, c.num_heads, c.mask_layers, c.mask_points, c.mask_ffn)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (of its weights; `referdino.precision.cast_model` changes it)."""
        return self.level_embed.dtype

    # ------------------------------------------------------------------ stages
    def encode_text(self, text: TokenizedText, record: Record | None = None) -> torch.Tensor:
        """(B, L, C) projected BERT features, in the model's dtype."""
        hidden, feats = self.text_encoder(text.input_ids, text.self_attention_mask, text.position_ids)
        if record is not None:
            record["bert_last_hidden_state"] = hidden
            record["text_feat_map"] = feats
        return feats.to(self.dtype)

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Text-independent visual work: (N, 3, H, W) normalised frames -> 4 Swin stage maps (in the model's
        dtype: float32 frames are cast for a bf16/fp16 model)."""
        return self.backbone(images.to(self.dtype))

    def ground(
        self,
        stages: list[torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor,
        text_self_mask: torch.Tensor,
        text_position_ids: torch.Tensor,
        forced: ForcedSelections | None = None,
        record: Record | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> FrameGrounding:
        """GroundingDINO per frame: projections, feature enhancer, query selection, pruned decoder.
        All text tensors are per frame (N rows); pixel_mask (N, H, W) True on batch padding, or None."""
        srcs = [proj(stage) for proj, stage in zip(self.input_proj, stages[1:])]
        srcs.append(self.input_proj[-1](stages[-1]))
        n = srcs[0].shape[0]
        shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        if pixel_mask is None:
            masks = [s.new_zeros((n, *s.shape[-2:]), dtype=torch.bool) for s in srcs]
            padding, ratios = None, None
        else:
            masks = level_masks(pixel_mask, shapes)
            padding = torch.cat([m.flatten(1) for m in masks], 1)
            ratios = valid_ratios(masks)
        pos = torch.cat(
            [
                (image_position_embedding(m, self.config.d_model // 2).flatten(2).transpose(1, 2) + self.level_embed[i])
                for i, m in enumerate(masks)
            ],
            1,
        ).to(flat.dtype)  # sin/cos in fp32, then the model's dtype
        memory, enhanced = self.encoder(
            flat, pos, shapes, padding, text, text_mask, text_self_mask, text_position_ids, ratios
        )
        proposals = self.query_selection(memory, shapes, padding, enhanced, text_mask, forced.topk if forced else None)
        layers = self.decoder(
            self.query_embed.weight[None].expand(n, -1, -1),
            proposals.boxes_unsigmoid.detach().sigmoid(),
            memory,
            shapes,
            padding,
            enhanced,
            text_mask,
            forced.kept if forced else None,
            ratios,
        )
        starts = [0]
        for h, w in shapes:
            starts.append(starts[-1] + h * w)
        maps = [memory[:, starts[i] : starts[i + 1]].transpose(1, 2).reshape(n, -1, *shapes[i]) for i in range(3)]
        if record is not None:
            record.update(
                spatial_shapes=torch.tensor(shapes),
                memory=memory,
                enhanced_text=enhanced,
                enc_topk_scores=proposals.scores,
                enc_topk_indices=proposals.indices,
                enc_ref_boxes=proposals.boxes_unsigmoid.sigmoid(),
                enc_init_box_proposal=proposals.anchors,
            )
            for i, out in enumerate(layers):
                record[f"prune{i}_gate"] = out.gate if out.gate is not None else torch.empty(0)
                record[f"prune{i}_kept_rel"] = out.kept
                record[f"dec_hs{i}"] = out.hidden
                record[f"dec_ref{i}"] = out.reference
            record[f"dec_ref{len(layers)}"] = layers[-1].refined
        return FrameGrounding(
            enhanced,
            maps,
            stages[0],
            layers,
            contrastive_logit(proposals.features.float(), enhanced.float(), text_mask, self.config.class_token_reduce),
            proposals.boxes_unsigmoid.sigmoid(),
            proposals.features,
            proposals.anchors,
        )

    def predict_layer(
        self,
        hidden: torch.Tensor,
        reference: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        pixel_features: torch.Tensor | None,
        *,
        temporal: bool,
        tracker_state: TrackerState | None = None,
        forced_track: torch.Tensor | None = None,
        record: Record | None = None,
    ) -> tuple[LayerPrediction, torch.Tensor, TrackerState | None]:
        """Tracker -> temporal decoder -> class/box heads -> mask decoder, for one decoder layer.

        hidden (B, T, Q, C), reference (B, T, Q, 4), text (B, T, L, C) per-frame enhanced text, text_mask (B, L),
        pixel_features (B*T, C, H, W) or None to skip masks. Returns (prediction, permutations, tracker state).
        """
        b, t, q, c = hidden.shape
        state = None
        perm = hidden.new_zeros((b, 0, q), dtype=torch.long)
        class_hidden = None  # what the class head reads, where it differs from what the box and mask heads read
        if temporal:
            # the tracker aligns query slots over time whenever there is time to align (also without the
            # temporal decoder: sequence-level matching needs slot j to be one object in every frame)
            hidden, reference, perm, state = track(
                hidden, reference, text, text_mask,
                alpha=self.config.tracking_alpha, confidence=self.config.tracker_confidence,
                box_cost=self.config.tracker_box_cost, state=tracker_state, forced_perm=forced_track,
            )
            sentence = self.sentence_feature(text, text_mask)
            if record is not None:
                record["temporal_in_hs"] = hidden
                record["temporal_in_sent"] = sentence[:, :, None].expand(-1, -1, q, -1)
            if self.temporal_decoder is not None:
                hidden = self.temporal_decoder(hidden, sentence, reference)
                class_hidden = self.temporal_decoder.class_features(hidden, reference)
            if record is not None:
                record["temporal_out"] = hidden
        frame_text = text.flatten(0, 1)
        frame_mask = text_mask.repeat_interleave(t, 0)
        flat_hidden = hidden.flatten(0, 1)
        flat_ref = reference.flatten(0, 1)
        # predictions are float32 whatever the model's dtype: the logits choose the referred query, the boxes are
        # refined in inverse-sigmoid space on float32 references, the mask logits are upsampled and thresholded
        flat_class = (hidden if class_hidden is None else class_hidden).flatten(0, 1).float()
        logits = contrastive_logit(flat_class, frame_text.float(), frame_mask, self.config.class_token_reduce)
        boxes = (self.decoder.bbox_embed(flat_hidden) + inverse_sigmoid(flat_ref)).sigmoid()
        masks = None
        if pixel_features is not None:
            pos = self.decoder.query_pos(flat_ref)
            embed, masks = self.mask_decoder(flat_hidden, pos, flat_ref, pixel_features, frame_text, frame_mask)
            masks = masks.view(b, t, q, *masks.shape[-2:]).float()
            if record is not None:
                record["mask_embed"] = embed
        pred = LayerPrediction(logits.view(b, t, q, 1), boxes.view(b, t, q, 4), masks)
        return pred, perm, state

    def sentence_feature(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The temporal decoder's per-frame sentence feature (B, T, C) from the enhanced text (B, T, L, C):
        the [CLS] row (official) or the mean over the real tokens (`temporal_sentence="tokens"`)."""
        if self.config.temporal_sentence == "cls":
            return text[:, :, 0]
        weights = text_mask[:, None, :, None].to(text.dtype)
        return (text * weights).sum(2) / weights.sum(2).clamp(min=1)

    def pixel_features(self, grounding: FrameGrounding) -> torch.Tensor:
        m8, m16, m32 = grounding.memory_maps
        return self.pixel_decoder(m32, m16, m8, grounding.stride4)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixels: torch.Tensor,
        text: TokenizedText,
        *,
        all_layers: bool | None = None,
        with_masks: bool = True,
        forced: ForcedSelections | None = None,
        record: Record | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> ReferDinoOutput:
        """pixels (B, T, 3, H, W) normalised frames (video b goes with expression b).

        all_layers: predictions for every decoder layer (training losses); defaults to `self.training`.
        pixel_mask: (B, H, W) True on batch padding (training batches are padded to a multiple of 32, as the
        official collator does), or None (no padding).
        The temporal enhancer runs at inference for any T and in training for T > 1 (as the official code).
        """
        if all_layers is None:
            all_layers = self.training
        b, t = pixels.shape[:2]
        text_feats = self.encode_text(text, record)
        frame_mask = None if pixel_mask is None else pixel_mask.repeat_interleave(t, 0)
        grounding = self.ground_video(pixels.flatten(0, 1), text_feats, text, t, forced, record, pixel_mask=frame_mask)
        return self.predict(grounding, text, b, t, all_layers=all_layers, with_masks=with_masks, forced=forced, record=record)

    def ground_video(
        self,
        images: torch.Tensor,
        text_feats: torch.Tensor,
        text: TokenizedText,
        frames_per_video: int,
        forced: ForcedSelections | None = None,
        record: Record | None = None,
        stages: list[torch.Tensor] | None = None,
        chunk: int | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> FrameGrounding:
        """Backbone (unless `stages` given) and grounding for N = B*T frames, text (B, L, C) repeated per frame.

        chunk: ground at most this many frames at a time (frames are independent here; smaller working sets are
        faster on a CPU and bound the memory). Not with `forced`, `record` or a padding mask (training and
        parity runs use one pass). pixel_mask: (N, H, W) True on batch padding, or None.
        """
        t = frames_per_video
        if stages is None:
            stages = self.encode_images(images)
        rep = lambda x: x.repeat_interleave(t, 0)  # noqa: E731
        if record is not None:
            record["backbone"] = stages  # type: ignore[assignment]
        texts = (rep(text_feats), rep(text.token_mask), rep(text.self_attention_mask), rep(text.position_ids))
        n = stages[0].shape[0]
        if not chunk or n <= chunk or forced is not None or record is not None or pixel_mask is not None:
            return self.ground(stages, *texts, forced, record, pixel_mask)
        parts = [
            self.ground([s[i : i + chunk] for s in stages], *(x[i : i + chunk] for x in texts))
            for i in range(0, n, chunk)
        ]
        return concat_groundings(parts)

    def predict(
        self,
        grounding: FrameGrounding,
        text: TokenizedText,
        b: int,
        t: int,
        *,
        all_layers: bool,
        with_masks: bool = True,
        forced: ForcedSelections | None = None,
        record: Record | None = None,
        tracker_state: TrackerState | None = None,
    ) -> ReferDinoOutput:
        temporal = not self.training or t > 1
        text_bt = grounding.enhanced_text.view(b, t, *grounding.enhanced_text.shape[1:])
        pixel = self.pixel_features(grounding) if with_masks else None
        if record is not None and pixel is not None:
            record["mask_features"] = pixel
        layers = grounding.layers if all_layers else grounding.layers[-1:]
        preds = []
        perm = None
        new_state = None
        forced_tracks = _forced_tracks(forced, len(grounding.layers))[-len(layers):]
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            q = layer.hidden.shape[1]
            pred, p, state = self.predict_layer(
                layer.hidden.view(b, t, q, -1), layer.reference.view(b, t, q, 4), text_bt, text.token_mask, pixel,
                temporal=temporal, tracker_state=tracker_state if last else None,
                forced_track=forced_tracks[i], record=record if last else None,
            )
            preds.append(pred)
            if last:
                perm, new_state = p, state
        final = preds[-1]
        k = grounding.proposal_logits.shape[1]
        interm_masks = None
        if all_layers and pixel is not None:
            # the two-stage proposals are decoded to masks too (official training), the selected encoder
            # features as queries, referenced on their fixed anchors (not on the refined proposal boxes)
            boxes = grounding.proposal_anchors
            frame_mask = text.token_mask.repeat_interleave(t, 0)
            _, interm_masks = self.mask_decoder(
                grounding.proposal_features, self.decoder.query_pos(boxes), boxes, pixel, grounding.enhanced_text,
                frame_mask,
            )
            interm_masks = interm_masks.view(b, t, k, *interm_masks.shape[-2:])
        return ReferDinoOutput(
            pred_logits=final.logits,
            pred_boxes=final.boxes,
            pred_masks=final.masks,
            aux=preds[:-1],
            interm_logits=grounding.proposal_logits.view(b, t, k, 1),
            interm_boxes=grounding.proposal_boxes.view(b, t, k, 4),
            interm_masks=interm_masks,
            interm_anchor_boxes=grounding.proposal_anchors.view(b, t, k, 4),
            selections=ForcedSelections(
                topk=None, kept=[layer.kept for layer in grounding.layers], track=perm
            ),
            tracker_state=new_state,
        )

    # ------------------------------------------------------------------ persistence (I/O lives in weights.py)
    def save_pretrained(self, directory: str, *, overwrite: bool = False) -> None:
        """Write `config.json` + `model.safetensors` into `directory` (new, empty or an earlier model folder;
        `overwrite`: also one holding other files, which are kept)."""
        from ..weights import save_pretrained

        save_pretrained(self, directory, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str | torch.device = "cpu") -> "ReferDino":
        """Build the model and load its weights strictly from any of:

        * a published model NAME (`referdino models`: `ryt_mevis_swinb`, `ryt_swinb`, ..., `demo`), fetched
          through the Hugging Face Hub cache and converted once into our cache;
        * a folder written by `save_pretrained` / `referdino convert`, or a `transformers` GroundingDINO folder;
        * a checkpoint file: official ReferDINO or GroundingDINO `.pth`, a `referdino train` checkpoint, or
          safetensors. Layout and preset (Swin-T / Swin-B, ...) are recognised from the keys and shapes.

        Files are never unpickled with code (`weights_only=True`). Modules a GroundingDINO source lacks keep a
        deterministic initialisation."""
        from ..resolve import resolve_pretrained  # resolution lives outside the model module
        from ..weights import load_state_dict_strict

        resolved = resolve_pretrained(name_or_path)
        if resolved.allow_missing:  # some modules keep their initialisation: build them for real
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = cls(resolved.config)
        else:
            with torch.device("meta"):
                model = cls(resolved.config)
            model = model.to_empty(device="cpu")
        load_state_dict_strict(model, resolved.state, allow_missing=resolved.allow_missing, source=resolved.source)
        for name, buf in model.named_buffers():
            if name.endswith("relative_position_index"):
                window = int(round(buf.shape[0] ** 0.5))
                from .swin import relative_position_index

                buf.copy_(relative_position_index(window))
        model.resolved_from = resolved.describe()  # type: ignore[assignment]
        return model.to(device).eval()
