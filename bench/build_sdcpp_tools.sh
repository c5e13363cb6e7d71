#!/usr/bin/env bash
# Build what the benchmarks and the tests need beside wanpy (bench/CMakeLists.txt), from the
# pinned, patched sd.cpp source, outside pip:
#   sd-cli            sd.cpp's own command line program (generation baselines; the frame-identity
#                     test in tests/test_bench_smoke.py)
#   wanpy-sdcpp-webm  sd.cpp's own WebM writer (bench/sdcpp_webm.cpp + media_io.cpp),
#                     the baseline of bench/bench_webm.py
#   wanpy_testhooks   test-only entry points as a Python module (bindings/testhooks.cpp), for
#                     tests/test_flash_attention.py
# into build/bench-tools (override with BUILD_DIR). None of them is part of the wheel.
#
# Usage: bench/build_sdcpp_tools.sh [extra cmake -D options, e.g. -DSD_VULKAN=ON]
# Environment: JOBS (parallel jobs, default 2), BUILD_DIR, NICE=1 to run under nice -n 19,
#              TARGETS (default "sd-cli wanpy-sdcpp-webm wanpy_testhooks"), PYTHON (the
#              interpreter the test hooks are built for, with pybind11 installed).
# The Vulkan build of the test hooks: BUILD_DIR=build/bench-tools-vulkan TARGETS=wanpy_testhooks
# bench/build_sdcpp_tools.sh -DSD_VULKAN=ON (tests/test_flash_attention.py looks there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/bench-tools}"
JOBS="${JOBS:-2}"
TARGETS="${TARGETS:-sd-cli wanpy-sdcpp-webm wanpy_testhooks}"
PYTHON="${PYTHON:-python3}"

run() {
  if [[ "${NICE:-0}" == 1 ]]; then nice -n 19 "$@"; else "$@"; fi
}

PYBIND11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" || {
  echo "error: pybind11 not found for $PYTHON (pip install pybind11)" >&2
  exit 1
}

# A build folder configured from the repository root (before bench/ had its own build) cannot
# be reconfigured from bench/: start that one afresh.
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
   ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT/bench" "$BUILD_DIR/CMakeCache.txt"; then
  echo "note: $BUILD_DIR was configured from another source folder; configuring it afresh" >&2
  rm -rf "$BUILD_DIR/CMakeCache.txt" "$BUILD_DIR/CMakeFiles"
fi

generator=()
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi

start=$(date +%s)
run cmake -S "$ROOT/bench" -B "$BUILD_DIR" "${generator[@]}" \
  -DPython_EXECUTABLE="$("$PYTHON" -c "import sys; print(sys.executable)")" \
  -Dpybind11_DIR="$PYBIND11_DIR" \
  -DCMAKE_BUILD_TYPE=Release \
  "$@"
# shellcheck disable=SC2086  # TARGETS is a space separated list
run cmake --build "$BUILD_DIR" --target $TARGETS -j"$JOBS"
end=$(date +%s)

echo "built in $((end - start)) s (configure + build, JOBS=$JOBS):"
for t in $TARGETS; do
  if [[ $t == wanpy_testhooks ]]; then  # a Python module: wanpy_testhooks.cpython-*.so
    path="$(find "$BUILD_DIR/testhooks" -maxdepth 1 -type f -name "$t.*" -print -quit 2>/dev/null || true)"
  else
    path="$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x -print -quit)"
  fi
  if [[ -z "$path" ]]; then
    echo "error: $t not found under $BUILD_DIR" >&2
    exit 1
  fi
  echo "  $t: $path"
done
