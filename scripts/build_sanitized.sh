#!/usr/bin/env bash
# Build wanpy._core (sd.cpp and ggml included) with AddressSanitizer and UndefinedBehaviorSanitizer,
# in its own build folder (build/asan) and its own virtual environment (.venv-asan, both git-ignored),
# so the normal build in build/{wheel_tag} is left alone. CPU backend; add e.g. -DSD_VULKAN=ON to
# WANPY_ASAN_CMAKE_ARGS for another one.
#
#   bash scripts/build_sanitized.sh            # build and install into .venv-asan (a full build: ~30 min on 2 cores)
#   bash scripts/build_sanitized.sh --test     # then run the core tests under the sanitizers
#   bash scripts/build_sanitized.sh --test tests/test_loras.py -k shape   # or these pytest arguments
#
# The default selection leaves out test_preflight's measured-against-real-runs grid
# (test_predicted_buffers_equal_what_sdcpp_allocates): under the sanitizers each of its real
# generations takes minutes; the same native code runs in the pipeline and reliability tests.
#
# Running anything with it by hand: the Python interpreter is not instrumented, so the ASan runtime
# must be loaded first, and CPython's own allocations would drown the report in "leaks":
#
#   LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)" \
#   ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 GGML_NO_BACKTRACE=1 \
#   .venv-asan/bin/python -m pytest -m "not vulkan" tests/test_foundation.py tests/test_preflight.py \
#       tests/test_pipeline.py tests/test_reliability.py tests/test_reliability_runtime.py
#
# Subprocesses the tests start inherit LD_PRELOAD and the options, so the reliability cases run
# under the sanitizers too. An ASan report ends that process with status 1 (a test failure; the
# strict xfail cases that crash sd.cpp on purpose stay xfail). UBSan reports ("runtime error:")
# do not stop the process; --test sends every report, children's included, to
# build/asan/reports/{asan,ubsan}.PID and counts them.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${WANPY_ASAN_VENV:-.venv-asan}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize=vptr"
link="-fsanitize=address,undefined"

if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "scikit-build-core>=0.11" "pybind11>=2.12"

# scikit-build-core reads CMAKE_ARGS (shell-quoted); the build type goes through -C, as it ignores
# CMAKE_BUILD_TYPE there. RelWithDebInfo keeps the optimiser (ggml is unusably slow at -O0) and
# gives the reports file:line.
CMAKE_ARGS="-DCMAKE_C_FLAGS='$flags' -DCMAKE_CXX_FLAGS='$flags' \
-DCMAKE_SHARED_LINKER_FLAGS='$link' -DCMAKE_MODULE_LINKER_FLAGS='$link' ${WANPY_ASAN_CMAKE_ARGS:-}" \
  "$venv/bin/python" -m pip install --no-build-isolation ".[test]" \
    -C build-dir=build/asan -C cmake.build-type=RelWithDebInfo

# libstdc++ is preloaded with the ASan runtime: ASan intercepts __cxa_throw and must find the real one
# when the process starts (python itself does not link libstdc++; without it the first C++ exception,
# e.g. wanpy's cancel, stops the process with "CHECK failed: ... real___cxa_throw").
libasan="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libstdc++.so)"
echo "built: $("$venv/bin/python" -c 'import wanpy._core as c; print(c.__file__)' 2>/dev/null || echo '(import needs LD_PRELOAD)')"
echo "run with: LD_PRELOAD=$libasan ASAN_OPTIONS=detect_leaks=0 $venv/bin/python ..."

if [[ ${1:-} == --test ]]; then
  shift
  selection=("$@")
  if [[ ${#selection[@]} -eq 0 ]]; then
    selection=(tests/test_foundation.py tests/test_preflight.py -k "not predicted_buffers_equal"
               tests/test_pipeline.py tests/test_loras.py tests/test_reliability.py tests/test_reliability_runtime.py)
  fi
  # Reports go to files (one per reporting process, children included): the reliability tests
  # capture their children's stderr, so a report there would otherwise go unseen.
  reports=$PWD/build/asan/reports
  rm -rf "$reports" && mkdir -p "$reports"
  set +e
  LD_PRELOAD="$libasan" ASAN_OPTIONS="detect_leaks=0:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan" GGML_NO_BACKTRACE=1 \
    "$venv/bin/python" -m pytest -m "not vulkan" -p no:cacheprovider "${selection[@]}"
  status=$?
  set -e
  echo "pytest exit status $status; report files in $reports:" \
       "ASan $(find "$reports" -name 'asan.*' | wc -l), UBSan $(find "$reports" -name 'ubsan.*' | wc -l)"
  exit "$status"
fi
