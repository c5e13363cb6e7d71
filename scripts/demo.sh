#!/usr/bin/env bash
# The main job on a fresh machine: build wanpy (CPU backend) into .venv, then run
# `wanpy demo`: a random-weight Wan2.1-T2V-1.3B clip generated here, written as WebM
# and probed. Extra arguments go to `wanpy demo` (e.g. -o fox.webm --frames 17).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v patch >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patch ccache >/dev/null
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
# as the README installs: pip's default build isolation fetches the build requirements
.venv/bin/python -m pip install -q .
exec .venv/bin/wanpy demo -o demo.webm "$@"
