#!/usr/bin/env bash
# Provide a Vulkan toolchain (headers, loader, glslc, vulkaninfo) and a CPU Vulkan
# driver (Mesa lavapipe) in the git-ignored folder .vulkan/, without touching /usr.
# This lets ggml's Vulkan backend be compiled and tested on CPU-only Debian 12
# machines (CI included).
#
#   scripts/provide_vulkan.sh           # provide once; later runs only print the summary
#   scripts/provide_vulkan.sh --force   # fetch and unpack again
#   . .vulkan/env.sh                    # then build/run (see the comments in env.sh)
#
# Why the packages come from where they do:
#   * headers: Debian 12's libvulkan-dev (1.3.239) lacks VK_EXT_layer_settings, which
#     ggml-vulkan.cpp uses; trixie's headers compile it unchanged.
#   * loader: trixie's libvulkan1 needs glibc >= 2.38 (bookworm has 2.36), so the
#     loader stays bookworm's; it works with the newer headers.
#   * driver: bookworm's Mesa 22.3 lavapipe crashes in FLASH_ATTN_EXT; Mesa 25 from
#     bookworm-backports works.
# Everything is fetched by package name through apt (which checks the archive
# signatures and package hashes) with a private apt state under .vulkan/apt, so the
# system's apt configuration and package database are never modified.
set -euo pipefail

PROG=provide_vulkan.sh
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VK=$ROOT_DIR/.vulkan
BASE=bookworm                     # the only Debian release this recipe is made for
HEADERS_SUITE=trixie
# Resolved against this machine's installed packages: apt adds whatever they need
# that the system lacks (or has too old, e.g. libdrm for Mesa 25).
RUNTIME_PKGS=(mesa-vulkan-drivers/$BASE-backports libvulkan1 glslc vulkan-tools)
# Unpacked as is, without dependencies: only its headers and libvulkan.so link are used.
HEADER_PKGS=(libvulkan-dev/$HEADERS_SUITE)
# Never shadow these via LD_LIBRARY_PATH: a second glibc/libstdc++ breaks every process.
NEVER_UNPACK=" libc6 libc-bin libgcc-s1 libstdc++6 "
# Anything that changes what gets unpacked must change this, so old stamps are redone.
RECIPE="v1 $VK ${RUNTIME_PKGS[*]} ${HEADER_PKGS[*]}"

die() { echo "$PROG: ERROR: $*" >&2; exit 1; }
trap 'echo "$PROG: ERROR: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (use --force or --help)" ;;
    esac
done

summary() {
    # Runs in a subshell so that sourcing env.sh does not leak into this script.
    (
        . "$VK/env.sh"
        echo "Vulkan for wanpy in $VK  (use: . .vulkan/env.sh)"
        sed -n 's/^pkg /  /p' "$VK/stamp"
        echo "  headers: VK_HEADER_VERSION $(sed -n 's/^#define VK_HEADER_VERSION \([0-9]*\).*/\1/p' \
            "$VK/root/usr/include/vulkan/vulkan_core.h")"
        echo "  glslc: $(glslc --version | sed -n 1p)"  # sed, not head: no SIGPIPE under pipefail
        info=$(vulkaninfo --summary 2>/dev/null) || die "vulkaninfo failed; redo with --force"
        grep -q 'DRIVER_ID_MESA_LLVMPIPE' <<<"$info" \
            || die "vulkaninfo lists no lavapipe device; redo with --force"
        sed -n 's/^[[:space:]]*\(deviceName\|driverInfo\|apiVersion\)[[:space:]]*=/  device \1 =/p' <<<"$info"
    )
}

for tool in apt-get dpkg-deb flock ldd; do
    command -v "$tool" >/dev/null || die "'$tool' not found; this script needs Debian's apt/dpkg"
done
mkdir -p "$VK"
# Parallel CI jobs sharing a checkout must not unpack over each other.
exec 9>"$VK/.lock"
flock 9

if [[ $force == 0 && -f $VK/stamp && -f $VK/env.sh ]] \
        && [[ $(sed -n 's/^recipe //p' "$VK/stamp") == "$RECIPE" ]]; then
    summary
    exit 0
fi

start=$SECONDS
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ $codename == "$BASE" ]] \
    || die "made for Debian 12 ($BASE); this system is '${codename:-unknown}'"

# Same mirrors as the system uses (proxies and other apt.conf.d settings still apply);
# WANPY_DEBIAN_MIRROR overrides. The security archive keeps dependency resolution
# consistent with an up-to-date system.
targets=$(LC_ALL=C apt-get indextargets --no-release-info \
    --format '$(RELEASE) $(TARGET_OF) $(REPO_URI)' | sort -u)
