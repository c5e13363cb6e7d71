#!/usr/bin/env bash
# Compile, link and check wanpy for a GPU backend this machine has no device for, in a toolchain
# made from distribution packages, without touching the host:
#   scripts/check_backend_build.sh cuda  NVIDIA's CUDA 13.0 compiler, runtime, cuBLAS and CCCL as PyPI
#                                        wheels (scripts/backends/cuda-toolchain.txt) in a venv of their own
#   scripts/check_backend_build.sh hip   Debian forky's ROCm 6.4 (hipcc, libamdhip64-dev, libhipblas-dev,
#                                        librocblas-dev, rocm-cmake; they need glibc 2.38+) in a chroot made
#                                        with debootstrap (root needed)
# Each builds wanpy with upstream's options (-DSD_CUDA=ON / -DSD_HIPBLAS=ON), imports it, checks that
# `python -m wanpy info` reports the backend and says loudly that no device was found, and that
# `wanpy preflight` answers for a device described by overrides. Phases print their wall time; the
# last lines are a summary, also written to <state>/summary.json.
#
# Resumable and cached: a finished phase leaves a stamp and is skipped next time (the build phase is
# always re-run: it is incremental); the build folder and ccache live in the state folder.
#   WANPY_BACKEND_CHECK_DIR  state folder (default: build/backend-check/<backend>)
#   WANPY_CHECK_FRESH=1      start from a clean state (removes the state folder first)
#   WANPY_CUDA_ARCHS         CMAKE_CUDA_ARCHITECTURES (default: 90, the H200's)
#   WANPY_HIP_TARGETS        GPU_TARGETS (default: gfx1151, Strix Halo)
#   WANPY_DEBIAN_MIRROR      the Debian archive (default: http://deb.debian.org/debian)
#   WANPY_BUILD_JOBS         parallel compile jobs (default: the number of CPUs)
#   WANPY_CHECK_STOP_AFTER   stop after this phase (e.g. prepare the toolchain now, build later)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
backend=${1:-}
case "$backend" in
  cuda|hip) ;;
  *) echo "usage: $0 cuda|hip" >&2; exit 2 ;;
esac
umount_chroot() {
  local c=$1
  for m in proc dev; do if mountpoint -q "$c/$m"; then umount "$c/$m"; fi; done
}
STATE=${WANPY_BACKEND_CHECK_DIR:-$ROOT/build/backend-check/$backend}
if [[ ${WANPY_CHECK_FRESH:-0} == 1 && -d $STATE ]]; then
  if [[ $backend == hip ]]; then umount_chroot "$STATE/chroot" 2>/dev/null || true; fi
  rm -rf "$STATE"
