"""wanpy patch 0001 (extern/patches): flash attention with unpadded K/V and no mask.

Upstream pads K/V to a multiple of 256 tokens and builds an L_pad x L mask: quadratic in
the video tokens. The patch computes the same attention without it. These tests compare
the two paths of sd.cpp's own attention function (WANPY_FLASH_ATTN_PAD_KV=1 restores
upstream's) numerically, on whole generations, and in the pre-flight's measured graphs.

The attention function is reached through the test hooks module (bindings/testhooks.cpp), which
is not part of wanpy: bench/build_sdcpp_tools.sh builds it beside sd-cli, from the same patched
source and with the same backend options as wanpy._core.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import wanpy
from wanpy import _core
from wanpy.testing import cached_model_set

from conftest import REPO, run_python

PAD_ENV = "WANPY_FLASH_ATTN_PAD_KV"


def _hooks_dir() -> Path:
    if os.environ.get("WANPY_TESTHOOKS_DIR"):
        return Path(os.environ["WANPY_TESTHOOKS_DIR"])
    suffix = "" if _core.BACKEND == "cpu" else f"-{_core.BACKEND}"
    return REPO / "build" / f"bench-tools{suffix}" / "testhooks"


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    """wanpy_testhooks for this interpreter and this build of _core; an error (not a skip) when missing."""
    path = _hooks_dir() / ("wanpy_testhooks" + sysconfig.get_config_var("EXT_SUFFIX"))
    build = f"TARGETS=wanpy_testhooks PYTHON={sys.executable} bash bench/build_sdcpp_tools.sh"
    if _core.BACKEND != "cpu":
        build = f"BUILD_DIR={path.parent.parent} {build} <the -D options of this {_core.BACKEND} build>"
    assert path.is_file(), f"{path} is missing: build it with `{build}` (or set WANPY_TESTHOOKS_DIR)"
    spec = importlib.util.spec_from_file_location("wanpy_testhooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the hooks must run the engine _core runs
    assert (module.BACKEND, module.SDCPP_SOURCE) == (_core.BACKEND, _core.SDCPP_SOURCE), path
    return module


# (L_q, L_k, n_head, d_head): Wan's head size 128; token counts that are not multiples of
# 256 (self-attention of a small video, cross-attention to 257 CLIP tokens) and one that is.
SHAPES = [(300, 300, 2, 128), (40, 257, 4, 64), (1560, 1560, 2, 128), (512, 512, 2, 128)]


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) v per head, in float64."""
    n, lq, c = q.shape
    d = c // n_head
    split = lambda x: x.astype(np.float64).reshape(n, -1, n_head, d).transpose(0, 2, 1, 3)  # noqa: E731
    qh, kh, vh = split(q), split(k), split(v)
    s = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ vh).transpose(0, 2, 1, 3).reshape(n, lq, c)


def three_paths(hooks: ModuleType, device: str, shape: tuple[int, int, int, int],
                monkeypatch) -> dict[str, tuple[np.ndarray, str]]:
    lq, lk, heads, d = shape
    rng = np.random.default_rng(lq * 7 + lk)
    q, k, v = (rng.standard_normal((1, n, heads * d), dtype=np.float32) for n in (lq, lk, lk))
    out = {"unpadded": hooks.attention(q, k, v, heads, True, device)}
    monkeypatch.setenv(PAD_ENV, "1")
    out["padded"] = hooks.attention(q, k, v, heads, True, device)
    monkeypatch.delenv(PAD_ENV)
    out["plain"] = hooks.attention(q, k, v, heads, False, device)
    out["reference"] = (reference(q, k, v, heads), "float64")
    return out


