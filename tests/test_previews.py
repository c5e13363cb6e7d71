"""Per-step previews (#19): sd.cpp's preview callback through Progress.preview, at the interval asked
(patch 0004 makes sd.cpp honour it), checked before anything loads, accounted for by the pre-flight."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import wanpy
from wanpy.testing import cached_model_set, make_model_set

REQUEST = dict(width=32, height=32, num_frames=5, steps=4, cfg_scale=1.0, seed=1, progress=False)


@pytest.mark.parametrize("options, message", [
    ({"preview": "fast"}, r"preview must be None or one of 'proj', 'vae', 'tae'"),
    ({"preview_every": 2}, r"preview_every need preview='proj', 'vae' or 'tae'"),
    ({"preview": "proj", "preview_every": 5}, r"preview_every must be <= 4"),
    ({"preview": "proj", "preview_every": 0}, r"preview_every must be >= 1"),
])
def test_preview_options_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wanpy.build_request("wan2.1-t2v-1.3b", "a fox", steps=4, **options)


def test_preview_without_a_callback_refused_before_loading(tmp_path: Any, load_spy: list[Any]) -> None:
    kit = make_model_set(tmp_path, variant="wan2.1-t2v-1.3b", dtype="q4_0", sparse=True)
    with pytest.raises(ValueError, match=r"preview='proj' delivers frames to callback="):
        wanpy.generate_video("a fox", diffusion_model=kit.diffusion_model, vae=kit.vae, preview="proj")
    assert load_spy == []


def test_vae_previews_hold_the_vae_decode_buffer_while_sampling() -> None:
    args = dict(width=832, height=480, num_frames=33, flash_attention=True, vae_tiling=True)
    plain = wanpy.preflight("wan2.1-t2v-1.3b", **args)
    proj = wanpy.preflight("wan2.1-t2v-1.3b", preview="proj", **args)
    vae = wanpy.preflight("wan2.1-t2v-1.3b", preview="vae", **args)

    def phase(report: wanpy.Preflight, name: str) -> int:
        return next(p.device for p in report.phases if p.phase == name)

    decode = next(a.buffer_total for a in plain.allocations if a.phase == "VAE decode" and a.kind == "compute buffer")
    assert phase(proj, "sampling") == phase(plain, "sampling")
    assert phase(vae, "sampling") == phase(plain, "sampling") + decode
    assert phase(vae, "VAE decode") == phase(plain, "VAE decode")


@pytest.fixture(scope="module")
def pipe() -> Any:
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    with wanpy.WanPipeline(kit.diffusion_model, kit.vae) as pipeline:
        yield pipeline


@pytest.mark.slow
@pytest.mark.parametrize("mode, shape", [("proj", (2, 4, 4, 3)), ("vae", (5, 32, 32, 3))])
def test_previews_arrive_at_the_interval_with_their_shape(pipe: Any, mode: str, shape: tuple[int, ...]) -> None:
    seen: list[tuple[int, Any]] = []
    video = pipe.generate_video("a fox", **REQUEST, preview=mode, preview_every=2,
                                callback=lambda p: seen.append((p.step, p.preview)))
    assert [step for step, _ in seen] == [1, 2, 3, 4]
    previews = {step: frames for step, frames in seen if frames is not None}
    assert sorted(previews) == [2, 4]
    for frames in previews.values():
        assert frames.dtype == np.uint8 and frames.shape == shape
    assert not np.array_equal(previews[2], previews[4])  # the latents moved between the two
    plain = pipe.generate_video("a fox", **REQUEST)
    np.testing.assert_array_equal(video.frames, plain.frames)  # previews change nothing
    assert video.request.preview == mode and video.params["preview_every"] == 2


@pytest.mark.slow
def test_noisy_previews_differ_from_denoised(pipe: Any) -> None:
    def previews(noisy: bool) -> list[np.ndarray]:
        got: list[np.ndarray] = []
        pipe.generate_video("a fox", **REQUEST, preview="proj", preview_noisy=noisy,
                            callback=lambda p: got.append(p.preview) if p.preview is not None else None)
        return got

    noisy, denoised = previews(True), previews(False)
    assert len(noisy) == len(denoised) == 4
    assert not np.array_equal(noisy[0], denoised[0])
