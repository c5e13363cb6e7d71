"""A longer fuzzing campaign for the model-file header reader, and for what sd.cpp does with what it accepts.

    python bench/fuzz_headers.py                      # 20 000 examples per property (tests/test_fuzz_headers.py)
    python bench/fuzz_headers.py --examples 200000
    python bench/fuzz_headers.py --native 500         # also: mutate a real Wan DiT header 500 times and hand
                                                      # every file wanpy accepts to sd.cpp (wanpy.preflight)

The first part runs the CI properties with more examples: ``read_header`` returns a consistent
header or raises ``ModelFileError``, and ``identify`` classifies anything it returns. The
``--native`` part checks the other side of that contract: a file wanpy lets through must not
crash sd.cpp. It flips bytes in the header of a random-weight Wan2.1-T2V-1.3B GGUF (sparse: the
data is a hole), keeps the mutants that ``read_header`` and ``identify`` accept as a supported
DiT, and runs ``wanpy.preflight`` on them in child processes (sd.cpp's model loader reads the
header again there and builds the real graphs); a child that dies names the file that killed it.
Crashing files are kept and listed. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, sys, wanpy
vae = sys.argv[1]
for line in sys.stdin:
    path = line.strip()
    print("START " + path, flush=True)
    try:
        wanpy.preflight(path, width=16, height=16, num_frames=1, vae=vae, suggest=False)
        outcome = "ok"
    except Exception as exc:
        outcome = type(exc).__name__
    print("DONE " + json.dumps([path, outcome]), flush=True)
'''


def run_properties(examples: int) -> int:
    env = dict(os.environ, WANPY_FUZZ_EXAMPLES=str(examples))
    start = time.perf_counter()
    status = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              str(REPO / "tests" / "test_fuzz_headers.py")], cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    print(f"header properties: {examples} examples each, {seconds:.0f} s, "
          f"{'passed' if status == 0 else 'FAILED'}")
    return status


def _mutant(base: bytes, header_end: int, size: int, rng: random.Random, path: Path) -> None:
    buf = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(header_end)
        buf[pos] = rng.choice([0, 1, 0xFF, 0x7F, 0x80, rng.randrange(256), buf[pos] ^ (1 << rng.randrange(8))])
    with open(path, "wb") as f:
        f.write(buf)
        f.truncate(size)


def run_native(count: int, seed: int, keep: Path) -> int:
    from wanpy.errors import ModelFileError
    from wanpy.headers import read_header
    from wanpy.identify import identify
    from wanpy.testing import make_model_set

    work = Path(tempfile.mkdtemp(prefix="wanpy-native-fuzz-"))
    models = make_model_set(work / "set", variant="wan2.1-t2v-1.3b", dtype="q4_0", sparse=True)
    header = read_header(models.diffusion_model)
    with open(models.diffusion_model, "rb") as f:
        base = f.read(header.data_offset)
    rng = random.Random(seed)
    accepted: list[Path] = []
    refused = 0
    for i in range(count):
        path = work / f"mutant{i:06d}.gguf"
        _mutant(base, header.data_offset, header.file_size, rng, path)
        try:
            kind = identify(read_header(path))
        except ModelFileError:
            kind = None
        if kind is None or kind.kind != "dit" or not kind.supported:
            refused += 1
            path.unlink()
        else:
            accepted.append(path)
    print(f"native: {count} mutants of {models.diffusion_model.name}: {refused} refused by wanpy, "
          f"{len(accepted)} accepted and handed to sd.cpp")
    outcomes: dict[str, int] = {}
    crashes: list[tuple[Path, str]] = []
    todo = list(accepted)
    while todo:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(models.vae)], input="\n".join(map(str, todo)) + "\n",
                              capture_output=True, text=True, env=dict(os.environ, GGML_NO_BACKTRACE="1"))
        started, done = None, set()
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = line[6:]
            elif line.startswith("DONE "):
                path, outcome = json.loads(line[5:])
                done.add(path)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if proc.returncode == 0:
            break
        if started is None or started in done:
            print(f"native: the child failed outside a case ({proc.returncode}):\n{proc.stderr[-2000:]}")
            return 1
        keep.mkdir(parents=True, exist_ok=True)
        kept = keep / Path(started).name
        shutil.move(started, kept)  # a rename on the same file system keeps the data a hole
        crashes.append((kept, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}"))
        todo = todo[todo.index(Path(started)) + 1:]
    print(f"native: outcomes of the accepted files: {outcomes}; crashes: {len(crashes)}")
    for path, why in crashes:
        print(f"  CRASH {path}: {why}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if crashes else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per header property")
    parser.add_argument("--native", type=int, default=0, metavar="N",
                        help="also mutate a real DiT header N times and run sd.cpp on what wanpy accepts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "wanpy-fuzz-crashes",
                        help="where files that crashed sd.cpp are kept")
    args = parser.parse_args()
    status = run_properties(args.examples) if args.examples else 0
    if args.native:
        status |= run_native(args.native, args.seed, args.keep)
    return status


if __name__ == "__main__":
    sys.exit(main())
