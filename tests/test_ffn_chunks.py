"""wanpy patch 0007 (extern/patches): the Wan DiT's feed-forward block in token chunks.

Above the device's per-tensor ceiling, sd.cpp computes the block's hidden activation (f32
[ffn_dim, tokens], the largest tensor of a long video) in the fewest token chunks that fit. ffn.2
reduces over ffn_dim, so the frames must not change: these tests compare whole generations
chunked and unchunked on the CPU (WANPY_FFN_CHUNKS=K forces K chunks, 1 none), through the
ceiling a pipeline registers for its device, and the pre-flight's measured graphs at the sizes
issue #25 is about. The lavapipe boundary is in tests/test_vulkan_boundary.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import wanpy
from wanpy import _core, _logging
from wanpy.testing import cached_model_set
from wanpy.testing.sdcpp_logs import compute_buffers

CHUNKS_ENV = "WANPY_FFN_CHUNKS"
LIMIT = 0xFFFFFFFC  # the users' Vulkan driver: 4 GiB per allocation
# 128x128x13: latent 16x16x4, patches of 2x2: 256 tokens, where the feed-forward activation sets the
# DiT's compute buffer (so sd.cpp's logged buffer shows which graph ran)
REQUEST = dict(width=128, height=128, num_frames=13, steps=1, cfg_scale=1.0, seed=11, progress=False)
TOKENS = 8 * 8 * 4
FFN_BYTES = 8960 * TOKENS * 4  # the 1.3B's activation, f32 [8960, 256]


@pytest.fixture(scope="module")
def pipe() -> Iterator[wanpy.WanPipeline]:
    m = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    with wanpy.WanPipeline(m.diffusion_model, m.vae, n_threads=2) as p:
        yield p


def generate(pipe: wanpy.WanPipeline) -> tuple[np.ndarray, float]:
    """The frames and the DiT's compute buffer as sd.cpp logs it."""
    lines: list[str] = []
    with _logging.observe(lambda source, level, text: lines.append(text)):
        frames = pipe.generate_video("a red fox", **REQUEST).frames
    dit = [size for runner, size in compute_buffers(lines) if runner.startswith("Wan2")]  # the DiT runner
    assert dit, lines[:20]
    return frames, dit[0]


@pytest.mark.slow
def test_chunked_feed_forward_gives_the_same_frames(pipe, monkeypatch):
    results = {}
    for chunks in ("1", "2", "5"):  # 5: chunks of 52 tokens and one of 48
        monkeypatch.setenv(CHUNKS_ENV, chunks)
        results[chunks] = generate(pipe)
    unchunked, buffer = results["1"]
    assert unchunked.shape == (13, 128, 128, 3) and unchunked.std() > 0
    for chunks in ("2", "5"):
        frames, chunked_buffer = results[chunks]
        assert np.array_equal(frames, unchunked), chunks
        assert chunked_buffer != buffer  # sd.cpp really ran another graph


@pytest.mark.slow
def test_the_ceiling_a_device_registers_chunks_the_real_run(pipe, monkeypatch):
    monkeypatch.delenv(CHUNKS_ENV, raising=False)
    assert _core.tensor_ceiling("CPU") == 0  # the pipeline registered the CPU's: none
    plain, plain_buffer = generate(pipe)
    monkeypatch.setenv(CHUNKS_ENV, "2")
    _, two_chunks_buffer = generate(pipe)
    monkeypatch.delenv(CHUNKS_ENV)
    try:
        _core.set_tensor_ceiling("CPU", FFN_BYTES - 1)  # one byte too small: two chunks of 128 tokens
        frames, buffer = generate(pipe)
        _core.set_tensor_ceiling("CPU", FFN_BYTES)  # the activation fits: upstream's graph
        _, at_size_buffer = generate(pipe)
    finally:
        _core.set_tensor_ceiling("CPU", 0)
    assert np.array_equal(frames, plain)
    assert buffer == two_chunks_buffer != plain_buffer
    assert at_size_buffer == plain_buffer


