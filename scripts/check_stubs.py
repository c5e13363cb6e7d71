"""Check (or rewrite) src/wanpy/_core.pyi against the compiled wanpy._core.

The stub is generated from the module itself with pybind11-stubgen, so it cannot drift from the
binary: this script regenerates it twice into temporary folders (the output must be the same both
times) and compares it with the committed file.

    python scripts/check_stubs.py           # exit 1 with a unified diff when they differ
    python scripts/check_stubs.py --write   # regenerate src/wanpy/_core.pyi

Needs the built extension (pip install .) and pybind11-stubgen in the same interpreter. One stub
serves every build: the bound functions are the same in all of them (vulkan_device_limits returns
an empty list without Vulkan), and module constants are written with their type only, since their
values are build facts (BACKEND, SDCPP_SOURCE; PROMPT_STACK_PER_BYTE differs under ASan).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STUB = REPO / "src" / "wanpy" / "_core.pyi"
MODULE = "wanpy._core"
HEADER = "# Generated from the compiled wanpy._core by scripts/check_stubs.py --write: do not edit.\n"
# A top-level constant as pybind11-stubgen writes it: `NAME: type = value`.
CONSTANT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*): ([^=]+?) = .*$", re.MULTILINE)


# pybind11-stubgen in a fresh interpreter, with the wanpy package present but its __init__ not run:
# the stub describes the binary alone, whatever wanpy's Python code does when imported.
RUN_STUBGEN = """
import importlib.util, sys, types
spec = importlib.util.find_spec("wanpy")
if spec is None or not spec.submodule_search_locations:
    raise SystemExit("wanpy is not installed in " + sys.executable)
package = types.ModuleType("wanpy")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["wanpy"] = package
from pybind11_stubgen import main
sys.argv = ["pybind11-stubgen", *sys.argv[1:]]
main()
"""


def generate() -> str:
    """The stub as pybind11-stubgen writes it from the installed module, normalised."""
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-c", RUN_STUBGEN, "--exit-code", "-o", out, MODULE],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"pybind11-stubgen failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        text = (Path(out) / Path(*MODULE.split(".")).with_suffix(".pyi")).read_text()
    return HEADER + CONSTANT.sub(lambda m: f"{m[1]}: {m[2]}" if m[1] != "__all__" else m[0], text)


def tool_versions() -> str:
    names = ("pybind11-stubgen", "pybind11")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {STUB.relative_to(REPO)}")
    args = parser.parse_args(argv)

    first, second = generate(), generate()
    if first != second:
        diff = difflib.unified_diff(first.splitlines(True), second.splitlines(True), "run 1", "run 2")
        sys.stdout.writelines(diff)
        print("error: pybind11-stubgen gave two different stubs for the same module", file=sys.stderr)
        return 1
    if args.write:
        STUB.write_text(first)
        print(f"wrote {STUB.relative_to(REPO)} ({tool_versions()})")
        return 0
    committed = STUB.read_text() if STUB.exists() else ""
    if committed == first:
        print(f"{STUB.relative_to(REPO)} matches the compiled module")
        return 0
    rel = str(STUB.relative_to(REPO))
    sys.stdout.writelines(difflib.unified_diff(committed.splitlines(True), first.splitlines(True),
                                               f"{rel} (committed)", f"{rel} (from the compiled module)"))
    print(f"error: {rel} differs from the compiled module ({tool_versions()}); "
          "if the binding changed on purpose, run: python scripts/check_stubs.py --write", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
