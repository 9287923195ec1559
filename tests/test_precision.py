"""Reduced precision (`--dtype`, `referdino.precision`): the dtype policy, bf16 end to end, and its accuracy
against fp32 on the embedded demo model and on the official fixture model.

The accuracy bounds were measured on 2026-12-05 (benchmarks/RESULTS.md, "Reduced precision") and are asserted
with margin; `pytest tests/test_precision.py -s` prints the figures."""

import copy

import numpy as np
import pytest
import torch

from referdino import ReferDino, get_preset, precision
from referdino.cli import main
from referdino.precision import cast_model, describe, resolve_dtype


# ---------------------------------------------------------------- policy
@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has the given /proc/cpuinfo flags (and, when none, PyTorch's probe says `probe`)."""

    def set_flags(flags, probe=False):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(precision, "_torch_cpu_bf16", lambda: probe)

    return set_flags


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_auto_picks_bf16_on_a_cpu_with_bf16_matrix_instructions(cpu_flags, flag):
    cpu_flags({"sse2", "avx2", "avx512f", flag})
    dtype, why = resolve_dtype("auto", "cpu")
    assert dtype == torch.bfloat16 and flag in why and why.startswith("auto")
    assert resolve_dtype(None, "cpu")[0] == torch.bfloat16


def test_auto_picks_fp32_on_a_cpu_without_them(cpu_flags):
    cpu_flags({"sse2", "avx2", "fma", "avx512f"}, probe=True)  # flags known: the probe is not consulted
    dtype, why = resolve_dtype("auto", "cpu")
    assert dtype == torch.float32 and "no bf16 matrix instructions" in why
    line = describe(dtype, why)
    assert line.startswith("precision: fp32 (auto:") and "\n" not in line


def test_auto_without_cpuinfo_falls_back_to_the_torch_probe(cpu_flags):
    cpu_flags(set(), probe=True)
    assert resolve_dtype("auto", "cpu")[0] == torch.bfloat16
    cpu_flags(set(), probe=False)
    assert resolve_dtype("auto", "cpu")[0] == torch.float32


def test_explicit_dtypes_and_names(cpu_flags):
    cpu_flags({"avx2"})
    assert resolve_dtype("fp32", "cpu") == (torch.float32, "requested")
    dtype, why = resolve_dtype("bf16", "cpu")
    assert dtype == torch.bfloat16 and "slower than fp32" in why  # allowed, with a warning in the reason
    assert resolve_dtype(torch.float16, "cpu")[0] == torch.float16
    assert resolve_dtype("bfloat16", "cpu")[0] == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")


def test_auto_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto", "cuda")[0] == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU X")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **k: True)
    assert resolve_dtype("auto", "cuda:0") == (torch.bfloat16, "auto: GPU X supports bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **k: False)
    assert resolve_dtype("auto", "cuda")[0] == torch.float32


# ---------------------------------------------------------------- bf16 end to end (tiny preset, random weights)
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ReferDino(get_preset("tiny")).eval()


def _frames(n=4, h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def test_bf16_model_runs_and_returns_float32_predictions(tiny, device):
    """On `--device` (default cpu; `pytest --device cuda` runs it on the GPU)."""
    from referdino.processing.text import tokenize

    model = cast_model(copy.deepcopy(tiny).to(device), torch.bfloat16)
    assert model.dtype == torch.bfloat16 and precision.model_dtype(model) == torch.bfloat16
    text = tokenize(["the red ball", "a dog"], model.config.text.max_text_len).to(device)
    pixels = torch.randn(2, 3, 3, 48, 80, device=device)  # float32 frames: the model casts them
    with torch.inference_mode():
        out = model(pixels, text, all_layers=False)
    for t in (out.pred_logits, out.pred_boxes, out.pred_masks):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
    assert out.tracker_state.memory.dtype == torch.float32  # the tracker is a float32 island


def test_segmenter_dtype(tiny):
    import copy

    from referdino.inference.segmenter import Segmenter

    frames = _frames()
    ref = Segmenter(tiny, dtype="fp32").segment(frames, ["a cat"], short_side=48)
    low_segmenter = Segmenter(copy.deepcopy(tiny), dtype="bf16")
    assert low_segmenter.model.dtype == torch.bfloat16 and tiny.dtype == torch.float32
    low = low_segmenter.segment(frames, ["a cat"], short_side=48)
    assert low.expressions[0].masks.shape == ref.expressions[0].masks.shape
    assert np.allclose(low.expressions[0].scores, ref.expressions[0].scores, atol=0.05)
    assert Segmenter(tiny, dtype=None).dtype == torch.float32  # None keeps the model's own dtype
    with pytest.raises(ValueError, match="unknown dtype"):
        Segmenter(tiny, dtype="int4")


def test_segment_cli_prints_the_choice(tiny, tmp_path, capsys):
    ckpt = tmp_path / "tiny"
    tiny.save_pretrained(str(ckpt))
    image = tmp_path / "frame.png"
    from PIL import Image

    Image.fromarray(_frames(1)[0]).save(image)
    code = main(["segment", str(image), "--text", "a cat", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                 "--short-side", "48", "--no-progress", "--no-video", "--dtype", "bf16"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "precision: bf16 (requested" in out


def test_segment_cli_rejects_unknown_dtype(tmp_path):
    with pytest.raises(SystemExit):
        main(["segment", "x.png", "--text", "a", "--out", str(tmp_path / "o"), "--dtype", "int8"])


def test_benchmark_bf16_counts_flops_and_compares(capsys):
    from referdino.benchmark import run_benchmark

    r = run_benchmark("tiny", frames=2, size=64, repeats=1, dtype="bf16", baseline="fp32")  # crashed in FLOPs
    assert r.dtype == "bf16" and r.precision == "weights" and r.gflop_per_frame > 0 and r.floor_ms_per_frame > 0
    assert r.baseline_dtype == "fp32" and r.speedup == pytest.approx(r.baseline_ms_per_frame / r.ms_per_frame)
    a = run_benchmark("tiny", frames=2, size=64, repeats=1, dtype="bf16", use_autocast=True)
    assert a.precision == "autocast" and a.gflop_per_frame == pytest.approx(r.gflop_per_frame)
    assert main(["benchmark", "--config", "tiny", "--frames", "1", "--size", "64", "--repeats", "1", "--dtype",
                 "auto", "--no-flops"]) == 0
    assert "precision: " in capsys.readouterr().out


# ---------------------------------------------------------------- accuracy against fp32
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_bf16_accuracy_on_the_demo_model():
    """Embedded demo model on the demo clip (12 frames, 8 expressions), bf16 vs fp32, as a user runs it.

    Measured 2026-12-06 with the model of the 60-minute learning proof + 40 video minutes: fp32 static 0.861 /
    motion 0.755; bf16 static 0.792 / motion 0.673, so bf16 still meets the demo targets (0.70 / 0.60). This
    model is more sensitive to bf16 than the one before (scores within 0.109 then, up to 0.36-0.50 now): it
    prunes to distinct boxes, a greedy walk over near-tied gate scores that rounding can redirect (as embedded,
    bf16 chose another track for 2 of 8 expressions, J&F 0.808 -> 0.733; with the official top-k both sides
    keep the same queries but scores still differ by up to 0.36, 0.22 of it without its motion head). The tight
    numerical bounds stay on the official fixture model (next test); here: the targets hold, at most 2 of 8
    choices move, and the J&F drops by at most 0.1."""
    from referdino.demo_model import demo_model_path
    from referdino.evaluation.metrics import video_jf
    from referdino.inference.segment import segment_frames
    from referdino.synth import generate_clip

    path = demo_model_path()
    assert path is not None, "the demo model is not installed"
    m32 = ReferDino.from_pretrained(str(path))
    m16 = cast_model(copy.deepcopy(m32), torch.bfloat16)
    clip = generate_clip(2024, name="demo", frames=12, objects=4)
    exprs = [e.text for e in clip.expressions]
    frames = list(zip(clip.frame_names, clip.frames))
    side = min(clip.frames.shape[1:3])
    r32, r16 = (segment_frames(m, iter(frames), exprs, window=len(frames), short_side=side) for m in (m32, m16))
    track_iou, frame_iou, same, score_diff, jf = [], [], 0, 0.0, {32: [], 16: []}
    for k, e in enumerate(clip.expressions):
        a, b = r32.expressions[k], r16.expressions[k]
        same += a.queries == b.queries
        track_iou.append(_iou(a.masks, b.masks))
        frame_iou += [_iou(x, y) for x, y in zip(a.masks, b.masks)]
        score_diff = max(score_diff, float(np.abs(a.scores - b.scores).max()))
        for bits, r in ((32, a), (16, b)):
            j, f = video_jf(r.masks, clip.expression_mask(e))
            jf[bits].append((j + f) / 2)
    good = float(np.mean(np.array(frame_iou) >= 0.9))
    print(f"\ndemo model bf16 vs fp32: same query {same}/{len(exprs)}; track IoU mean {np.mean(track_iou):.4f} "
          f"min {min(track_iou):.4f}; frames with IoU >= 0.9: {good:.3f}; max score diff {score_diff:.4f}; "
          f"J&F fp32 {np.mean(jf[32]):.4f} bf16 {np.mean(jf[16]):.4f}")
    kinds = [e.kind for e in clip.expressions]
    per_kind = {k: float(np.mean([x for x, kind in zip(jf[16], kinds) if kind == k])) for k in ("static", "motion")}
    print(f"bf16 J&F by kind: {per_kind}")
    assert per_kind["static"] >= 0.70 and per_kind["motion"] >= 0.60
    assert same >= len(exprs) - 2
    assert np.mean(jf[32]) - np.mean(jf[16]) <= 0.1


def test_bf16_accuracy_on_the_official_fixture_model(official_fixtures, device):
    """caseA (Swin-T, 3 frames 224x320, the fixture's deterministic weights), bf16 vs fp32, both on `--device`
    (default cpu; `pytest --device cuda` compares the GPU's bf16 with its fp32). Measured on the CPU: with the
    official selections forced, IoU of the selected track 0.954-0.967 and max |logit diff| 0.37-0.79 (of logits up
    to 47); free-running (bf16 makes its own top-k, pruning and tracking choices, which are near-ties with these
    weights), the same query is selected and its masks have IoU 0.867-0.889."""
    from referdino.modeling.outputs import ForcedSelections
    from referdino.parity import build_model_from_fixture, load_fixture, resolve_preset
    from referdino.processing.postprocess import best_query, binary_masks
    from referdino.processing.text import tokenize

    data = load_fixture(official_fixtures / "caseA.npz")
    preset, _ = resolve_preset(data)
    m32 = build_model_from_fixture(data, get_preset(preset)).requires_grad_(False).to(device)
    m16 = cast_model(copy.deepcopy(m32), torch.bfloat16)
    text = tokenize([str(data["caption"])], m32.config.text.max_text_len).to(device)
    pixels = torch.from_numpy(data["pixels"])[None].to(device)
    size = tuple(pixels.shape[-2:])
    forced = ForcedSelections(
        topk=torch.from_numpy(data["enc_topk_indices"]).to(device),
        kept=[torch.from_numpy(data[f"prune{i}_kept_rel"]).to(device) for i in range(m32.config.dec_layers)],
        track=torch.from_numpy(data["track_perm"])[None].to(device),
    )
    figures = {}
    with torch.inference_mode():
        for name, selections in (("forced", forced), ("free", None)):
            o32, o16 = (m(pixels, text, forced=selections) for m in (m32, m16))
            q32, q16 = best_query(o32.pred_logits[0]), best_query(o16.pred_logits[0])
            iou = _iou(binary_masks(o32.pred_masks[0, :, q32], size).cpu().numpy(),
                       binary_masks(o16.pred_masks[0, :, q16], size).cpu().numpy())
            dlogit = (o32.pred_logits - o16.pred_logits).abs().max().item()
            figures[name] = (q32, q16, iou, dlogit, o32.pred_logits.abs().max().item())
    print("\nfixture caseA bf16 vs fp32: " + "; ".join(
        f"{k}: query {a} / {b}, selected-track IoU {i:.4f}, max |logit diff| {d:.3f} (max |logit| {s:.1f})"
        for k, (a, b, i, d, s) in figures.items()))
    q32, q16, iou, dlogit, scale = figures["forced"]
    assert q32 == q16 and iou >= 0.9 and dlogit <= 0.05 * scale
    q32, q16, iou, _, _ = figures["free"]
    assert q32 == q16 and iou >= 0.75