def check_paths(out: dict[str, tuple[np.ndarray, str]], shape: tuple[int, int, int, int], tolerance: float) -> None:
    lq, lk, _, _ = shape
    (unpadded, op_u), (padded, op_p), (plain, op_plain) = out["unpadded"], out["padded"], out["plain"]
    ref = out["reference"][0]
    assert op_u == f"flash_attn_ext(kv={lk})"  # no mask, K/V as long as they are
    padded_kv = -(-lk // 256) * 256
    assert op_p == (f"flash_attn_ext(kv={padded_kv}, mask)" if lk % 256 else f"flash_attn_ext(kv={lk})")
    assert op_plain == "mul_mat"
    # the padding only adds -inf-masked keys: the two flash paths agree exactly here
    assert np.abs(unpadded - padded).max() == 0.0
    # both are attention: f16 K/V keep them within f16 rounding of the float64 reference
    assert np.abs(unpadded - ref).max() < tolerance
    assert np.abs(plain - ref).max() < tolerance


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_unpadded_flash_attention_equals_upstreams_padded(hooks, shape, monkeypatch):
    check_paths(three_paths(hooks, "CPU", shape, monkeypatch), shape, tolerance=5e-3)


@pytest.mark.vulkan
@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: "x".join(map(str, s)))
def test_vulkan_unpadded_flash_attention_equals_upstreams_padded(hooks, shape, monkeypatch):
    check_paths(three_paths(hooks, "Vulkan0", shape, monkeypatch), shape, tolerance=5e-3)


GENERATE = """
import numpy as np, wanpy
from wanpy.testing import cached_model_set
m = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
with wanpy.WanPipeline(m.diffusion_model, m.vae, flash_attention=True, n_threads=2) as pipe:
    v = pipe.generate_video("a red fox", width=64, height=48, num_frames=9, steps=2, seed=7, progress=False)
np.save({out!r}, v.frames)
"""


def test_whole_generation_is_identical_with_and_without_padding(tmp_path):
    # 64x48, 9 frames: 3 latent frames of 4x3 tokens = 36 tokens, padded to 256 upstream
    cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    frames = {}
    for label, env in (("unpadded", {}), ("padded", {PAD_ENV: "1"})):
        out = tmp_path / f"{label}.npy"
        result = run_python(GENERATE.format(out=str(out)), env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        frames[label] = np.load(out)
    assert frames["unpadded"].shape == (9, 48, 64, 3)
    assert frames["unpadded"].std() > 0  # a real video, not a blank one
    assert np.array_equal(frames["unpadded"], frames["padded"])


# --- the pre-flight measures the patched graphs: nothing grows with L squared --------------
def _sampling(report: wanpy.Preflight) -> tuple[int, int, str]:
    buffer = next(a for a in report.allocations if a.phase == "sampling" and a.kind == "compute buffer")
    tensor = next(a for a in report.allocations if a.phase == "sampling" and a.kind == "tensor")
    return buffer.buffer_total, tensor.nbytes, tensor.name


def test_no_dit_tensor_grows_with_tokens_squared(monkeypatch):
    def measure(frames: int) -> tuple[int, int, str]:
        return _sampling(wanpy.preflight("wan2.x-t2v-14b", width=832, height=480, num_frames=frames,
                                         flash_attention=True, vae_tiling=True, suggest=False))

    tokens = {81: 21 * 1560, 161: 41 * 1560}  # latent frames x (832/16) x (480/16)
    growth = tokens[161] / tokens[81]
    buf81, big81, _ = measure(81)
    buf161, big161, name161 = measure(161)
    assert "mul_mat f32 [13824, 63960]" in name161  # the FFN activation: linear in tokens
    assert buf161 / buf81 <= growth * 1.001
    assert big161 / big81 <= growth * 1.001

    monkeypatch.setenv(PAD_ENV, "1")  # upstream: the padding mask, quadratic
    _, pad81, _ = measure(81)
    _, pad161, pad_name = measure(161)
    assert pad_name.endswith("f32 [64000, 63960]")
    assert pad161 / pad81 > growth ** 2 * 0.99


def test_the_14b_at_832x480_161_frames_fits_a_4gib_allocation_limit():
    args = ["preflight", "wan2.x-t2v-14b", "--size", "832x480", "--frames", "161", "--max-allocation", "0xfffffffc",
            "--flash-attention", "--vae-tiling"]
    result = run_python(f"import sys; from wanpy.cli import main; sys.exit(main({args!r}))")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FITS" in result.stdout
    assert "diffusion_model mul_mat f32 [13824, 63960]" in result.stdout
    upstream = run_python(f"import sys; from wanpy.cli import main; sys.exit(main({args!r}))", env={PAD_ENV: "1"})
    assert upstream.returncode == 3, upstream.stdout + upstream.stderr
    assert "f32 [64000, 63960]" in upstream.stdout
