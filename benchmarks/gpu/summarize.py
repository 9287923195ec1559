"""Collect a check.sh run into OUT/summary.json and print a short table (used by check.sh; stdlib only).

    python benchmarks/gpu/summarize.py OUT [TOTAL_SECONDS]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: frames/s targets in bf16, 1 expression, 36 frames, short side 360 (on an H100)
TARGETS = {"swint": 100.0, "swinb": 60.0}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_line(path: Path, pattern: str) -> str | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    hits = [line.strip() for line in lines if re.search(pattern, line)]
    return hits[-1] if hits else None


def summarize(out: Path, total: float | None = None) -> dict:
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    env = _read_json(out / "environment.json") or {}
    for s in steps:
        log = out / "logs" / f"{s['step']}.log"
        if s["step"].startswith("tests"):
            s["result"] = _last_line(log, r"\d+ (passed|failed|error|skipped)")
        elif s["step"].startswith("parity"):
            s["result"] = _last_line(log, r"\d+ passed, \d+ failed")
    bench = {}
    for path in sorted((out / "bench").glob("*.json")):
        r = _read_json(path)
        if r:
            bench[path.stem] = {k: r.get(k) for k in (
                "preset", "dtype", "expressions", "frames", "height", "width", "ms_per_frame", "frames_per_second",
                "peak_memory_gib", "memory_kind", "gflop_per_frame", "compiled")}
    targets = {}
    for config, target in TARGETS.items():
        r = bench.get(f"{config}_bf16_e1")
        if r and r.get("frames_per_second") is not None:
            targets[config] = {"target_fps": target, "fps": r["frames_per_second"],
                               "met": r["frames_per_second"] >= target}
    ratios = {}
    for config in TARGETS:
        a, b = bench.get(f"{config}_bf16_e1"), bench.get(f"{config}_bf16_ref_e1")
        if a and b and a.get("ms_per_frame") and b.get("ms_per_frame"):
            ratios[f"{config}_triton_speedup_vs_reference"] = b["ms_per_frame"] / a["ms_per_frame"]
        a, b = bench.get(f"{config}_bf16_e1"), bench.get(f"{config}_fp32_e1")
        if a and b and a.get("ms_per_frame") and b.get("ms_per_frame"):
            ratios[f"{config}_bf16_speedup_vs_fp32"] = b["ms_per_frame"] / a["ms_per_frame"]
    train = _read_json(out / "train_speed.json")
    summary = {
        "device_name": env.get("device_name"), "torch": env.get("torch"), "cuda": env.get("cuda"),
        "triton": env.get("triton"), "total_seconds": total,
        "steps": steps, "failed_steps": [s["step"] for s in steps if s["status"] == "failed"],
        "benchmarks": bench, "targets": targets, "ratios": ratios,
        "train_speed": None if train is None else {k: train.get(k) for k in (
            "preset", "size", "frames", "batch", "seconds_per_step", "steps_per_s", "bf16_speedup",
            "peak_memory_gib")},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def table(summary: dict) -> str:
    lines = [f"device {summary['device_name']}; torch {summary['torch']} (CUDA {summary['cuda']}); "
             f"triton {summary['triton']}; total {summary['total_seconds']} s", "",
             f"{'step':34s} {'status':8s} {'s':>7s}  result"]
    for s in summary["steps"]:
        lines.append(f"{s['step']:34s} {s['status']:8s} {s['seconds']:7.1f}  {s.get('result') or ''}")
    if summary["benchmarks"]:
        lines += ["", f"{'benchmark':28s} {'ms/frame':>9s} {'frames/s':>9s} {'peak GiB':>9s}"]
        for name, r in summary["benchmarks"].items():
            lines.append(f"{name:28s} {r['ms_per_frame']:9.2f} {r['frames_per_second']:9.1f} "
                         f"{r['peak_memory_gib']:9.2f}")
    for name, v in summary["ratios"].items():
        lines.append(f"{name}: {v:.2f}x")
    for config, t in summary["targets"].items():
        lines.append(f"target {config} bf16 >= {t['target_fps']:.0f} frames/s: {t['fps']:.1f} "
                     f"-> {'met' if t['met'] else 'NOT met'}")
    tr = summary["train_speed"]
    if tr and tr.get("seconds_per_step"):
        lines.append("train " + ", ".join(f"{k} {v:.3f} s/step" for k, v in tr["seconds_per_step"].items())
                     + (f"; peak {tr['peak_memory_gib']:.2f} GiB" if tr.get("peak_memory_gib") else ""))
    lines.append(f"failed steps: {', '.join(summary['failed_steps']) or 'none'}")
    return "\n".join(lines)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    total = float(sys.argv[2]) if len(sys.argv) > 2 else None
    print(table(summarize(out, total)))
    print(f"\nsummary: {out / 'summary.json'}")
