"""Parity with the official implementation on recorded fixtures (`referdino parity FIXTURE.npz`).

The fixture stores inputs and outputs of the official code run with deterministic weights drawn by a
named rule from the official state-dict names. We draw the same official-named weights, convert them with
our official converter, run our model with the fixture's discrete selections forced (top-900, prunings,
tracking), and compare every stored array.

The preset is read from the fixture (`config`; absent = `ytvos_swint`); `--config` overrides it. Metadata entries
(caption, fill rule, ...) are not compared; entries this version cannot map to one of our arrays are reported as
skipped, never as failures. Training-step fixtures are a different kind (`fixture_kind`), checked by
`referdino parity --train`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Container, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .config import PRESETS, ReferDinoConfig, get_preset
from .convert.official import alias_target, convert_official, official_key_shapes
from .modeling.outputs import ForcedSelections
from .modeling.referdino import ReferDino
from .modeling.swin import relative_position_index
from .processing.postprocess import best_query, binary_masks
from .processing.text import tokenize
from .weights import load_state_dict_strict

REL_TOL = 2e-4  # float32 arrays: max|diff| <= REL_TOL * max|ref| + ABS_TOL
REL_TOL_F16 = 2e-3  # arrays stored in float16
ABS_TOL = 1e-6
MASK_FLIP_TOL = 1e-3  # fraction of eval_binary_masks pixels allowed to flip


logger = logging.getLogger(__name__)

DEFAULT_PRESET = "ytvos_swint"  # what a fixture without a `config` entry was recorded with

FORWARD = "forward"
TRAIN = "train"
#: Entries that only a training-step fixture records (losses, matcher decisions, gradients).
TRAIN_MARKERS = ("loss_total", "loss_names", "loss_values", "loss_weights", "match_set_names", "grad_norm_names",
                 "grad_global_norm")
#: Non-array entries describing the case; never compared.
METADATA_KEYS = frozenset({"caption", "expression", "config", "fill_rule", "fill_scales"})
#: Inputs of the forward; used, not compared.
INPUT_KEYS = frozenset({"pixels"})

SKIPPED_UNKNOWN = "skipped (unknown key)"


class FixtureError(ValueError):
    pass


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def fixture_kind(data: Container[str]) -> str:
    """`"train"` for a training-step fixture (it records losses and gradients), else `"forward"`.

    `data` is anything that answers `key in data` for the entry names: a dict, an open `np.load` file, a list."""
    return TRAIN if any(key in data for key in TRAIN_MARKERS) else FORWARD


_WRONG_KIND = {
    TRAIN: "{path} is a training-step fixture (it records losses and gradients); "
    "check it with `referdino parity --train {path}`",
    FORWARD: "{path} is a forward fixture (it records one inference pass, no losses or gradients); "
    "check it with `referdino parity {path}`",
}


def require_fixture_kind(path: object, data: Container[str], expected: str) -> None:
    """Raise a one-line FixtureError naming the right command when `data` is not a fixture of kind `expected`."""
    if expected not in _WRONG_KIND:
        raise ValueError(f"unknown fixture kind {expected!r} (use {FORWARD!r} or {TRAIN!r})")
    kind = fixture_kind(data)
    if kind != expected:
        raise FixtureError(_WRONG_KIND[kind].format(path=path))


def load_fixture(path: str | os.PathLike) -> dict[str, np.ndarray | None]:
    """Every entry of an `.npz` fixture, in file order (None for an entry that cannot be read without pickle).

    One-line FixtureError when the file cannot be read, is not an `.npz` archive or has no `pixels`."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, EOFError) as exc:
        raise FixtureError(f"cannot read fixture {path}: {_one_line(exc)}") from None
    except ValueError:  # neither an .npz nor an .npy file (numpy then refuses to unpickle it)
        raise FixtureError(f"cannot read fixture {path}: not an .npz archive") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise FixtureError(f"cannot read fixture {path}: not an .npz archive (a single array)")
    data: dict[str, np.ndarray | None] = {}
    with loaded:
        for key in loaded.files:
            try:
                data[key] = loaded[key]
            except ValueError:  # pickled object arrays
                data[key] = None
            except Exception as exc:  # corrupt archive member
                raise FixtureError(f"cannot read fixture {path}: entry {key!r}: {_one_line(exc)}") from None
    if "pixels" not in data:
        raise FixtureError(f"{path} is not a parity fixture (no `pixels` entry)")
    return data