mirror=${WANPY_DEBIAN_MIRROR:-$(awk -v r="$BASE" '$1 == r && $2 == "deb" {print $3; exit}' <<<"$targets")}
security=$(awk -v r="$BASE-security" '$1 == r && $2 == "deb" {print $3; exit}' <<<"$targets")
[[ -n $mirror ]] || die "no '$BASE' deb source in the system's apt configuration; set WANPY_DEBIAN_MIRROR"

echo "$PROG: providing Vulkan in $VK (mirror $mirror)"
rm -f "$VK/stamp"
rm -rf "$VK/apt" "$VK/root" "$VK/bin" "$VK/sdk" "$VK/icd" "$VK/env.sh"
APT=$VK/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.d" "$APT/preferences.d" "$APT/debs"
: >"$APT/sources.list"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed_by=""
[[ -f $keyring ]] && signed_by="Signed-By: $keyring"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates %s-backports %s\nComponents: main\n%s\n' \
        "$mirror" "$BASE" "$BASE" "$BASE" "$HEADERS_SUITE" "$signed_by"
    [[ -z $security ]] || printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n%s\n' \
        "$security" "$BASE" "$signed_by"
} >"$APT/sources.d/debian.sources"
# trixie must never be picked implicitly (its libs need a newer glibc); it is only
# used where a package is requested as pkg/trixie.
printf 'Package: *\nPin: release n=%s\nPin-Priority: 1\n' "$HEADERS_SUITE" >"$APT/preferences"

apt_opts=(
    -o "Dir::Etc::sourcelist=$APT/sources.list"
    -o "Dir::Etc::sourceparts=$APT/sources.d"
    -o "Dir::Etc::preferences=$APT/preferences"
    -o "Dir::Etc::preferencesparts=$APT/preferences.d"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::Cache=$APT/cache"
    -o "Acquire::Languages=none"
    # apt's download sandbox user (_apt) usually cannot write into a checkout; as root
    # apt would fall back to this anyway, only with a warning. Signatures are checked
    # either way.
    -o "APT::Sandbox::User=$(id -un)"
)
LOG=$APT/log
run_apt() {
    "$@" "${apt_opts[@]}" >>"$LOG" 2>&1 || {
        tail -n 25 "$LOG" >&2
        die "'$*' failed (full log: $LOG)"
    }
}

echo "$PROG: apt-get update (private lists in .vulkan/apt)"
run_apt env LC_ALL=C apt-get -q update
# apt-get update exits 0 on some signature problems; a warning there means the
# indexes cannot be trusted.
if grep -E '^(W|E): .*(GPG|signature|not signed|NO_PUBKEY|Release file)' "$LOG" >&2; then
    die "apt could not verify the Debian archive signatures (see $LOG)"
fi

# --reinstall keeps requested packages in the list even if the system has them, so
# .vulkan is self-contained for them; dependencies are listed only when missing.
run_apt env LC_ALL=C apt-get -s -q install --reinstall --no-install-recommends "${RUNTIME_PKGS[@]}"
mapfile -t wanted < <(awk '$1 == "Inst" { for (i = 3; i <= NF; i++) if ($i ~ /^\(/) {
        print $2 "=" substr($i, 2); break } }' "$LOG")
