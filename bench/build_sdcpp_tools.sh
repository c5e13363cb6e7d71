#!/usr/bin/env bash
# Build the bench-only stable-diffusion.cpp tools from the pinned source, outside pip:
#   sd-cli            sd.cpp's own command line program (generation baselines)
#   wanpy-sdcpp-webm  sd.cpp's own WebM writer (bench/sdcpp_webm.cpp + media_io.cpp),
#                     the baseline of bench/bench_webm.py
# into build/bench-tools (override with BUILD_DIR). Neither is part of the wheel.
#
# Usage: bench/build_sdcpp_tools.sh [extra cmake -D options, e.g. -DSD_VULKAN=ON]
# Environment: JOBS (parallel jobs, default 2), BUILD_DIR, NICE=1 to run under nice -n 19,
#              TARGETS (default "sd-cli wanpy-sdcpp-webm").
# The configure step warns that wanpy is meant to be built by pip; that is expected here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/bench-tools}"
JOBS="${JOBS:-2}"
TARGETS="${TARGETS:-sd-cli wanpy-sdcpp-webm}"
PYTHON="${PYTHON:-python3}"

run() {
  if [[ "${NICE:-0}" == 1 ]]; then nice -n 19 "$@"; else "$@"; fi
}

PYBIND11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" || {
  echo "error: pybind11 not found for $PYTHON (pip install pybind11)" >&2
  exit 1
}

generator=()
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi

start=$(date +%s)
run cmake -S "$ROOT" -B "$BUILD_DIR" "${generator[@]}" \
  -DWANPY_BUILD_SD_CLI=ON \
  -DPython_EXECUTABLE="$("$PYTHON" -c "import sys; print(sys.executable)")" \
  -Dpybind11_DIR="$PYBIND11_DIR" \
  -DCMAKE_BUILD_TYPE=Release \
  "$@"
# shellcheck disable=SC2086  # TARGETS is a space separated list
run cmake --build "$BUILD_DIR" --target $TARGETS -j"$JOBS"
end=$(date +%s)

echo "built in $((end - start)) s (configure + build, JOBS=$JOBS):"
for t in $TARGETS; do
  path="$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x -print -quit)"
  if [[ -z "$path" ]]; then
    echo "error: $t not found under $BUILD_DIR" >&2
    exit 1
  fi
  echo "  $t: $path"
done