fi
mkdir -p "$STATE/stamps" "$STATE/logs"
JOBS=${WANPY_BUILD_JOBS:-$(nproc)}
MIRROR=${WANPY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
start_all=$(date +%s)
declare -A PHASE_SECONDS=()
PHASES=()

note() { echo "== [$backend $(( $(date +%s) - start_all ))s] $*"; }

# phase NAME FUNCTION: runs FUNCTION unless its stamp exists (the incremental build and the checks
# always run), logging to <state>/logs/NAME.log and printing the wall time
ALWAYS_RUN=" build info preflight "
phase() {
  local name=$1 fn=$2 t0 rc=0
  PHASES+=("$name")
  if [[ -f $STATE/stamps/$name && $ALWAYS_RUN != *" $name "* ]]; then
    note "$name: done in an earlier run ($(cat "$STATE/stamps/$name") s), skipped"
    PHASE_SECONDS[$name]="$(cat "$STATE/stamps/$name") (earlier run)"
    if [[ ${WANPY_CHECK_STOP_AFTER:-} == "$name" ]]; then note "stopping after $name (WANPY_CHECK_STOP_AFTER)"; exit 0; fi
    return 0
  fi
  note "$name ..."
  t0=$(date +%s)
  "$fn" > >(tee "$STATE/logs/$name.log") 2>&1 || rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if (( rc != 0 )); then
    note "$name FAILED after ${dt}s (exit $rc); log: $STATE/logs/$name.log"
    exit "$rc"
  fi
  echo "$dt" > "$STATE/stamps/$name"
  PHASE_SECONDS[$name]=$dt
  note "$name: ${dt}s"
  if [[ ${WANPY_CHECK_STOP_AFTER:-} == "$name" ]]; then note "stopping after $name (WANPY_CHECK_STOP_AFTER)"; exit 0; fi
}

# ---------------------------------------------------------------------------------------------
# CUDA: the wheels' single prefix (site-packages/nvidia/cu13) is a toolkit root once nvcc.profile's
# targets/x86_64-linux and lib64 paths exist in it and the libraries have their unversioned names.
# The toolchain phase writes <state>/env.sh: what a build with it needs (CMAKE_ARGS, ccache in the
# state folder), for this script's build and for bench/gpu_check.sh's device wheel.

CUDA_TOOLCHAIN=$STATE/toolchain
cuda_prefix() { echo "$("$CUDA_TOOLCHAIN/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13"; }

cuda_toolchain() {
  rm -rf "$CUDA_TOOLCHAIN"
  python3 -m venv "$CUDA_TOOLCHAIN"
  "$CUDA_TOOLCHAIN/bin/python" -m pip install -q --only-binary=:all: -r scripts/backends/cuda-toolchain.txt
  local p
  p=$(cuda_prefix)
  mkdir -p "$p/targets"
  ln -sfn .. "$p/targets/x86_64-linux"
  ln -sfn lib "$p/lib64"
  for lib in cudart cublas cublasLt; do ln -sfn "lib$lib.so.13" "$p/lib/lib$lib.so"; done
  "$p/bin/nvcc" --version
  # GGML_CUDA_NO_VMM: the wheels have no libcuda.so (the driver's) to link against, and ggml links it
  # only for its virtual-memory pool (the plain pool is used instead)
  cat > "$STATE/env.sh" <<ENV
export CCACHE_DIR="$STATE/ccache" CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=true
export CMAKE_ARGS="-DSD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${WANPY_CUDA_ARCHS:-90} -DGGML_CUDA_NO_VMM=ON \
-DCMAKE_CUDA_COMPILER=$p/bin/nvcc -DCUDAToolkit_ROOT=$p"
ENV
  cat "$STATE/env.sh"
}

cuda_venv() {
  rm -rf "$STATE/venv"
  python3 -m venv "$STATE/venv"
  # the build requirements (pyproject.toml), so that the build folder can be kept between runs
  "$STATE/venv/bin/python" -m pip install -q "scikit-build-core>=0.11" "pybind11>=2.12"
}

cuda_build() (  # a subshell: env.sh's variables stay in it
  # shellcheck disable=SC1091
  source "$STATE/env.sh"
  CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
    "$STATE/venv/bin/python" -m pip install -v --no-build-isolation -C build-dir="$STATE/build" ".[cuda]"
  ccache -s | grep -i -E "hits|misses" || true
)

# ---------------------------------------------------------------------------------------------
# HIP: Debian forky in a chroot

CHROOT=$STATE/chroot
HIP_PACKAGES="hipcc libamdhip64-dev libhipblas-dev librocblas-dev rocm-cmake rocminfo cmake ninja-build g++ \
python3 python3-venv python3-dev ccache patch ca-certificates"

mount_chroot() {
  local c=$1
  mountpoint -q "$c/proc" || mount -t proc proc "$c/proc"
  mountpoint -q "$c/dev" || mount --bind /dev "$c/dev"
  cp /etc/resolv.conf "$c/etc/resolv.conf"
  # the host's certificate bundle: where the network goes through a TLS-inspecting proxy, only the
  # host's bundle holds its authority (pip in the chroot reaches PyPI with it)
  cp /etc/ssl/certs/ca-certificates.crt "$c/etc/host-ca-certificates.crt"
}
in_chroot() {
  chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    PIP_CERT=/etc/host-ca-certificates.crt SSL_CERT_FILE=/etc/host-ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

hip_chroot() {
  [[ $(id -u) == 0 ]] || { echo "error: debootstrap and chroot need root" >&2; return 1; }
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
  umount_chroot "$CHROOT" 2>/dev/null || true
  rm -rf "$CHROOT"
  # Debian 12's debootstrap has no script named forky; sid's is the one forky's would link to
  debootstrap --variant=minbase forky "$CHROOT" "$MIRROR" /usr/share/debootstrap/scripts/sid
}

hip_packages() {
  mount_chroot "$CHROOT"
  in_chroot apt-get update -qq
  # shellcheck disable=SC2086
  in_chroot /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $HIP_PACKAGES
  in_chroot dpkg-query -W -f '${Package} ${Version}\n' hipcc libamdhip64-dev libhipblas-dev librocblas-dev \
    rocm-cmake libc6 python3 cmake
}

hip_venv() {
  mount_chroot "$CHROOT"
  in_chroot rm -rf /opt/venv
  in_chroot python3 -m venv /opt/venv
  in_chroot /opt/venv/bin/python -m pip install -q "scikit-build-core>=0.11" "pybind11>=2.12"
}

hip_source() {  # the checkout as git sees it (tracked and untracked, not ignored) plus the fetched sdist
  mkdir -p "$CHROOT/src/wanpy"
  find "$CHROOT/src/wanpy" -mindepth 1 -maxdepth 1 ! -name extern -exec rm -rf {} +
  git ls-files -z --cached --others --exclude-standard | tar -C "$ROOT" --null -T - -cf - | tar -C "$CHROOT/src/wanpy" -xf -
  mkdir -p "$CHROOT/src/wanpy/extern/downloads"
  cp -a extern/downloads/. "$CHROOT/src/wanpy/extern/downloads/" 2>/dev/null || true
}

hip_build() {
  hip_source
  mount_chroot "$CHROOT"
  local llvm_bin rocm_root
  llvm_bin=$(in_chroot hipconfig -l)
  rocm_root=$(in_chroot hipconfig -R)
  echo "hipconfig: llvm $llvm_bin, rocm $rocm_root"
  in_chroot /usr/bin/env CCACHE_DIR=/ccache CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
    HIPCXX="$llvm_bin/clang++" HIP_PATH="$rocm_root" \
    CMAKE_ARGS="-DSD_HIPBLAS=ON -DGPU_TARGETS=${WANPY_HIP_TARGETS:-gfx1151}" \
    sh -c 'cd /src/wanpy && /opt/venv/bin/python -m pip install -v --no-build-isolation -C build-dir=/build .'
  in_chroot /usr/bin/env CCACHE_DIR=/ccache ccache -s | grep -i -E "hits|misses" || true
}

# ---------------------------------------------------------------------------------------------
# The checks, the same for both: run from a neutral folder so that the installed wanpy is imported

run_python() {  # python arguments, in the backend's environment
  if [[ $backend == hip ]]; then
    mount_chroot "$CHROOT"
    in_chroot sh -c 'cd / && exec /opt/venv/bin/python "$@"' python "$@"
  else
    (cd / && "$STATE/venv/bin/python" "$@")
  fi
}

check_info() {
  local out
  out=$(run_python -m wanpy info 2>&1) || { echo "$out"; echo "error: wanpy info failed" >&2; return 1; }
  echo "$out"
  grep -q "^backend compiled in: $backend$" <<<"$out" || { echo "error: the backend is not $backend" >&2; return 1; }
  grep -q "WARNING: this wanpy was built for $backend but found no usable $backend device" <<<"$out" \
    || { echo "error: no loud word that no $backend device was found" >&2; return 1; }
}

check_preflight() {
  # a 96 GiB device with no per-allocation ceiling (HIP on a Strix Halo, CUDA on a large card)
  # against a request that needs more than 4 GiB in one allocation (its hidden state, 4.19 GiB,
  # even with the feed-forward block in chunks): it fits (exit 0)
  run_python -m wanpy preflight wan2.x-t2v-14b --size 1280x720 --frames 241 --flash-attention --vae-tiling \
    --total-memory 96GiB
  # the same request under Vulkan's 4 GiB ceiling is refused (exit 3): the overrides are honoured
  local rc=0
  run_python -m wanpy preflight wan2.x-t2v-14b --size 1280x720 --frames 241 --flash-attention --vae-tiling \
    --total-memory 96GiB --max-allocation 0xfffffffc > /dev/null || rc=$?
  [[ $rc == 3 ]] || { echo "error: preflight under 0xfffffffc exited $rc, expected 3 (does not fit)" >&2; return 1; }
  echo "under --max-allocation 0xfffffffc: refused (exit 3), as it must be"
}

summary() {
  local so size
  so=$(run_python -c 'import wanpy._core as c; print(c.__file__)')
  if [[ $backend == hip ]]; then size=$(stat -c %s "$CHROOT$so"); else size=$(stat -c %s "$so"); fi
  local versions
  if [[ $backend == hip ]]; then
    versions=$(in_chroot dpkg-query -W -f '${Package}=${Version} ' hipcc libamdhip64-dev libhipblas-dev \
      librocblas-dev libc6 "clang-$(in_chroot sh -c 'hipconfig -l' | grep -o '[0-9]*' | head -1)" 2>/dev/null || true)
  else
    versions="nvcc $("$(cuda_prefix)/bin/nvcc" --version | grep -o 'release [0-9.]*, V[0-9.]*'); \
$(sed -n 's/^\(nvidia-[a-z-]*==[0-9.]*\)$/\1/p' scripts/backends/cuda-toolchain.txt | tr '\n' ' ')"
  fi
  local total=$(( $(date +%s) - start_all ))
  {
    printf '{"backend": "%s", "date": "%s", "host": "%s", "cpus": %s, "jobs": %s,\n' \
      "$backend" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -m)" "$(nproc)" "$JOBS"
    printf ' "toolchain": "%s",\n' "$versions"
    printf ' "core_module": "%s", "core_module_bytes": %s, "this_run_seconds": %s,\n' "$so" "$size" "$total"
    printf ' "phases": {'
    local first=1
    for p in "${PHASES[@]}"; do
      ((first)) || printf ', '
      first=0
      printf '"%s": "%s"' "$p" "${PHASE_SECONDS[$p]}"
    done
    printf '}}\n'
  } > "$STATE/summary.json"
  note "summary ($STATE/summary.json)"
  echo "toolchain: $versions"
  for p in "${PHASES[@]}"; do echo "  phase $p: ${PHASE_SECONDS[$p]} s"; done
  echo "  _core: $so, $size bytes ($(( size / 1048576 )) MiB)"
  run_python -c "import wanpy, wanpy._core as c; print('wanpy', wanpy.__version__, 'imports; backend', c.BACKEND)"
}

if [[ $backend == cuda ]]; then
  phase toolchain cuda_toolchain
  phase venv cuda_venv
  phase build cuda_build
else
  trap 'umount_chroot "$CHROOT" 2>/dev/null || true' EXIT
  phase chroot hip_chroot
  phase packages hip_packages
  phase venv hip_venv
  phase build hip_build
fi
phase info check_info
phase preflight check_preflight
summary