def _preset_name(value: np.ndarray | None) -> str:
    if value is None or np.asarray(value).dtype.kind not in "US" or np.asarray(value).size != 1:
        raise FixtureError("the fixture's `config` entry is not a preset name")
    name = np.asarray(value).reshape(()).item()
    name = name.decode() if isinstance(name, bytes) else str(name)
    name = os.path.basename(name.strip())  # also accept the official file name, configs/ytvos_swinb.yaml
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return name


def resolve_preset(
    data: Mapping[str, object], override: str | None = None, path: object = "fixture"
) -> tuple[str, str]:
    """The preset to build for a fixture and where it came from: `override` (`--config`) when given, else the
    fixture's `config` entry, else `ytvos_swint`. A disagreement is logged as a warning; an unknown name in the
    file is a one-line FixtureError (unless overridden)."""
    recorded = _preset_name(data["config"]) if "config" in data else None
    if override is not None:
        get_preset(override)  # unknown name: ValueError
        if recorded is None or recorded == override:
            return override, "--config"
        logger.warning("%s records preset %s but --config %s was given; using %s", path, recorded, override, override)
        return override, f"--config, overriding the fixture's {recorded}"
    if recorded is None:
        return DEFAULT_PRESET, "default: the fixture has no `config` entry"
    if recorded not in PRESETS:
        raise FixtureError(
            f"{path} records an unknown preset {recorded!r} in its `config` entry "
            f"(known: {', '.join(sorted(PRESETS))}; --config overrides it)"
        )
    return recorded, "from the fixture"


