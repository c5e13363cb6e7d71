"""LoRA files checked before a generation (headers only, sparse model sets): what sd.cpp would
apply as nothing, or abort the process on, is refused with the reason; and (slow) a high-noise
LoRA applied at run time reaches the high-noise expert only (patch 0006)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from wanpy import Lora, ModelFileError, _core, _logging
from wanpy.catalogue import FAMILIES
from wanpy.loras import check_lora_file, lora_targets
from wanpy.native_lock import native
from wanpy.request import check_loras
from wanpy.testing import cached_model_set, make_lora, write_model_file
from wanpy.layouts import TensorSpec


@pytest.fixture(scope="module")
def t2v():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0, sparse=True)


def _check(path, models, *, high_noise=False):
    return check_lora_file("loras[0]", str(path), high_noise=high_noise, model_files=models.pipeline_kwargs())


def test_diffusers_names_target_every_layer_with_sdcpp_names(t2v, tmp_path):
    lora = make_lora(tmp_path / "l.safetensors", t2v.diffusion_model, blocks=range(2))
    found = _check(lora, t2v)
    assert found.lora_tensors == 2 * 2 * 10
    assert len(found.targets) == 20
    assert "model.diffusion_model.blocks.1.ffn.2.weight" in found.targets
    assert found.targets["model.diffusion_model.blocks.0.self_attn.q.weight"] == {
        "lora_down": (4, 1536), "lora_up": (1536, 4)}


def test_kohya_names_sdcpp_cannot_map_are_reported(t2v, tmp_path, caplog):
    # sd.cpp 0.4.7 turns lora_unet_blocks_0_cross_attn_q into blocks.0.cross.attn.q: those layers
    # are skipped by sd.cpp, the self-attention and FFN ones applied
    lora = make_lora(tmp_path / "k.safetensors", t2v.diffusion_model, blocks=range(1), naming="kohya")
    with caplog.at_level(logging.WARNING, logger="wanpy"):
        _check(lora, t2v)
    assert "4 of the 10 layers" in caplog.text
    assert "blocks.0.cross.attn" in caplog.text and "sd.cpp applies the other 6" in caplog.text


def test_a_file_without_lora_tensors_is_refused(t2v):
    with pytest.raises(ModelFileError, match=r"loras\[0\]: .* holds no LoRA tensors .* named like encoder\."):
        _check(t2v.vae, t2v)


def test_random_bytes_are_refused_with_the_slot(t2v, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    with pytest.raises(ModelFileError, match=r"^loras\[0\]: ") as info:
        _check(junk, t2v)
    assert info.value.path == str(junk)


def test_a_lora_for_another_model_is_refused(t2v, tmp_path):
    sd_lora = write_model_file(tmp_path / "sdxl.safetensors", [
        TensorSpec("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", (4, 320), "F16"),
        TensorSpec("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", (320, 4), "F16"),
    ], format="safetensors")
    with pytest.raises(ModelFileError, match=r"none of the 1 layers .* is in this pipeline's models"):
        _check(sd_lora, t2v)


def test_a_lora_for_another_wan_size_is_refused_before_ggml_aborts(t2v, tmp_path):
    # same layer names, other widths: sd.cpp would hit GGML_ASSERT(ggml_can_mul_mat(a, b)) (measured)
    five_b = cached_model_set(variant="wan2.2-ti2v-5b", dtype="q4_0", seed=0, sparse=True)
    lora = make_lora(tmp_path / "5b.safetensors", five_b.diffusion_model, blocks=range(1))
    with pytest.raises(ModelFileError, match=r"lora_down \[4, 3072\] / lora_up \[3072, 4\] for "
                                             r"model\.diffusion_model\.blocks\.0\..* does not fit that weight's "
                                             r"shape \[1536, 1536\]"):
        _check(lora, t2v)


@pytest.mark.parametrize("dtype", ["q4_k", "f16"])
def test_high_noise_loras_target_the_high_noise_expert_only(dtype, tmp_path):
    # q4_k: sd.cpp applies LoRAs at run time, where patch 0006 attaches high-noise ones to the
    # high-noise expert (0.4.7 dropped them); f16: it merges them into that expert's weights
    a14b = cached_model_set(variant="wan2.2-t2v-a14b", dtype=dtype, seed=0, sparse=True)
    lora = make_lora(tmp_path / "hn.safetensors", a14b.high_noise_diffusion_model, blocks=range(1))
    found = _check(lora, a14b, high_noise=True)
    assert len(found.targets) == 10
    assert all(t.startswith("model.high_noise_diffusion_model.blocks.0.") for t in found.targets)
    assert "model.high_noise_diffusion_model.blocks.0.self_attn.q.weight" in found.targets
    # the same file as a low-noise LoRA targets the low-noise expert's names
    assert "model.diffusion_model.blocks.0.self_attn.q.weight" in lora_targets(lora).targets


def test_a_high_noise_lora_needs_a_high_noise_expert(t2v, tmp_path):
    lora = make_lora(tmp_path / "hn.safetensors", t2v.diffusion_model, blocks=range(1))
    with pytest.raises(ValueError, match=r"loras\[0\] targets the high-noise expert, which .* does not have"):
        check_loras([Lora(str(lora), 1.0, high_noise=True)], FAMILIES[t2v.family], t2v.pipeline_kwargs())
    with pytest.raises(ModelFileError, match=r"none of the 10 layers .* is in the high-noise expert"):
        _check(lora, t2v, high_noise=True)


@pytest.mark.slow
def test_patch_0006_runtime_high_noise_lora_reaches_the_high_noise_expert_only(tmp_path):
    # No small two-expert model exists, but sd.cpp builds its high-noise runner from any Wan DiT:
    # the q4_0 1.3B loaded as both experts runs sd.cpp's run-time LoRA path (quantized weights) on
    # each. bench/run_large_models.py shows the same on the real A14B architecture.
    models = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    lora = str(make_lora(tmp_path / "hn.safetensors", models.diffusion_model, blocks=range(2), seed=1))
    lines: list[str] = []

    def generate(ctx, loras, high_noise_steps):
        lines.clear()
        with _logging.observe(lambda source, level, text: lines.append(text)):
            return ctx.generate(
                prompt="a fox", negative_prompt="", width=16, height=16, num_frames=1, steps=1, cfg_scale=1.0,
                flow_shift=5.0, sample_method="euler", scheduler="discrete", seed=11, strength=1.0,
                high_noise_steps=high_noise_steps, high_noise_cfg_scale=1.0, high_noise_sample_method="euler",
                high_noise_scheduler="discrete", moe_boundary=0.875, loras=loras, vae_tiling=False,
                tile_size_x=0, tile_size_y=0, tile_overlap=0.5).astype(int)

    with native():
        ctx = _core.Context(diffusion_model=str(models.diffusion_model),
                            high_noise_diffusion_model=str(models.diffusion_model), vae=str(models.vae), n_threads=2)
        try:
            base = generate(ctx, [], 1)
            with_lora = generate(ctx, [(lora, 1.0, True)], 1)
            stat = [line for line in lines if "lora_models:" in line or "LoRA tensors" in line]
            low_alone = generate(ctx, [], 0)
            low_alone_with_lora = generate(ctx, [(lora, 1.0, True)], 0)
            unused = [line for line in lines if "LoRA tensors" in line]
        finally:
            ctx.close()
    assert np.abs(with_lora - base).max() > 0
    assert stat[0].endswith("high_noise_diffusion_lora_models:") and "(40 / 40) LoRA tensors" in stat[1]
    assert len(stat) == 2  # nothing attached to the low-noise expert
    # no high-noise step: the low-noise expert's frames are bit-identical, the LoRA unused
    assert np.array_equal(low_alone, low_alone_with_lora)
    assert unused and "Only (0 / 40) LoRA tensors" in unused[0]
