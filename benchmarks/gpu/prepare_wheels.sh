#!/usr/bin/env bash
# Run on the dev machine (it reaches PyPI), before a device call: fetches the wheels the GPU image lacks
# (PyAV, pycocotools; no dependencies: numpy is in the image) for CPython 3.12 / x86_64 Linux into
# benchmarks/gpu/wheels, and copies the official parity fixtures (outside the repository) into
# benchmarks/gpu/fixtures. Both folders are git-ignored; the device call carries them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mkdir -p "$here/wheels"
python3 -m pip download --only-binary=:all: --implementation cp --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --no-deps -d "$here/wheels" av pycocotools
src="${REFERDINO_FIXTURES:-$repo/../shared/fixtures/official}"
if [ -f "$src/caseA.npz" ]; then
    rm -rf "$here/fixtures"
    mkdir -p "$here/fixtures"
    cp -r "$src/." "$here/fixtures/"
    echo "fixtures copied from $src"
else
    echo "no fixtures at $src (set REFERDINO_FIXTURES); the parity step will be skipped on the device" >&2
fi
du -sh "$here/wheels" "$here/fixtures" 2>/dev/null || true
