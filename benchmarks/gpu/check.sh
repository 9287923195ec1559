#!/usr/bin/env bash
# One prepared GPU check (see README.md): install the carried wheels, then tests on CUDA, parity on CUDA,
# speed (`referdino benchmark`), training steps, the rest of the test suite; each step timed and logged under
# $OUT (default ./gpu_out); a failing step is recorded and the script goes on. Ends with $OUT/summary.json and
# a table. CHECK_QUICK=1: a reduced run on the CPU (tiny sizes, no install, CUDA-only parts skipped) to check
# the plumbing. CHECK_BUDGET_S (default 480): steps that would start after it are skipped.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT/logs" "$OUT/bench"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
QUICK="${CHECK_QUICK:-0}"
BUDGET="${CHECK_BUDGET_S:-480}"
START=$(date +%s)
STEPS="$OUT/steps.jsonl"
: > "$STEPS"
export PYTHONUNBUFFERED=1

if [ "$QUICK" = 1 ]; then
    DEV=cpu; CONFIGS="tiny"; SIZE=64; FRAMES=2; REPEATS=1; TRAIN_ARGS="--preset tiny --size 64 96 --frames 2 --batch 1 --repeats 1"
else
    DEV="${CHECK_DEVICE:-cuda}"; CONFIGS="swint swinb"; SIZE=360; FRAMES=36; REPEATS=3
    TRAIN_ARGS="--preset ytvos_swint --size 360 640 --frames 2 --batch 1 --repeats 3"
fi

# fixtures: $REFERDINO_FIXTURES, else the carried copy, else the checkout's ../shared
if [ -z "${REFERDINO_FIXTURES:-}" ]; then
    for d in benchmarks/gpu/fixtures ../shared/fixtures/official; do
        if [ -f "$d/caseA.npz" ]; then REFERDINO_FIXTURES="$(cd "$d" && pwd)"; break; fi
    done
fi
export REFERDINO_FIXTURES="${REFERDINO_FIXTURES:-}"

elapsed() { echo $(( $(date +%s) - START )); }

# step NAME CMD...: runs CMD (stdout+stderr to $OUT/logs/NAME.log), records status and seconds
step() {
    local name="$1"; shift
    local t0 t1 rc status
    if [ "$(elapsed)" -ge "$BUDGET" ]; then
        echo "== $name: skipped (budget ${BUDGET}s spent)"
        printf '{"step": "%s", "status": "skipped", "seconds": 0, "rc": null, "why": "budget"}\n' "$name" >> "$STEPS"
        return 0
    fi
    echo "== $name ($(elapsed)s elapsed)"
    t0=$(date +%s.%N)
    "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    if [ $rc -eq 0 ]; then status=ok; else status=failed; fi
    tail -n 3 "$OUT/logs/$name.log" | sed 's/^/   | /'
    echo "   -> $status (rc $rc, $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s)"
    printf '{"step": "%s", "status": "%s", "seconds": %s, "rc": %d}\n' "$name" "$status" \
        "$(awk "BEGIN{printf \"%.2f\", $t1-$t0}")" "$rc" >> "$STEPS"
    return 0
}
skip() {  # skip NAME WHY
    echo "== $1: skipped ($2)"
    printf '{"step": "%s", "status": "skipped", "seconds": 0, "rc": null, "why": "%s"}\n' "$1" "$2" >> "$STEPS"
}

# ---------------------------------------------------------------- 0. install (no index)
if [ "$QUICK" = 1 ]; then
    skip install "CHECK_QUICK: the current environment is used"
else
    step install_wheels "$PY" -m pip install --no-index --find-links benchmarks/gpu/wheels av pycocotools
    step install_package "$PY" -m pip install --no-index --no-deps -e .
fi
step environment "$PY" -c "
import torch, json
info = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(),
        'device_name': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}
try:
    import triton; info['triton'] = triton.__version__
except Exception as e: info['triton'] = None
for m in ('av', 'pycocotools', 'transformers'):
    try: __import__(m); info[m] = True
    except Exception: info[m] = False
print(json.dumps(info)); open('$OUT/environment.json', 'w').write(json.dumps(info, indent=2))
"

# ---------------------------------------------------------------- a. device tests
step tests_device env OMP_NUM_THREADS=4 "$PY" -m pytest -q -rs -p no:cacheprovider --device "$DEV" \
    tests/test_precision.py tests/test_msda_triton.py

# ---------------------------------------------------------------- b. parity on the device, fp32
if [ -n "$REFERDINO_FIXTURES" ]; then
    fixtures=$(ls "$REFERDINO_FIXTURES"/*.npz "$REFERDINO_FIXTURES"/swinb/*.npz 2>/dev/null)
    [ "$QUICK" = 1 ] && fixtures="$REFERDINO_FIXTURES/caseA.npz"
    for f in $fixtures; do
        step "parity_$(basename "$f" .npz)" "$PY" -m referdino parity --device "$DEV" "$f"
    done
else
    skip parity "no fixtures (run prepare_wheels.sh, or set REFERDINO_FIXTURES)"
fi

# ---------------------------------------------------------------- c. speed
# bench NAME ARGS...: one `referdino benchmark` run writing $OUT/bench/NAME.json
bench() {
    local name="$1"; shift
    step "bench_$name" "$PY" -m referdino benchmark --device "$DEV" --frames "$FRAMES" --size "$SIZE" \
        --repeats "$REPEATS" --json "$OUT/bench/$name.json" "$@"
}
for c in $CONFIGS; do
    bench "${c}_fp32_e1" --config "$c" --dtype fp32
    bench "${c}_bf16_e1" --config "$c" --dtype bf16 --no-flops
    if [ "$DEV" != cpu ]; then
        REFERDINO_MSDA=reference bench "${c}_bf16_ref_e1" --config "$c" --dtype bf16 --no-flops
    else
        skip "bench_${c}_bf16_ref_e1" "the Triton kernel runs on CUDA only"
    fi
    bench "${c}_bf16_e4" --config "$c" --dtype bf16 --expressions 4 --no-flops
    bench "${c}_fp32_e4" --config "$c" --dtype fp32 --expressions 4 --no-flops
done

# ---------------------------------------------------------------- d. training steps (bf16 = autocast)
step train_speed "$PY" benchmarks/train_speed.py --device "$DEV" $TRAIN_ARGS --json "$OUT/train_speed.json"

# ---------------------------------------------------------------- c'. experimental: torch.compile
if [ "$QUICK" = 1 ]; then
    skip bench_compile "CHECK_QUICK"
else
    bench swint_bf16_compile_e1 --config swint --dtype bf16 --no-flops --compile
fi

# ---------------------------------------------------------------- a'. the rest of the suite (CPU), in what is left
left=$(( BUDGET - $(elapsed) - 15 ))
if [ "$QUICK" = 1 ]; then
    skip tests_rest "CHECK_QUICK"
elif [ "$left" -gt 30 ]; then
    step tests_rest timeout "$left" env OMP_NUM_THREADS=2 "$PY" -m pytest -q -p no:cacheprovider \
        --ignore=tests/test_precision.py --ignore=tests/test_msda_triton.py tests
else
    skip tests_rest "budget"
fi

# ---------------------------------------------------------------- e. summary
"$PY" benchmarks/gpu/summarize.py "$OUT" "$(elapsed)"
