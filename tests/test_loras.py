"""LoRA files checked before a generation (headers only, sparse model sets): what sd.cpp would
apply as nothing, or abort the process on, is refused with the reason."""

from __future__ import annotations

import logging

import pytest

from wanpy import ModelFileError
from wanpy.loras import check_lora_file, lora_targets
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


def test_high_noise_loras_need_unquantized_experts(tmp_path):
    a14b = cached_model_set(variant="wan2.2-t2v-a14b", dtype="q4_k", seed=0, sparse=True)
    lora = make_lora(tmp_path / "hn.safetensors", a14b.high_noise_diffusion_model, blocks=range(1))
    with pytest.raises(ValueError, match="a high-noise LoRA would be ignored"):
        _check(lora, a14b, high_noise=True)
    f16 = cached_model_set(variant="wan2.2-t2v-a14b", dtype="f16", seed=0, sparse=True)
    found = _check(lora, f16, high_noise=True)
    assert "model.high_noise_diffusion_model.blocks.0.self_attn.q.weight" in found.targets
    # the same file as a low-noise LoRA targets the low-noise expert's names
    assert "model.diffusion_model.blocks.0.self_attn.q.weight" in lora_targets(lora).targets
