"""Packaging: what the installed distribution declares and carries, and what an sdist holds.

The install itself (`pip install .` with pip's default build isolation, in a fresh venv) is
.ci/run's job: these tests check the result it leaves and the source distribution.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tarfile
from pathlib import Path

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # mypy (in the test extra) depends on tomli before 3.11
    import tomli as tomllib

SRC = REPO / "src" / "wanpy"


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0]).lower()


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_optional(node: ast.AST) -> bool:
    """``try: import x`` ... ``except ImportError``: an optional dependency, an extra's business."""
    return isinstance(node, ast.Try) and any(
        isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers)


def _imported_top_level_modules(root: Path, *, optional: bool = False) -> dict[str, list[str]]:
    """Top-level module -> files importing it at run time, over every .py under root.

    Absolute imports only; those under ``if TYPE_CHECKING:`` are for the type checker. Imports
    guarded by ``except ImportError`` are optional: returned (only) with ``optional=True``.
    """
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        checker_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                        for stmt in block.body for n in ast.walk(stmt)}
        guarded = {id(n) for block in ast.walk(tree) if _is_optional(block)
                   for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in checker_only or (id(node) in guarded) != optional:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(REPO)))
    return found


def test_runtime_dependencies_are_exactly_what_the_package_imports():
    imported = {
        name: files for name, files in _imported_top_level_modules(SRC).items()
        if name not in sys.stdlib_module_names and name not in ("wanpy", "__future__")
    }
    dists_of = importlib.metadata.packages_distributions()
    unknown = {name: files for name, files in imported.items() if name not in dists_of}
    assert not unknown, f"imported by wanpy but installed by no distribution: {unknown}"
    needed = {_name(dists_of[name][0]) for name in imported}
    requires = importlib.metadata.requires("wanpy") or []
    declared = {_name(req) for req in requires if "extra ==" not in req}
    assert declared == needed, (
        f"declared but never imported: {sorted(declared - needed)}; "
        f"imported but not declared: {sorted(needed - declared)} (imports: {imported})"
    )


def test_optional_imports_are_declared_in_an_extra():
    optional = {name for name in _imported_top_level_modules(SRC, optional=True)
                if name not in sys.stdlib_module_names and name != "wanpy"}
    assert optional, "wanpy has optional imports (wanpy.display's ipywidgets): the scan found none"
    dists_of = importlib.metadata.packages_distributions()
    extras = {_name(req) for req in importlib.metadata.requires("wanpy") or [] if "extra ==" in req}
    missing = {name for name in optional if not {_name(d) for d in dists_of.get(name, [name])} & extras}
    # IPython comes with ipywidgets
    assert missing <= {"IPython"}, f"optional imports in no extra: {sorted(missing)}"


def test_test_only_readers_are_in_the_test_extra_not_the_runtime():
    requires = importlib.metadata.requires("wanpy") or []
    runtime = {_name(req) for req in requires if "extra ==" not in req}
    test_extra = {_name(req) for req in requires if re.search(r"""extra == ['"]test['"]""", req)}
    assert {"gguf", "safetensors"} <= test_extra
    assert not {"gguf", "safetensors", "imageio"} & runtime


def test_one_version_source():
    import wanpy

    namespace: dict[str, object] = {}
    exec((SRC / "_version.py").read_text(encoding="utf-8"), namespace)
    assert wanpy.__version__ == namespace["__version__"] == importlib.metadata.version("wanpy")
    assigners = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                assigners.append(path.relative_to(SRC).as_posix())
    assert assigners == ["_version.py"]


def test_the_installed_distribution_carries_the_licence():
    meta = importlib.metadata.metadata("wanpy")
    assert meta["License-Expression"] == "MIT"
    licences = [f for f in importlib.metadata.files("wanpy") or [] if f.name == "LICENSE"]
    assert len(licences) == 1
    assert licences[0].read_text(encoding="utf-8") == (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Copyright (c) 2026 wanpy developers" in (REPO / "LICENSE").read_text(encoding="utf-8")


def test_an_isolated_build_gets_pip_for_the_sd_cpp_download():
    # scripts/fetch_sdcpp.py runs `python -m pip download` at configure time, and pip's
    # isolated build environment holds only these requirements
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "pip" in {_name(req) for req in pyproject["build-system"]["requires"]}


def test_the_sdist_holds_what_a_build_from_it_needs_and_nothing_fetched(tmp_path, monkeypatch):
    from scikit_build_core.build import build_sdist  # in the test extra

    monkeypatch.chdir(REPO)  # the backend builds the project in the working directory
    name = build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    needed = {"pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "scripts/fetch_sdcpp.py",
              "extern/sdcpp.lock", "src/wanpy/_version.py", "src/wanpy/py.typed"}
    needed |= {p.relative_to(REPO).as_posix() for p in (REPO / "extern" / "patches").glob("*.patch")}
    needed |= {p.relative_to(REPO).as_posix() for p in (REPO / "bindings").iterdir() if p.is_file()}
    assert needed <= members, sorted(needed - members)
    fetched = sorted(m for m in members
                     if m.startswith(("extern/stable-diffusion.cpp/", "extern/downloads/", "build/", ".venv"))
                     or m.endswith((".so", ".gguf", ".safetensors")))
    assert not fetched


def test_the_cuda_extra_matches_the_toolchain_the_backend_check_compiles_with():
    # scripts/check_backend_build.sh cuda compiles with these wheels; the `cuda` extra must bring the
    # same CUDA major's runtime and cuBLAS, in the folder the module's RPATH names
    from packaging.requirements import Requirement

    pins = {}
    for line in (REPO / "scripts" / "backends" / "cuda-toolchain.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            pins[name] = version
    majors = {v.split(".")[0] for v in pins.values()}
    assert len(majors) == 1, pins
    extra = [Requirement(r) for r in importlib.metadata.requires("wanpy") or []
             if re.search(r"""extra == ['"]cuda['"]""", r)]
    assert {r.name for r in extra} == {"nvidia-cuda-runtime", "nvidia-cublas"}
    for req in extra:
        assert req.specifier.contains(pins[req.name]), (req, pins[req.name])
    (major,) = majors
    assert f'INSTALL_RPATH "$ORIGIN/../nvidia/cu{major}/lib"' in (REPO / "CMakeLists.txt").read_text()


def test_the_backend_check_names_what_it_builds(tmp_path):
    import subprocess

    result = subprocess.run(["bash", str(REPO / "scripts" / "check_backend_build.sh"), "vulkan"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                 "WANPY_BACKEND_CHECK_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "usage:" in result.stderr and "cuda|hip" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made for a backend it does not check
