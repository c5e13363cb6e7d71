"""scripts/fetch_sdcpp.py: hash pinning, extraction of vendor/ only, patches, record."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("fetch_sdcpp", REPO / "scripts" / "fetch_sdcpp.py")
fetch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch)


def _fake_sdist(path: Path) -> str:
    top = "stable_diffusion_cpp_python-0.4.7/"
    files = {
        top + "README.md": b"outer\n",
        top + "vendor/stable-diffusion.cpp/include/stable-diffusion.h": b"int x;\n",
        top + "vendor/stable-diffusion.cpp/src/a.cpp": b"int a = 1;\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    (tmp_path / "patches").mkdir()
    monkeypatch.setattr(fetch, "PATCHES", tmp_path / "patches")
    monkeypatch.setattr(fetch, "DOWNLOADS", tmp_path / "downloads")
    monkeypatch.setattr(fetch, "TARGET", tmp_path / "sdcpp")
    (tmp_path / "downloads").mkdir()
    sha = _fake_sdist(tmp_path / "downloads" / "stable_diffusion_cpp_python-0.4.7.tar.gz")
    lock = tmp_path / "sdcpp.lock"
    lock.write_text(f"package = stable-diffusion-cpp-python\nversion = 0.4.7\nsha256 = {sha}\n")
    monkeypatch.setattr(fetch, "LOCK", lock)
    return tmp_path


def test_pinned_lock_file_is_well_formed():
    lock = fetch.read_lock(REPO / "extern" / "sdcpp.lock")
    assert lock["package"] == "stable-diffusion-cpp-python"
    assert lock["version"] == "0.4.7"
    assert len(lock["sha256"]) == 64


def test_extracts_only_the_vendored_tree_and_records_it(sandbox):
    fetch.populate()
    target = sandbox / "sdcpp"
    assert (target / "src" / "a.cpp").read_bytes() == b"int a = 1;\n"
    assert not (target / "README.md").exists()
    record = json.loads((target / "WANPY_SOURCE.json").read_text())
    assert record["version"] == "0.4.7" and record["patches"] == []


def test_applies_patches_and_redoes_when_they_change(sandbox):
    patch = sandbox / "patches" / "0001-example.patch"
    patch.write_text("# why: an example\n--- a/src/a.cpp\n+++ b/src/a.cpp\n@@ -1 +1 @@\n-int a = 1;\n+int a = 2;\n")
    fetch.populate()
    assert (sandbox / "sdcpp" / "src" / "a.cpp").read_bytes() == b"int a = 2;\n"
    assert fetch.is_current(fetch.read_lock(fetch.LOCK))
    patch.unlink()
    assert not fetch.is_current(fetch.read_lock(fetch.LOCK))
    fetch.populate()
    assert (sandbox / "sdcpp" / "src" / "a.cpp").read_bytes() == b"int a = 1;\n"


def test_a_patch_that_does_not_apply_fails_and_leaves_nothing(sandbox):
    (sandbox / "patches" / "0001-bad.patch").write_text(
        "--- a/src/a.cpp\n+++ b/src/a.cpp\n@@ -1 +1 @@\n-int nope;\n+int a = 3;\n")
    with pytest.raises(fetch.FetchError, match="does not apply"):
        fetch.populate()
    assert not (sandbox / "sdcpp").exists()
    assert not list(sandbox.glob(".sdcpp-*"))


def test_hash_mismatch_is_refused(sandbox, monkeypatch):
    lock = fetch.read_lock(fetch.LOCK)
    lock["sha256"] = "0" * 64
    monkeypatch.setattr(fetch, "download", fetch.download)
    cached = sandbox / "downloads" / "stable_diffusion_cpp_python-0.4.7.tar.gz"
    assert fetch.sha256_of(cached) != lock["sha256"]
    # with a wrong pin the cached file is not trusted and pip is asked (hash-checked);
    # simulate pip producing the same (wrong) file
    def fake_run(cmd, capture_output, text):
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / cached.name).write_bytes(cached.read_bytes())
        class R:
            returncode = 0
            stdout = stderr = ""
        return R()
    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(fetch.FetchError, match="sha256 mismatch"):
        fetch.download(lock)


def test_without_pip_the_error_says_where_pip_comes_from(sandbox, monkeypatch):
    # pip's isolated build environment holds only [build-system].requires: without pip
    # there, the download used to fail with a bare "No module named pip"
    lock = fetch.read_lock(fetch.LOCK)
    lock["sha256"] = "0" * 64  # the cached sdist is not trusted, so pip is needed
    real_find_spec = fetch.importlib.util.find_spec
    monkeypatch.setattr(fetch.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pip" else real_find_spec(name, *a))
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: pytest.fail("pip was run"))
    with pytest.raises(fetch.FetchError, match=r"pip is not importable.*\[build-system\]\.requires"):
        fetch.download(lock)


def test_every_wanpy_patch_says_why_before_its_diff():
    patches = sorted((REPO / "extern" / "patches").glob("*.patch"))
    assert patches
    for patch in patches:
        text = patch.read_text(encoding="utf-8")
        header = text.split("\n--- a/", 1)[0]
        number = patch.name.split("-", 1)[0]
        assert header.startswith(f"wanpy patch {number}: "), patch.name
        assert "\nWhy: " in header, patch.name
