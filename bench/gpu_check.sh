#!/usr/bin/env bash
# The one prepared GPU check (bench/gpu_check.py): seconds per step, VAE decode, sd.cpp's real
# buffers and the device's real peak against the pre-flight's prediction, on a lent H200.
#
#   bash bench/gpu_check.sh prepare   here: build wanpy's CUDA wheel for the device's Python into .gpu/
#                                     (the toolchain of scripts/check_backend_build.sh cuda, ccache shared)
#   bash bench/gpu_check.sh dry       here: the same check on this machine's CPU build, tiny sizes
#   bash bench/gpu_check.sh run [gpu_check.py options]
#                                     on the device (the device tool's `run`, carrying .gpu): install the
#                                     carried wheels, find CUDA 13's runtime and cuBLAS there, run the check;
#                                     results in $OUT (gpu_check.json, gpu_check.md, gpu_check.log)
#   bash bench/gpu_check.sh bench SCRIPT [options]
#                                     on the device, the same setup, then another benchmark of bench/
#                                     (e.g. bench/bench_ffn_chunks.py --json $OUT/ffn.json); log in $OUT
#
# The device has nvcc, CMake and Python but no network and 16 cores: building ggml-cuda there would
# spend most of the lease, so the wheel is compiled here (CUDA 13.0 from NVIDIA's PyPI wheels, sm_90)
# and only installed there. WANPY_GPU_PYTHON: the interpreter matching the device's (default python3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mode=${1:-}

case "$mode" in
prepare)
  WANPY_CHECK_STOP_AFTER=venv bash scripts/check_backend_build.sh cuda  # the toolchain, once
  state=${WANPY_BACKEND_CHECK_DIR:-$ROOT/build/backend-check/cuda}
  py=${WANPY_GPU_PYTHON:-python3.12}
  # beside the check's own build folder, at the same depth: ccache keys on paths relative to the
  # checkout, so the CUDA objects compiled there are hits here
  venv=$state/venv-device
  [[ -x $venv/bin/python ]] || { "$py" -m venv "$venv"; "$venv/bin/python" -m pip install -q "scikit-build-core>=0.11" "pybind11>=2.12"; }
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf .gpu && mkdir -p .gpu
  # shellcheck disable=SC1091
  source "$state/env.sh"  # the toolchain's CMAKE_ARGS and ccache
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/python" -m pip wheel -q --no-build-isolation --no-deps \
    -C build-dir="$state/build-device" -w .gpu .
  # imageio-ffmpeg, the one runtime dependency the device's image lacks, is not carried (30 MB of the
  # 64 MiB a call carries): the check writes no video, and wanpy imports it only to run ffmpeg
  ls -la .gpu
  du -sh .gpu
  ;;
dry)
  out=${OUT:-$ROOT/build/gpu-check/dry}
  "${PYTHON:-$ROOT/.venv/bin/python}" bench/gpu_check.py --dry --out "$out"
  ;;
run|bench)
  : "${OUT:?run on the device machine, where OUT is set}"
  exec > >(tee -a "$OUT/gpu_$mode.log") 2>&1
  t0=$(date +%s)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 --version
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  # CUDA 13's runtime and cuBLAS as the image has them (its PyTorch's NVIDIA wheels, or the toolkit)
  libs=$(python3 - <<'PY'
import importlib.util, os
dirs = []
spec = importlib.util.find_spec("nvidia")
for base in (spec.submodule_search_locations if spec else []):
    dirs.append(os.path.join(base, "cu13", "lib"))
    dirs += [os.path.join(base, sub, "lib") for sub in ("cublas", "cuda_runtime")]
dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
print(":".join(d for d in dirs if os.path.isdir(d)))
PY
)
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  python3 -c "import wanpy._core as c; print('wanpy._core', c.BACKEND, c.__file__)"
  echo "setup: $(( $(date +%s) - t0 )) s"
  shift
  export WANPY_MODEL_CACHE=/tmp/gpu-check-models  # the kit writes its random-weight sets there
  if [[ $mode == run ]]; then
    python3 bench/gpu_check.py --out "$OUT" --models /tmp/gpu-check-models "$@"
  else
    python3 "$@"
  fi
  echo "whole $mode: $(( $(date +%s) - t0 )) s"
  ;;
*)
  echo "usage: $0 prepare|dry|run|bench" >&2
  exit 2
  ;;
esac
