"""A tiny randomly initialised SAM2 and a fake Hugging Face hub cache holding it under a real checkpoint's name,
for the SAM2 refinement tests (test_sam2_refine.py, test_app_core.py, test_refine_api.py). Nothing downloads."""

import torch

from referdino.refine import SAM2_SIZES

S = 64  # the tiny SAM2's square input


def tiny_sam2_config(num_maskmem=7, pointers=16):
    """A ~1M-parameter Sam2VideoConfig with the real model's structure (every constraint of the port kept:
    memory channels 64, hidden size a multiple of them, no global block at a stage start)."""
    from transformers import Sam2VideoConfig

    return Sam2VideoConfig(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=8, image_size=[S, S], blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                window_size_per_stage=[4, 4, 2, 2], global_attention_blocks=[3],
                window_positional_embedding_background_size=[2, 2]),
            backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=128,
            backbone_feature_sizes=[[S // 4, S // 4], [S // 8, S // 8], [S // 16, S // 16]]),
        prompt_encoder_config=dict(hidden_size=128, image_size=S, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=S, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[S // 16, S // 16],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64, num_maskmem=num_maskmem,
        max_object_pointers_in_encoder=pointers,
    )


def tiny_sam2(num_maskmem=3, pointers=4):
    from transformers import Sam2VideoModel

    torch.manual_seed(0)
    return Sam2VideoModel(tiny_sam2_config(num_maskmem, pointers)).eval()


def _fake_hub_cache(root, size="tiny"):
    """A hub cache holding a tiny random model under the name of a real SAM2 checkpoint (as snapshot_download
    leaves it)."""
    repo = SAM2_SIZES[size]
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    tiny_sam2().save_pretrained(str(snapshot))
    return snapshot


def _offline(monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