[[ ${#wanted[@]} -gt 0 ]] || die "apt resolved no packages for: ${RUNTIME_PKGS[*]} (see $LOG)"
fetch=()
for pv in "${wanted[@]}"; do
    name=${pv%%=*}
    if [[ $NEVER_UNPACK == *" ${name%%:*} "* ]]; then
        echo "$PROG: WARNING: apt wants a newer $pv; not unpacking it (system copy is used)" >&2
    else
        fetch+=("$pv")
    fi
done
fetch+=("${HEADER_PKGS[@]}")

echo "$PROG: downloading ${#fetch[@]} packages"
# apt-get download refuses packages that do not match the signed indexes.
(cd "$APT/debs" && run_apt env LC_ALL=C apt-get -q download "${fetch[@]}")

mkdir -p "$VK/root"
stamp_pkgs=()
for deb in "$APT/debs"/*.deb; do
    dpkg-deb -x "$deb" "$VK/root"
    stamp_pkgs+=("pkg $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)")
done

lvp=$(find "$VK/root/usr/lib" -name libvulkan_lvp.so -print -quit)
[[ -n $lvp ]] || die "libvulkan_lvp.so not found in mesa-vulkan-drivers"
libdir=$(dirname "$lvp")
# Only lavapipe is ever loaded; the hardware drivers would just bloat caches.
rm -f "$libdir"/libvulkan_{radeon,intel,intel_hasvk,virtio,gfxstream,nouveau,asahi,powervr_mesa}.so
rm -rf "$VK/root/usr/share/doc" "$VK/root/usr/share/man"
[[ -e $libdir/libvulkan.so.1 && -e $libdir/libvulkan.so ]] || die "Vulkan loader missing in $libdir"
grep -q VK_EXT_layer_settings "$VK/root/usr/include/vulkan/vulkan_core.h" \
    || die "the fetched Vulkan headers lack VK_EXT_layer_settings (ggml needs it)"
missing=$(LD_LIBRARY_PATH=$libdir ldd "$lvp" "$VK/root/usr/bin/glslc" "$VK/root/usr/bin/vulkaninfo" \
    | grep 'not found' || true)
[[ -z $missing ]] || die "unresolved libraries after unpacking:"$'\n'"$missing"

# The packaged ICD names the library relative to the system's library path; point it
# at the unpacked copy so the loader never picks up a system lavapipe by accident.
mkdir -p "$VK/icd"
sed 's#"library_path":[^,}]*#"library_path": "'"$lvp"'"#' \
    "$VK/root/usr/share/vulkan/icd.d/lvp_icd.json" >"$VK/icd/lvp_icd.json"
grep -q "$lvp" "$VK/icd/lvp_icd.json" || die "could not rewrite library_path in lvp_icd.json"

# Wrappers so glslc/vulkaninfo also work when only the CMake hints are used (CMake
# runs glslc at configure time, and glslc needs the unpacked libshaderc).
mkdir -p "$VK/bin"
for tool in glslc vulkaninfo; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
        "$libdir" "$VK/root/usr/bin/$tool" >"$VK/bin/$tool"
    chmod +x "$VK/bin/$tool"
done
# A Vulkan-SDK-shaped view, so that FindVulkan's VULKAN_SDK hint works too.
mkdir -p "$VK/sdk"
ln -s ../root/usr/include "$VK/sdk/include"
ln -s "../${libdir#"$VK/"}" "$VK/sdk/lib"
ln -s ../bin "$VK/sdk/bin"

q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }  # single-quote for sh
cat >"$VK/env.sh" <<EOF
# Generated by scripts/provide_vulkan.sh; re-run that script instead of editing.
# Source it (". .vulkan/env.sh") before building or running wanpy with Vulkan on
# this machine's CPU (Mesa lavapipe).
#
# - VK_DRIVER_FILES (VK_ICD_FILENAMES for older loaders) make lavapipe the ONLY
#   Vulkan driver; unset both to use a real GPU driver of the system instead.
# - ggml skips CPU-type Vulkan devices unless they are selected explicitly; to run
#   on lavapipe also set:   export GGML_VK_VISIBLE_DEVICES=0
# - Build: pass \$WANPY_VULKAN_CMAKE_ARGS to CMake, e.g.
#     CMAKE_ARGS="\$CMAKE_ARGS \$WANPY_VULKAN_CMAKE_ARGS" pip install ...
#   (VULKAN_SDK alone also works for a fresh build directory).
# - The unpacked libraries must be on LD_LIBRARY_PATH when the built extension runs.
# - Loader debugging: VK_LOADER_DEBUG=all
export WANPY_VULKAN_DIR=$(q "$VK")
export VK_DRIVER_FILES=$(q "$VK/icd/lvp_icd.json")
export VK_ICD_FILENAMES="\$VK_DRIVER_FILES"
export VULKAN_SDK=$(q "$VK/sdk")
export WANPY_VULKAN_CMAKE_ARGS=$(q "-DVulkan_INCLUDE_DIR=$VK/root/usr/include -DVulkan_LIBRARY=$libdir/libvulkan.so -DVulkan_GLSLC_EXECUTABLE=$VK/bin/glslc")
case ":\${LD_LIBRARY_PATH:-}:" in
    *:$(q "$libdir"):*) ;;
    *) export LD_LIBRARY_PATH=$(q "$libdir")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} ;;
esac
case ":\$PATH:" in
    *:$(q "$VK/bin"):*) ;;
    *) export PATH=$(q "$VK/bin"):\$PATH ;;
esac
EOF

{
    echo "recipe $RECIPE"
    printf '%s\n' "${stamp_pkgs[@]}"
} >"$VK/stamp.new"
mv "$VK/stamp.new" "$VK/stamp"
# The package files and indexes are not needed any more (a redo fetches them again).
rm -rf "$APT/debs" "$APT/lists" "$APT/cache"

if ! summary; then
    rm -f "$VK/stamp"
    die "the provided Vulkan does not work (see above)"
fi
echo "$PROG: done in $((SECONDS - start)) s"