def fill_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The `crc32-normal-v1` rule: deterministic float32 values for the official key `name`."""
    x = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(shape)
    if len(shape) >= 2:
        x = x / math.sqrt(math.prod(shape[1:]))
    elif name.endswith("weight"):
        x = 1 + 0.1 * x
    else:
        x = 0.1 * x
    return x.astype(np.float32)


def filled_official_state_dict(
    config: ReferDinoConfig, scales: dict[str, float] | None = None
) -> dict[str, torch.Tensor]:
    """Official-named state dict of `config` (adapters unmerged) filled by the rule; shared tensors drawn once
    with their first key, then scaled by `scales[first_key]`."""
    scales = scales or {}
    with torch.device("meta"):
        skeleton = ReferDino(config.with_merged_lora(False))
    shapes = official_key_shapes(skeleton)
    state: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name.endswith("relative_position_index"):
            state[name] = relative_position_index(int(round(math.sqrt(shape[0]))))
        elif alias_target(name) is None:
            value = fill_value(name, shape)
            if name in scales:
                value = value * np.float32(scales[name])
            state[name] = torch.from_numpy(value)
    for name in shapes:
        target = alias_target(name)
        if target is not None:
            state[name] = state[target]
    unknown = set(scales) - set(state)
    if unknown:
        raise FixtureError(f"fill_scales names keys this model does not have: {sorted(unknown)}")
    return state


def build_model_from_fixture(data: dict, config: ReferDinoConfig) -> ReferDino:
    rule = str(data["fill_rule"])
    if rule != "crc32-normal-v1":
        raise FixtureError(f"unknown fill_rule {rule!r} (this version knows crc32-normal-v1)")
    try:
        scales = json.loads(str(data["fill_scales"]))
    except json.JSONDecodeError as exc:
        raise FixtureError(f"fill_scales is not a JSON object: {_one_line(exc)}") from None
    if not isinstance(scales, dict):
        raise FixtureError("fill_scales is not a JSON object {first_key: factor}")
    official = filled_official_state_dict(config, scales)
    ours, _ = convert_official(official, config)
    merged = config.with_merged_lora()
    model = ReferDino(merged).eval()
    load_state_dict_strict(model, ours, source="converted fixture weights")
    return model


@dataclass
class Comparison:
    key: str
    max_abs: float
    rel: float
    tol: float
    ok: bool
    note: str = ""
    skipped: bool = False  # not compared (an entry this version cannot map); never a failure


def _skipped(key: str, why: str = "") -> Comparison:
    return Comparison(key, float("nan"), float("nan"), float("nan"), True, why, skipped=True)


class ParityResults(list):
    """The comparisons of one fixture (a list of Comparison) plus the preset that was built."""

    def __init__(self, items=(), preset: str = DEFAULT_PRESET, preset_source: str = ""):
        super().__init__(items)
        self.preset = preset
        self.preset_source = preset_source


def _slice_channels(key: str, arr: torch.Tensor, dim: int) -> torch.Tensor:
    m = re.search(r"_c(\d+)to(\d+)", key)
    if m:
        arr = arr.narrow(dim, int(m.group(1)), int(m.group(2)) - int(m.group(1)))
    return arr


def _ours_for(key: str, rec: dict, out, starts: list[int]) -> torch.Tensor | None:
    base = re.sub(r"(_c\d+to\d+)?(_f16)?$", "", key)
    if key.startswith("backbone_l") and not key.startswith("backbone_shape"):
        s = int(key[len("backbone_l")])
        return _slice_channels(key, rec["backbone"][s], 1)
    if base.startswith("backbone_shape_l"):
        return torch.tensor(rec["backbone"][int(base[-1])].shape)
    if base == "enc_memory_l0":
        return _slice_channels(key, rec["memory"][:, : starts[1]], 2)
    if base == "enc_memory_l123":
        return _slice_channels(key, rec["memory"][:, starts[1] :], 2)
    if base == "level_start_index":
        return torch.tensor(starts[:-1])
    if base == "mask_features_shape":
        return torch.tensor(rec["mask_features"].shape)
    if base == "mask_features":
        return _slice_channels(key, rec["mask_features"], 1)
    m = re.fullmatch(r"dec_hs(\d)", base)
    if m:
        return _slice_channels(key, rec[f"dec_hs{m.group(1)}"], 2)
    if base == "dec_hs_last":
        last = max(int(k[len("dec_hs") :]) for k in rec if re.fullmatch(r"dec_hs\d+", k))
        return rec[f"dec_hs{last}"]
    m = re.fullmatch(r"prune(\d)_kept_abs", base)
    if m:
        idx = rec["enc_topk_indices"]
        idx = torch.arange(idx.shape[1]).expand_as(idx)
        for i in range(int(m.group(1)) + 1):
            idx = torch.gather(idx, 1, rec[f"prune{i}_kept_rel"])
        return idx
    if base in ("temporal_in_hs", "temporal_in_sent", "temporal_out"):
        return rec[base][0]
    if base == "pred_logits":
        return out.pred_logits
    if base == "pred_boxes":
        return out.pred_boxes
    if base == "pred_masks":
        return out.pred_masks
    if base == "track_perm":
        return out.selections.track[0]
    if base == "eval_best_query":
        return torch.tensor(best_query(out.pred_logits[0]))
    if base == "eval_binary_masks":
        j = best_query(out.pred_logits[0])
        return binary_masks(out.pred_masks[0, :, j], tuple(rec["image_size"]))
    if base in rec:
        return rec[base]
    return None


def _required_keys(n_layers: int) -> list[str]:
    keys = ["pixels", "caption", "fill_rule", "fill_scales", "enc_topk_indices", "enc_topk_scores", "track_perm"]
    return keys + [f"prune{i}_{what}" for i in range(n_layers) for what in ("kept_rel", "gate")]


def _to_cpu(x):
    """Tensors in nested dicts / lists / tuples moved to the CPU (the recorded intermediates of a device run)."""
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # namedtuple
        return type(x)(*(_to_cpu(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


@contextlib.contextmanager
def _full_fp32(device: torch.device):
    """On CUDA, float32 matmuls and convolutions in full precision (no TF32, which cuDNN allows by default) for the
    duration: the tolerances are float32 ones."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def run_parity(
    path: str | os.PathLike, config_name: str | None = None, threads: int | None = None,
    device: str | torch.device = "cpu",
) -> ParityResults:
    """Compare our model with one forward fixture. `config_name` overrides the fixture's preset (None: from the
    file). `device`: where the model and its inputs run (float32, TF32 off on CUDA); the comparison is on the
    CPU with the same tolerances. Raises FixtureError (one line) for a file that is not a forward fixture."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: no CUDA device is available")
    data = load_fixture(path)
    require_fixture_kind(path, data, FORWARD)
    preset, source = resolve_preset(data, config_name, path)
    config = get_preset(preset)
    missing = [k for k in _required_keys(config.dec_layers) if data.get(k) is None]
    if missing:
        raise FixtureError(f"{path} lacks forward-fixture entries needed by preset {preset}: {', '.join(missing)}")
    if threads:
        torch.set_num_threads(threads)
    model = build_model_from_fixture(data, config).to(dev)
    n_layers = model.config.dec_layers
    forced = ForcedSelections(
        topk=torch.from_numpy(data["enc_topk_indices"]).to(dev),
        kept=[torch.from_numpy(data[f"prune{i}_kept_rel"]).to(dev) for i in range(n_layers)],
        track=torch.from_numpy(data["track_perm"])[None].to(dev),
    )
    text = tokenize([str(data["caption"])], model.config.text.max_text_len)  # free-running tokenizer
    rec: dict = {
        "input_ids": text.input_ids,
        "token_type_ids": torch.zeros_like(text.input_ids),
        "attention_mask": text.token_mask.long(),
        "text_self_attention_mask": text.self_attention_mask,
        "position_ids": text.position_ids,
    }
    pixels = torch.from_numpy(data["pixels"])
    with torch.no_grad(), _full_fp32(dev):
        out = model(pixels[None].to(dev), text.to(dev), forced=forced, record=rec)
    if dev.type != "cpu":
        rec = _to_cpu(rec)
    rec["image_size"] = pixels.shape[-2:]
    shapes = rec["spatial_shapes"].tolist()
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    results = ParityResults(preset=preset, preset_source=source)
    for key, value in data.items():
        if key in INPUT_KEYS or key in METADATA_KEYS:
            continue
        if value is None:
            results.append(_skipped(key, "unreadable without pickle"))
            continue
        if value.dtype.kind not in "biuf":
            results.append(_skipped(key, f"non-numeric, dtype {value.dtype}"))
            continue
        try:
            ours = _ours_for(key, rec, out, starts)
        except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
            ours, why = None, f"{type(exc).__name__}: {_one_line(exc)}"
        else:
            why = ""
        if not isinstance(ours, torch.Tensor):
            results.append(_skipped(key, why))
            continue
        try:
            results.append(_compare_arrays(key, ours, value))
        except (TypeError, ValueError, RuntimeError) as exc:
            results.append(Comparison(key, float("nan"), float("nan"), 0.0, False, f"cannot compare: {_one_line(exc)}"))
    results += _selection_consistency(data, rec, n_layers)
    return results


def _compare_arrays(key: str, ours: torch.Tensor, value: np.ndarray) -> Comparison:
    ref = torch.from_numpy(np.ascontiguousarray(value))
    ours = ours.detach().cpu()
    ours = ours.reshape(ref.shape) if ours.numel() == ref.numel() else ours
    if ours.shape != ref.shape:
        return Comparison(key, float("nan"), float("nan"), 0.0, False, f"shape {tuple(ours.shape)}")
    return _compare(key, ours, ref)


def _compare(key: str, ours: torch.Tensor, ref: torch.Tensor) -> Comparison:
    if ref.dtype == torch.bool and key == "eval_binary_masks":
        flips = (ours != ref).float().mean().item()
        return Comparison(key, flips, flips, MASK_FLIP_TOL, flips <= MASK_FLIP_TOL, "fraction of flipped pixels")
    if not ref.is_floating_point():
        diff = (ours.long() != ref.long()).sum().item()
        return Comparison(key, float(diff), float(diff), 0.0, diff == 0, "exact (forced)" if "kept" in key or key in ("enc_topk_indices", "track_perm") else "exact")
    return close_comparison(key, ours, ref, REL_TOL_F16 if key.endswith("_f16") else REL_TOL)


def close_comparison(
    key: str, ours: torch.Tensor, ref: torch.Tensor | np.ndarray, rel: float, abs_tol: float = ABS_TOL, note: str = ""
) -> Comparison:
    """Float arrays: passes when max|ours - ref| <= rel * max|ref| + abs_tol (compared in float32)."""
    ref32 = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref).float()
    ours32 = ours.detach().float().reshape(ref32.shape)
    max_abs = (ours32 - ref32).abs().max().item() if ref32.numel() else 0.0
    scale = ref32.abs().max().item() if ref32.numel() else 0.0
    tol = rel * scale + abs_tol
    return Comparison(key, max_abs, max_abs / max(scale, 1e-30), tol, bool(max_abs <= tol), note)


def _selection_consistency(data: dict, rec: dict, n_layers: int) -> list[Comparison]:
    """Free-running selections must be tie-consistent: our own top-k, scored with the reference scores,
    gives the reference top-k values within tolerance."""
    out = []
    ref_scores = torch.from_numpy(data["enc_topk_scores"])
    k = data["enc_topk_indices"].shape[1]
    ours_idx = rec["enc_topk_scores"].topk(k, dim=1).indices
    got = torch.gather(ref_scores, 1, ours_idx)
    want = ref_scores.topk(k, dim=1).values
    err = (got - want).abs().max().item()
    tol = REL_TOL * ref_scores.abs().max().item() + ABS_TOL
    out.append(Comparison("free-running top-k (tie-consistent)", err, err / ref_scores.abs().max().item(), tol, err <= tol))
    for i in range(n_layers):
        ref_gate = torch.from_numpy(data[f"prune{i}_gate"])
        kk = data[f"prune{i}_kept_rel"].shape[1]
        got = torch.gather(ref_gate, 1, rec[f"prune{i}_gate"].topk(kk, dim=1).indices).sort(1).values
        want = ref_gate.topk(kk, dim=1).values.sort(1).values
        err = (got - want).abs().max().item()
        tol = REL_TOL * ref_gate.abs().max().item() + ABS_TOL
        out.append(Comparison(f"free-running prune{i} (tie-consistent)", err, err / ref_gate.abs().max().item(), tol, err <= tol))
    return out


def format_report(path: str | os.PathLike, results: list[Comparison]) -> str:
    header = f"parity {path}"
    preset = getattr(results, "preset", None)
    if preset:
        header += f"  (preset {preset}; {results.preset_source})" if results.preset_source else f"  (preset {preset})"
    lines = [header, f"{'array':44s} {'max abs err':>12s} {'rel err':>10s} {'tolerance':>10s}  result"]
    compared = [r for r in results if not r.skipped]
    skipped = [r for r in results if r.skipped]
    for r in compared:
        lines.append(
            f"{r.key:44s} {r.max_abs:12.3e} {r.rel:10.2e} {r.tol:10.2e}  {'ok' if r.ok else 'FAIL'}"
            + (f"  ({r.note})" if r.note else "")
        )
    for r in skipped:
        lines.append(f"{r.key:44s} {SKIPPED_UNKNOWN}" + (f"  ({r.note})" if r.note else ""))
    failed = [r for r in compared if not r.ok]
    summary = f"{len(compared) - len(failed)} passed, {len(failed)} failed"
    if skipped:
        summary += f", {len(skipped)} skipped (unknown key)"
    lines.append(summary)
    return "\n".join(lines)
