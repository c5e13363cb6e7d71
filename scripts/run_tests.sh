#!/usr/bin/env bash
# The test suite, from a fresh clone: installs what it needs, builds the CPU
# extension and runs the suite, then builds the Vulkan extension and runs the
# Vulkan tests on Mesa's lavapipe (a real Vulkan driver on the CPU).
#   WANPY_TEST_VULKAN=0  skip the Vulkan half (e.g. on a machine without apt)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

# System tools: a C++ compiler is assumed; ccache (fast rebuilds) and patch (our
# sd.cpp patches) are installed when missing and we may.
missing=()
for tool in ccache patch; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    stamp "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: ${missing[*]} not installed (ccache speeds rebuilds; patch is required)" >&2
  fi
fi

make_venv() {  # $1: folder
  if [[ ! -x $1/bin/python ]]; then python3 -m venv "$1"; fi
  "$1/bin/python" -m pip install -q --upgrade pip
  "$1/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12"
}

# --- CPU build and the whole suite ------------------------------------------------
stamp "CPU build"
make_venv .venv
.venv/bin/python -m pip install -q --no-build-isolation ".[test]"
stamp "CPU tests"
.venv/bin/python -m pytest -m "not vulkan" "$@"

# --- Vulkan build on lavapipe -----------------------------------------------------
if [[ ${WANPY_TEST_VULKAN:-1} == 0 ]]; then
  stamp "Vulkan half skipped (WANPY_TEST_VULKAN=0)"
  exit 0
fi
stamp "Vulkan toolchain and lavapipe"
bash scripts/provide_vulkan.sh
# shellcheck disable=SC1091
source .vulkan/env.sh
stamp "Vulkan build"
make_venv .venv-vulkan
CMAKE_ARGS="-DSD_VULKAN=ON ${WANPY_VULKAN_CMAKE_ARGS:-}" \
  .venv-vulkan/bin/python -m pip install -q --no-build-isolation \
  -C build-dir="build/vulkan-{wheel_tag}" ".[test]"
stamp "Vulkan tests"
GGML_VK_VISIBLE_DEVICES=0 .venv-vulkan/bin/python -m pytest -m vulkan "$@"
stamp "done"