# --- the pre-flight measures the chunked graphs, with the target's ceiling -------------------------
def sampling_tensor(report: wanpy.Preflight) -> str:
    return next(a.name for a in report.allocations if a.phase.endswith("sampling") and a.kind == "tensor")


def test_the_preflight_chunks_with_the_fewest_chunks_that_fit(monkeypatch):
    monkeypatch.delenv(CHUNKS_ENV, raising=False)
    tokens = 21 * 30 * 52  # 832x480x81
    activation = 8960 * tokens * 4

    def largest(ceiling: int | None) -> str:
        return sampling_tensor(wanpy.preflight("wan2.1-t2v-1.3b", width=832, height=480, num_frames=81,
                                               flash_attention=True, vae_tiling=True, max_allocation=ceiling,
                                               suggest=False))

    assert largest(None) == f"diffusion_model mul_mat f32 [8960, {tokens}]"  # no ceiling: not chunked
    assert largest(activation) == f"diffusion_model mul_mat f32 [8960, {tokens}]"  # it fits: not chunked
    assert largest(activation - 1) == \
        f"diffusion_model mul_mat f32 [8960, {tokens // 2}] (the feed-forward block in 2 token chunks)"
    assert largest(activation // 2 - 1) == \
        f"diffusion_model mul_mat f32 [8960, {tokens // 3}] (the feed-forward block in 3 token chunks)"
    monkeypatch.setenv(CHUNKS_ENV, "1")
    assert largest(activation - 1) == f"diffusion_model mul_mat f32 [8960, {tokens}]"


@pytest.mark.parametrize("model", ["wan2.x-t2v-14b", "wan2.2-t2v-a14b", "wan2.1-i2v-14b"])
def test_the_14b_models_at_1280x720_161_frames_fit_4gib_per_allocation(model, monkeypatch):
    monkeypatch.delenv(CHUNKS_ENV, raising=False)
    tokens = 41 * 45 * 80
    args = dict(width=1280, height=720, num_frames=161, flash_attention=True, vae_tiling=True,
                max_allocation=LIMIT, suggest=False, init_image=model == "wan2.1-i2v-14b")
    report = wanpy.preflight(model, **args)
    assert report.fits, report.problems
    # two chunks of 3.80 GiB
    assert sampling_tensor(report).endswith(f"mul_mat f32 [13824, {tokens // 2}] (the feed-forward block in 2 token "
                                            "chunks)")
    monkeypatch.setenv(CHUNKS_ENV, "1")  # without the patch: the whole activation, 7.60 GiB
    unchunked = wanpy.preflight(model, **args)
    assert not unchunked.fits
    assert unchunked.largest.name.endswith(f"mul_mat f32 [13824, {tokens}]")


def test_the_5b_at_its_native_1280x704_121_frames_finds_settings(monkeypatch):
    monkeypatch.delenv(CHUNKS_ENV, raising=False)
    choice = wanpy.choose_fit("wan2.2-ti2v-5b", width=1280, height=704, num_frames=121, max_allocation=LIMIT)
    assert choice.report.fits
    assert choice.report.largest.nbytes <= LIMIT
    assert choice.settings["vae_tiling"] is True


@pytest.mark.parametrize("model, dim, native", [("wan2.1-t2v-1.3b", 1536, (1280, 720)),
                                                ("wan2.x-t2v-14b", 5120, (1280, 720)),
                                                ("wan2.2-ti2v-5b", 3072, (1280, 704))])
def test_past_the_feed_forward_block_the_next_wall_is_the_hidden_state(model, dim, native, monkeypatch):
    # the feed-forward activation in 8 chunks: whatever is largest then is the next wall, and it is the
    # hidden state (f32 [tokens, dim]), not another tensor growing faster with the tokens
    monkeypatch.setenv(CHUNKS_ENV, "8")
    width, height = native
    scale = 32 if model == "wan2.2-ti2v-5b" else 16
    tokens = 41 * (width // scale) * (height // scale)
    report = wanpy.preflight(model, width=width, height=height, num_frames=161, flash_attention=True,
                             vae_tiling=True, suggest=False)
    assert sampling_tensor(report) == f"diffusion_model mul_mat f32 [{tokens}, {dim}]"
