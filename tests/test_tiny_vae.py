"""The tiny video autoencoder (TAEHV, ``tiny_vae=``): the kit's files, their checks before loading, generations
that decode with it (or preview with it), and the pre-flight's buffers against what sd.cpp allocates."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import wanpy
from wanpy import _logging
from wanpy.identify import identify_file
from wanpy.testing import cached_model_set, cached_tiny_vae, make_tiny_vae
from wanpy.testing.sdcpp_logs import compute_buffers, params_buffers

MiB = 2**20
W, H, F = 64, 64, 9


@pytest.fixture(scope="module")
def t2v():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


@pytest.mark.parametrize("name,z_dim", [("taehv-wan2.1", 16), ("taehv-wan2.2", 48)])
def test_kit_writes_taehv_files_of_the_published_size_that_identify(tmp_path, name, z_dim):
    path = make_tiny_vae(tmp_path / "tae.safetensors", name=name)
    kind = identify_file(path)
    assert (kind.kind, kind.name, kind.z_dim, kind.has_encoder, kind.problems) == ("tiny_vae", name, z_dim, True, ())
    # madebyollin/taehv's taew2_1.safetensors is 22.7 MB (F16 weights, F32 biases)
    assert path.stat().st_size / 1e6 == pytest.approx(22.7, abs=0.2)


def test_a_tiny_vae_for_other_latents_or_a_wrong_file_is_refused_before_loading(t2v, tmp_path, load_spy):
    wan22 = cached_tiny_vae(name="taehv-wan2.2")
    with pytest.raises(wanpy.ModelFileError, match="taehv-wan2.2, which decodes the wan2.2-vae's latents; "
                                                   "wan2.1-t2v-1.3b makes the wan2.1-vae's"):
        wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, tiny_vae=wan22)
    with pytest.raises(wanpy.ModelFileError, match="tiny_vae: .* reads as: vae"):
        wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, tiny_vae=t2v.vae)
    with pytest.raises(ValueError, match="tiny_vae_use must be one of 'decode', 'preview'"):
        wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, tiny_vae=cached_tiny_vae(), tiny_vae_use="encode")
    with pytest.raises(ValueError, match="tiny_vae_use='preview' needs tiny_vae=PATH"):
        wanpy.WanPipeline(t2v.diffusion_model, t2v.vae, tiny_vae_use="preview")
    with pytest.raises(ValueError, match="preview='tae' decodes with the pipeline's tiny VAE"):
        wanpy.generate_video("x", diffusion_model=t2v.diffusion_model, vae=t2v.vae, preview="tae",
                             callback=lambda p: None)
    with pytest.raises(ValueError, match="ask for preview='tae'"):
        wanpy.generate_video("x", diffusion_model=t2v.diffusion_model, vae=t2v.vae, tiny_vae=cached_tiny_vae(),
                             preview="vae", callback=lambda p: None)
    assert load_spy == []


def _run(pipe_kwargs: dict, **options) -> tuple[wanpy.Video, list[str], list[str]]:
    lines: list[str] = []
    with _logging.observe(lambda source, level, text: lines.append(text)):
        pipe = wanpy.WanPipeline(n_threads=2, progress=False, **pipe_kwargs)
    load = list(lines)
    lines.clear()
    with pipe, _logging.observe(lambda source, level, text: lines.append(text)):
        video = pipe.generate_video("x", width=W, height=H, num_frames=F, steps=1, seed=1, progress=False, **options)
    return video, load, lines


@pytest.mark.slow
@pytest.mark.parametrize("use,options", [
    ("decode", {}),
    ("decode", {"vae_tiling": True, "tile_size": (4, 4)}),
    ("preview", {"preview": "tae"}),
])
def test_predicted_buffers_equal_what_sdcpp_allocates_with_a_tiny_vae(t2v, use, options):
    tae = cached_tiny_vae()
    seen: list[np.ndarray] = []
    callback = {"callback": lambda p: seen.append(p.preview)} if "preview" in options else {}
    video, load, lines = _run(dict(diffusion_model=t2v.diffusion_model, vae=t2v.vae, tiny_vae=tae, tiny_vae_use=use),
                              **options, **callback)
    assert video.frames.shape == (F, H, W, 3) and video.params["tiny_vae_use"] == use
    report = wanpy.preflight(t2v.diffusion_model, vae=t2v.vae, tiny_vae=tae, tiny_vae_use=use, width=W, height=H,
                             num_frames=F, vae_tiling=options.get("vae_tiling", False),
                             tile_size=options.get("tile_size"), preview=options.get("preview"))
    logged = compute_buffers(lines)
    predicted = [(a.component, a.buffer_total) for a in report.allocations if a.kind == "compute buffer"]
    if use == "preview":  # the preview's TAE decode runs inside the step: its buffer is in the sampling phase
        assert [r for r, _ in logged] == ["Wan2.1-T2V-1.3B", "taehv", "wan_vae"]
        tae_logged = logged.pop(1)[1]
        phases = {p.phase: p.device for p in report.phases}
        dit_buffer = predicted[0][1]
        assert abs(phases["sampling"] - phases["load"] - dit_buffer - tae_logged) <= 0.006 * MiB
        assert len(seen) == 1 and seen[0].shape == (F, H, W, 3)  # full resolution: decoded by the TAE
    assert len(logged) == len(predicted), (logged, predicted)
    for (runner, got), (component, want) in zip(logged, predicted):
        assert abs(got - want) <= 0.006 * MiB, f"{component} ({runner}): sd.cpp {got / MiB:.2f} MB, predicted " \
                                               f"{want / MiB:.4f}"
    params = params_buffers(load)
    weights = {a.component: a.buffer_total for a in report.allocations if a.kind == "weights buffer"}
    assert abs(params["taehv"] - weights["tiny_vae"]) <= 0.006 * MiB
    assert ("wan_vae" in params) == (use == "preview") == ("vae" in weights)  # decode: the VAE is never loaded


@pytest.mark.slow
def test_the_tiny_vae_decodes_the_same_latents_to_other_frames(t2v):
    tae = cached_tiny_vae()

    def run(**files):
        seen: list[np.ndarray] = []
        video, _, _ = _run(dict(diffusion_model=t2v.diffusion_model, vae=t2v.vae, **files), preview="proj",
                           callback=lambda p: seen.append(p.preview))
        return video, seen[-1]

    (full, full_latents), (tiny, tiny_latents), (again, _) = run(), run(tiny_vae=tae), run(tiny_vae=tae)
    assert np.array_equal(full_latents, tiny_latents)  # the same latents (projected to RGB) ...
    assert tiny.frames.shape == full.frames.shape
    assert np.array_equal(tiny.frames, again.frames)
    assert not np.array_equal(tiny.frames, full.frames)  # ... decoded by another decoder (random: no quality claim)
    assert tiny.params["model_files"]["tiny_vae"] == str(tae) and full.params["tiny_vae_use"] is None


def test_cli_preflight_measures_the_tiny_vae(t2v):
    result = subprocess.run([sys.executable, "-m", "wanpy", "preflight", str(t2v.diffusion_model), "--json",
                             "--vae", str(t2v.vae), "--tiny-vae", str(cached_tiny_vae()), "--size", "64x64",
                             "--frames", "9"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    components = {a["component"] for a in report["allocations"]}
    assert "tiny_vae" in components and "vae" not in components


@pytest.mark.slow
def test_the_wan22_tiny_vae_decodes_ti2v_5b_latents_as_predicted():
    ti2v = cached_model_set(variant="wan2.2-ti2v-5b", dtype="q4_0", seed=0)
    tae = cached_tiny_vae(name="taehv-wan2.2")  # 48 latent channels, 2x2 patches
    image = np.full((32, 32, 3), 128, np.uint8)  # TI2V encodes the image: with the tiny VAE's encoder
    lines: list[str] = []
    with wanpy.WanPipeline(ti2v.diffusion_model, ti2v.vae, tiny_vae=tae, n_threads=2, progress=False) as pipe, \
            _logging.observe(lambda source, level, text: lines.append(text)):
        video = pipe.generate_video("x", width=32, height=32, num_frames=5, steps=1, seed=1, progress=False,
                                    init_image=image)
    assert video.frames.shape == (5, 32, 32, 3)
    report = wanpy.preflight(ti2v.diffusion_model, vae=ti2v.vae, tiny_vae=tae, width=32, height=32, num_frames=5,
                             init_image=True)
    logged = compute_buffers(lines)
    predicted = [(a.component, a.buffer_total) for a in report.allocations if a.kind == "compute buffer"]
    assert [r for r, _ in logged] == ["taehv", "Wan2.2-TI2V-5B", "taehv"]
    assert [c for c, _ in predicted] == ["tiny_vae", "diffusion_model", "tiny_vae"]
    for (runner, got), (component, want) in zip(logged, predicted):
        assert abs(got - want) <= 0.006 * MiB, f"{component} ({runner}): sd.cpp {got / MiB:.2f} MB, predicted " \
                                               f"{want / MiB:.4f}"
