#!/usr/bin/env python3
"""Populate extern/stable-diffusion.cpp from the pinned PyPI sdist, verified by hash.

The sd.cpp source is never committed. This script downloads the sdist named in
extern/sdcpp.lock with pip (by name, hash-checked), extracts only
vendor/stable-diffusion.cpp (ggml included), applies extern/patches/*.patch in name
order and records what it did in extern/stable-diffusion.cpp/WANPY_SOURCE.json.

It is idempotent and works offline once populated: when the recorded source and
patches match, it does nothing; when only the patches changed, it re-extracts from
the cached sdist in extern/downloads. The CMake build runs it at every configure.
Standard library only; downloading needs pip in the running Python, which is why
pyproject.toml lists pip in [build-system].requires (pip's isolated build
environment holds nothing else).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "extern" / "sdcpp.lock"
PATCHES = ROOT / "extern" / "patches"
DOWNLOADS = ROOT / "extern" / "downloads"
TARGET = ROOT / "extern" / "stable-diffusion.cpp"
RECORD = "WANPY_SOURCE.json"
VENDOR_PREFIX = "vendor/stable-diffusion.cpp/"


class FetchError(RuntimeError):
    pass


def read_lock(path: Path | None = None) -> dict[str, str]:
    path = path or LOCK
    lock: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise FetchError(f"{path}: malformed line {line!r}")
        lock[key.strip()] = value.strip()
    missing = {"package", "version", "sha256"} - lock.keys()
    if missing:
        raise FetchError(f"{path}: missing keys {sorted(missing)}")
    return lock


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def patch_files() -> list[Path]:
    return sorted(PATCHES.glob("*.patch"))


def wanted_record(lock: dict[str, str]) -> dict[str, object]:
    return {
        "package": lock["package"],
        "version": lock["version"],
        "sha256": lock["sha256"],
        "patches": [{"name": p.name, "sha256": sha256_of(p)} for p in patch_files()],
    }


def is_current(lock: dict[str, str]) -> bool:
    record = TARGET / RECORD
    if not record.is_file():
        return False
    try:
        return json.loads(record.read_text(encoding="utf-8")) == wanted_record(lock)
    except (OSError, ValueError):
        return False


def sdist_name(lock: dict[str, str]) -> str:
    return f"{lock['package'].replace('-', '_')}-{lock['version']}.tar.gz"


def download(lock: dict[str, str]) -> Path:
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    cached = DOWNLOADS / sdist_name(lock)
    if cached.is_file() and sha256_of(cached) == lock["sha256"]:
        return cached
    if importlib.util.find_spec("pip") is None:
        raise FetchError(
            f"pip is not importable by {sys.executable}, and it downloads the pinned "
            f"{lock['package']}=={lock['version']} sdist. A build with pip's default isolation gets "
            f"pip from pyproject.toml's [build-system].requires; with --no-build-isolation, install "
            f"pip in that environment (or populate extern/stable-diffusion.cpp first: "
            f"python scripts/fetch_sdcpp.py)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(
            f"{lock['package']}=={lock['version']} --hash=sha256:{lock['sha256']}\n",
            encoding="utf-8",
        )
        # --no-build-isolation: pip only prepares the sdist's metadata, with the
        # scikit-build-core that is already present (wanpy builds with it too).
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--no-build-isolation", "--require-hashes", "-r", str(req), "-d", tmp,
        ]
        print("fetch_sdcpp:", " ".join(cmd), flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise FetchError(
                f"pip could not download {lock['package']}=={lock['version']}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        got = Path(tmp) / sdist_name(lock)
        if not got.is_file():
            raise FetchError(f"pip did not produce {got.name}: {sorted(p.name for p in Path(tmp).iterdir())}")
        actual = sha256_of(got)
        if actual != lock["sha256"]:
            raise FetchError(f"sha256 mismatch for {got.name}: got {actual}, pinned {lock['sha256']}")
        shutil.move(str(got), cached)
    return cached


def extract(sdist: Path, dest: Path) -> None:
    top = sdist.name[: -len(".tar.gz")] + "/"
    prefix = top + VENDOR_PREFIX
    with tarfile.open(sdist, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(prefix):
                continue
            member.name = member.name[len(prefix):]
            if member.name:
                members.append(member)
        if not members:
            raise FetchError(f"{sdist.name} has no {VENDOR_PREFIX}")
        tar.extractall(dest, members=members, filter="data")


def apply_patches(dest: Path) -> None:
    for patch in patch_files():
        print(f"fetch_sdcpp: applying {patch.name}", flush=True)
        result = subprocess.run(
            ["patch", "-p1", "--forward", "--batch", "-d", str(dest), "-i", str(patch)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise FetchError(f"patch {patch.name} does not apply:\n{result.stdout}{result.stderr}")


def populate(force: bool = False) -> Path:
    lock = read_lock()
    if not force and is_current(lock):
        print(f"fetch_sdcpp: {TARGET} is current ({lock['package']}=={lock['version']})")
        return TARGET
    sdist = download(lock)
    staging = Path(tempfile.mkdtemp(prefix=".sdcpp-", dir=TARGET.parent))
    try:
        extract(sdist, staging)
        apply_patches(staging)
        (staging / RECORD).write_text(json.dumps(wanted_record(lock), indent=2) + "\n", encoding="utf-8")
        if TARGET.exists():
            shutil.rmtree(TARGET)
        staging.rename(TARGET)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"fetch_sdcpp: populated {TARGET} from {sdist.name}")
    return TARGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="re-extract even when current")
    parser.add_argument("--check", action="store_true", help="exit 1 when not current; change nothing")
    args = parser.parse_args(argv)
    try:
        if args.check:
            return 0 if is_current(read_lock()) else 1
        populate(force=args.force)
    except FetchError as exc:
        print(f"fetch_sdcpp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
