"""WanPipeline end to end on the random-weight Wan2.1-T2V-1.3B, CPU; and its strictness."""

from __future__ import annotations

import _thread
import logging
import signal
import threading
import time

import numpy as np
import pytest

import wanpy
from wanpy.testing import cached_model_set, make_lora

SMALL = {"width": 64, "height": 64, "num_frames": 5, "steps": 2}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models():
    return cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)


@pytest.fixture(scope="module")
def pipe(models):
    with wanpy.WanPipeline(models.diffusion_model, models.vae, n_threads=2) as p:
        yield p


@pytest.fixture(scope="module")
def fox(pipe):
    return pipe.generate_video("a red fox in the snow", seed=7, progress=False, **SMALL)


# --- validation: no native call is reached ---------------------------------------------
def test_unknown_keyword_is_a_type_error(pipe):
    with pytest.raises(TypeError, match="num_frame"):
        pipe.generate_video("x", num_frame=5)


def test_frame_count_must_be_4k_plus_1(pipe):
    with pytest.raises(ValueError, match=r"num_frames must be 4k\+1 .* got 160: use 157 or 161"):
        pipe.generate_video("x", width=64, height=64, num_frames=160)


def test_size_must_be_multiple_of_16(pipe):
    with pytest.raises(ValueError, match=r"multiples of 16 for wan2.1-t2v-1.3b: width 500 \(nearest: 496 or 512\)"):
        pipe.generate_video("x", width=500, height=64, num_frames=5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"cfg_scale": float("nan")}, "cfg_scale must be finite, got nan"),
    ({"flow_shift": -1.0}, "flow_shift must be > 0"),
    ({"seed": -5}, "seed must be >= 0, got -5"),
    ({"fps": 0}, r"fps must be in \(0, 240\], got 0"),
    ({"sample_method": "eulerx"}, "sample_method 'eulerx' is not one of: euler, "),
    ({"moe_boundary": 0.9}, "moe_boundary only apply to Wan2.2 A14B"),
    ({"init_image": np.zeros((64, 64, 3), np.uint8)}, "text-to-video: it takes no init_image"),
])
def test_bad_values_name_themselves(pipe, kwargs, message):
    args = {**SMALL, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        pipe.generate_video("x", **args)


def test_prompt_with_nul_is_refused(pipe):
    with pytest.raises(ValueError, match="prompt contains a NUL character at index 1"):
        pipe.generate_video("a\x00b", **SMALL)


def test_missing_model_file(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="diffusion_model: no such file"):
        wanpy.WanPipeline(tmp_path / "nope.gguf", models.vae)


def test_vae_in_the_diffusion_model_slot_is_refused(models):
    with pytest.raises(wanpy.ModelFileError, match="not a Wan diffusion model"):
        wanpy.WanPipeline(models.vae, models.vae)


# --- generation ------------------------------------------------------------------------
def test_generates_the_frames_asked(fox):
    assert fox.frames.shape == (5, 64, 64, 3)
    assert fox.frames.dtype == np.uint8
    assert fox.num_frames == 5 and fox.fps == 16 and fox.seed == 7
    assert fox.frames.std() > 1.0  # not a constant image
    assert not np.array_equal(fox.frames[0], fox.frames[-1])
    assert fox.duration == pytest.approx(5 / 16)
    assert fox.params["num_frames"] == 5 and fox.params["model_files"]["diffusion_model"].endswith(".gguf")


def test_timings_come_from_the_engine(fox):
    t = fox.timings
    assert t.sampling is not None and t.sampling > 0
    assert t.vae_decode is not None and t.vae_decode > 0
    assert t.total >= t.sampling + t.vae_decode - 0.02  # sd.cpp rounds to 1/100 s
    assert "sampling" in str(t)


def test_same_seed_same_frames_other_seed_other_frames(pipe, fox):
    again = pipe.generate_video("a red fox in the snow", seed=7, progress=False, **SMALL)
    np.testing.assert_array_equal(again.frames, fox.frames)
    other = pipe.generate_video("a red fox in the snow", seed=8, progress=False, **SMALL)
    assert np.abs(other.frames.astype(int) - fox.frames.astype(int)).mean() > 1.0


def test_random_seed_is_reported(pipe):
    video = pipe.generate_video("x", progress=False, **SMALL)
    assert isinstance(video.seed, int) and video.params["seed"] == video.seed


def test_progress_callback_sees_every_step(pipe):
    events: list[wanpy.Progress] = []
    pipe.generate_video("x", seed=1, progress=False, callback=events.append, **SMALL)
    sampling = [e for e in events if e.phase == "sampling"]
    assert [e.step for e in sampling] == [1, 2]
    assert all(e.steps == 2 and e.elapsed >= 0 for e in sampling)


def test_callback_returning_false_cancels_and_pipeline_stays_usable(pipe):
    with pytest.raises(wanpy.Cancelled, match="cancelled by the callback"):
        pipe.generate_video("x", seed=1, progress=False, callback=lambda p: False, **SMALL)
    video = pipe.generate_video("x", seed=1, progress=False, **SMALL)
    assert video.num_frames == 5


def test_callback_raising_propagates_its_exception(pipe):
    def boom(progress):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        pipe.generate_video("x", seed=1, progress=False, callback=boom, **SMALL)
    assert pipe.generate_video("x", seed=1, progress=False, **SMALL).num_frames == 5


def test_ctrl_c_stops_within_a_step(pipe):
    events: list[wanpy.Progress] = []
    # as in an interactive Python: a test run started in the background by a non-interactive
    # shell inherits SIGINT ignored, and interrupt_main() then raises nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(wanpy.Cancelled, match="interrupted"):
            pipe.generate_video("x", seed=1, progress=False, callback=events.append, **{**SMALL, "steps": 30})
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert len(events) < 30
    assert pipe.generate_video("x", seed=1, progress=False, **SMALL).num_frames == 5


def test_two_threads_generate_one_after_the_other(pipe, fox):
    results: dict[int, wanpy.Video] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = pipe.generate_video("a red fox in the snow", seed=7, progress=False, **SMALL)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 2
    for video in results.values():
        np.testing.assert_array_equal(video.frames, fox.frames)


def test_sdcpp_log_reaches_the_wanpy_logger(pipe, caplog):
    with caplog.at_level(logging.INFO, logger="wanpy"):
        pipe.generate_video("x", seed=1, progress=False, **SMALL)
    messages = [r.getMessage() for r in caplog.records if r.name == "wanpy"]
    assert any("generate_video 64x64x5" in m for m in messages)


def test_closed_pipeline_refuses(models):
    p = wanpy.WanPipeline(models.diffusion_model, models.vae, n_threads=2)
    p.close()
    p.close()  # idempotent
    assert p.closed
    with pytest.raises(wanpy.GenerationError, match="closed"):
        p.generate_video("x", **SMALL)


def test_concatenate_drops_the_shared_frame(fox):
    joined = wanpy.concatenate([fox, fox, fox])
    assert joined.num_frames == 5 + 4 + 4
    np.testing.assert_array_equal(joined.frames[5:9], fox.frames[1:])


def test_one_shot_generate_video_loads_and_frees(models, pipe):
    start = time.perf_counter()
    video = wanpy.generate_video("x", diffusion_model=models.diffusion_model, vae=models.vae, n_threads=2,
                                 seed=3, progress=False, **SMALL)
    assert video.num_frames == 5
    assert video.timings.load is not None and video.timings.load < time.perf_counter() - start
    # the one-shot pipeline frees each model as soon as it is done with it (sd-cli's memory
    # profile): the frames are the same as a pipeline that keeps its weights
    assert np.array_equal(video.frames, pipe.generate_video("x", seed=3, progress=False, **SMALL).frames)


# --- LoRAs (the kit writes random ones for the kit's DiT) -----------------------------------
@pytest.fixture(scope="module")
def loras(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {"random": str(make_lora(folder / "random.safetensors", models.diffusion_model)),
            "zero": str(make_lora(folder / "zero.safetensors", models.diffusion_model, init="zeros"))}


def test_a_lora_changes_the_frames_and_is_not_left_applied(pipe, fox, loras):
    events: list[wanpy.Progress] = []
    with_lora = pipe.generate_video("a red fox in the snow", seed=7, progress=False, callback=events.append,
                                    loras=[(loras["random"], 1.0)], **SMALL)
    assert not np.array_equal(with_lora.frames, fox.frames)
    assert with_lora.params["loras"] == [{"path": loras["random"], "multiplier": 1.0, "high_noise": False}]
    assert with_lora.timings.lora_loading is not None and fox.timings.lora_loading is None
    # reading the LoRA's 600 tensors reports progress of its own: not sampling steps
    assert [e.step for e in events if e.phase == "sampling"] == [1, 2]
    assert any(e.phase == "lora_loading" and e.steps == 600 for e in events)
    zero = pipe.generate_video("a red fox in the snow", seed=7, progress=False, loras=[(loras["zero"], 1.0)],
                               **SMALL)
    assert np.array_equal(zero.frames, fox.frames)  # an all-zero update changes nothing
    after = pipe.generate_video("a red fox in the snow", seed=7, progress=False, **SMALL)
    assert np.array_equal(after.frames, fox.frames)


def test_cancel_while_a_lora_loads_waits_for_sampling_and_the_pipeline_stays_usable(pipe, loras):
    # sd.cpp reports the LoRA's loading from the thread that owns its reader threads: the
    # cancel must not be thrown there (std::terminate), but at the first sampling step
    events: list[wanpy.Progress] = []

    def stop_on_lora(progress: wanpy.Progress) -> bool:
        events.append(progress)
        return progress.phase != "lora_loading"

    with pytest.raises(wanpy.Cancelled, match="cancelled by the callback"):
        pipe.generate_video("x", seed=1, progress=False, callback=stop_on_lora, loras=[(loras["random"], 1.0)],
                            **SMALL)
    assert [e.phase for e in events] == ["lora_loading"]
    assert pipe.generate_video("x", seed=1, progress=False, **SMALL).num_frames == 5


# --- Wan2.2 TI2V-5B: text and image to video, continuation --------------------------------
@pytest.fixture(scope="module")
def ti2v():
    models = cached_model_set(variant="wan2.2-ti2v-5b", dtype="q4_0", seed=0)
    with wanpy.WanPipeline(models.diffusion_model, models.vae, n_threads=2) as p:
        yield p


def test_ti2v_needs_32_pixel_multiples(ti2v):
    assert ti2v.family.name == "wan2.2-ti2v-5b"
    with pytest.raises(ValueError, match=r"multiples of 32 for wan2.2-ti2v-5b: width 48 \(nearest: 32 or 64\)"):
        ti2v.generate_video("x", width=48, height=32, num_frames=5, steps=1)


def test_ti2v_rejects_an_init_image_of_another_size(ti2v):
    with pytest.raises(ValueError, match="init_image is 64x32 but the video is 32x32"):
        ti2v.generate_video("x", width=32, height=32, num_frames=5, steps=1,
                            init_image=np.zeros((32, 64, 3), np.uint8))


def test_ti2v_with_an_init_image_then_continued(ti2v):
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    first = ti2v.generate_video("a fox", width=32, height=32, num_frames=5, steps=1, seed=1, init_image=image,
                                progress=False)
    assert first.frames.shape == (5, 32, 32, 3)
    assert first.fps == 24  # the TI2V-5B family's published default
    assert first.params["init_image"] == "given"
    assert first.timings.image_encoding is not None
    second = ti2v.generate_video("a fox", width=32, height=32, num_frames=5, steps=1, seed=2, continue_from=first,
                                 progress=False)
    assert second.params["init_image"] == "continue_from"
    joined = wanpy.concatenate([first, second])
    assert joined.num_frames == 9
    assert joined.duration == pytest.approx(9 / 24)
