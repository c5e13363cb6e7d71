"""Nothing reaches stdout (fd 1) but what a command prints as its result: sd.cpp's loader used
to write a bare newline there (patch 0003 removes it), and log lines go to logging."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wanpy.testing import cached_model_set

pytestmark = pytest.mark.slow

GENERATE = """
import logging, wanpy
logging.basicConfig(level=logging.DEBUG)  # logs to stderr: every sd.cpp line is routed
wanpy.generate_video("a red fox", diffusion_model={dit!r}, vae={vae!r}, width=16, height=16, num_frames=1,
                     steps=1, cfg_scale=1.0, seed=1, progress=False)
with wanpy.WanPipeline({dit!r}, {vae!r}) as pipe:
    pipe.generate_video("a red fox", width=16, height=16, num_frames=1, steps=1, cfg_scale=1.0, seed=1)
"""


def test_load_and_generate_write_nothing_to_stdout() -> None:
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    code = GENERATE.format(dit=str(kit.diffusion_model), vae=str(kit.vae))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert done.stdout == b""
    assert b"loading tensors from" in done.stderr  # the log went somewhere: to logging, on stderr


def test_cli_info_prints_its_result_only() -> None:
    done = subprocess.run([sys.executable, "-m", "wanpy", "info"], capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stdout.decode().startswith("wanpy ")
