"""The fast formulations equal their plain references: embedding_bag deformable attention vs grid_sample
(values and gradients), and the reassociated image-text bi-attention vs the projection-first formula."""

import torch

from referdino.modeling.feature_enhancer import _CLAMP, BiAttention

from referdino.modeling.deformable_attention import ms_deform_attn_reference, ms_deform_attn_sample


def _inputs(dtype: torch.dtype, seed: int = 0, batch: int = 2, queries: int = 11):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 9), (4, 5), (2, 3), (1, 1)]
    s = sum(h * w for h, w in shapes)
    heads, dim, points = 3, 4, 2
    value = torch.randn(batch, s, heads, dim, generator=g, dtype=dtype)
    # locations slightly outside [0, 1] too: zero padding must match
    loc = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g, dtype=dtype) * 1.3 - 0.15
    attn = torch.rand(batch, queries, heads, len(shapes) * points, generator=g, dtype=dtype).softmax(-1)
    return value, shapes, loc, attn.view(batch, queries, heads, len(shapes), points)


def test_values_match_reference() -> None:
    """Inference (no gradient recorded) takes the embedding_bag path."""
    for seed in range(3):
        value, shapes, loc, attn = _inputs(torch.float32, seed)
        ref = ms_deform_attn_reference(value, shapes, loc, attn)
        with torch.no_grad():
            fast = ms_deform_attn_sample(value, shapes, loc, attn)
        assert fast.shape == ref.shape
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


def test_gradients_match_reference() -> None:
    """With gradients recorded (training) the model's sampling gives the reference's gradients."""
    value, shapes, loc, attn = _inputs(torch.float64, seed=5)
    grads = []
    for fn in (ms_deform_attn_reference, ms_deform_attn_sample):
        leaves = [t.clone().requires_grad_() for t in (value, loc, attn)]
        out = fn(leaves[0], shapes, leaves[1], leaves[2])
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        grads.append(torch.autograd.grad((out * weight).sum(), leaves))
    for ref, fast in zip(*grads):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)


def test_box_reference_single_level() -> None:
    """The mask decoder's use: one level, many points."""
    g = torch.Generator().manual_seed(3)
    value = torch.randn(3, 6 * 10, 2, 8, generator=g)
    loc = torch.rand(3, 5, 2, 1, 16, 2, generator=g)
    attn = torch.rand(3, 5, 2, 1, 16, generator=g).softmax(-1)
    torch.testing.assert_close(
        ms_deform_attn_sample(value, [(6, 10)], loc, attn), ms_deform_attn_reference(value, [(6, 10)], loc, attn),
        rtol=1e-5, atol=1e-6,
    )


def _bi_attention_reference(m: BiAttention, image, text, image_padding, text_mask):
    """GroundingDINO's formula: project every image token to embed_dim first."""
    b, nv, _ = image.shape
    q = m._heads(m.v_proj(image) * m.head_dim**-0.5)
    k = m._heads(m.l_proj(text))
    value_image = m._heads(m.values_v_proj(image))
    value_text = m._heads(m.values_l_proj(text))
    logits = q @ k.transpose(-1, -2)
    logits = (logits - logits.max()).clamp(-_CLAMP, _CLAMP)
    logits_t = logits.transpose(-1, -2)
    logits_t = (logits_t - logits_t.max(dim=-1, keepdim=True).values).clamp(-_CLAMP, _CLAMP)
    logits_t = logits_t.masked_fill(image_padding[:, None, None, :], float("-inf"))
    logits = logits.masked_fill(~text_mask[:, None, None, :], float("-inf"))
    out_image = (logits.softmax(-1) @ value_text).transpose(1, 2).reshape(b, nv, -1)
    out_text = (logits_t.softmax(-1) @ value_image).transpose(1, 2).reshape(b, text.shape[1], -1)
    return m.out_v_proj(out_image), m.out_l_proj(out_text)


def test_bi_attention_reassociation_is_exact() -> None:
    torch.manual_seed(0)
    for lora_rank in (0, 4):  # plain linears and LoRA adapters (their folded weight is used)
        m = BiAttention(32, 64, 4, lora_rank, 0.5).double()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
        image, text = torch.randn(2, 50, 32, dtype=torch.double), torch.randn(2, 7, 32, dtype=torch.double)
        padding = torch.zeros(2, 50, dtype=torch.bool)
        padding[1, 40:] = True
        text_mask = torch.ones(2, 7, dtype=torch.bool)
        text_mask[0, 5:] = False
        fast = m(image, text, padding, text_mask)
        ref = _bi_attention_reference(m, image, text, padding, text_mask)
        for a, b in zip(fast, ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        # gradients reach the same parameters with the same values
        g_fast = torch.autograd.grad(sum((o * o).sum() for o in fast), list(m.parameters()))
        g_ref = torch.autograd.grad(sum((o * o).sum() for o in ref), list(m.parameters()))
        for a, b in zip(g_fast, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
