"""For applications and pipelines of tools (#19, part): cancel from any thread and from asyncio,
videos into file objects, JSON-serialisable records, and a CLI whose --json output parses."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wanpy
from wanpy.cli import main
from wanpy.testing import cached_model_set
from wanpy.testing.scenes import scene_frame

SMALL = dict(width=16, height=16, num_frames=1, cfg_scale=1.0, seed=1)


def _video(frames: int = 9) -> wanpy.Video:
    return wanpy.Video(frames=np.stack([scene_frame(i, 64, 48) for i in range(frames)]), fps=Fraction(16), seed=1)


def test_save_into_a_file_object_writes_the_same_video(tmp_path: Path) -> None:
    video = _video()
    buffer = io.BytesIO()
    assert video.save(buffer, format="webm") is None
    (tmp_path / "from-buffer.webm").write_bytes(buffer.getvalue())
    info = wanpy.probe_video(tmp_path / "from-buffer.webm")
    assert (info.frame_count, info.fps, info.width, info.height) == (9, Fraction(16), video.width, video.height)
    assert buffer.getvalue()[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (WebM) header


@pytest.mark.parametrize("kwargs, error, message", [
    ({}, ValueError, r"format must be one of 'webm', 'mp4', 'gif'"),
    ({"format": "avi"}, ValueError, r"format must be one of"),
])
def test_save_into_a_file_object_needs_a_format(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _video(1).save(io.BytesIO(), **kwargs)


def test_format_is_refused_with_a_path(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="format= is for file objects"):
        _video(1).save(tmp_path / "x.webm", format="mp4")


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"wanpy {wanpy.__version__}"


def test_cli_json_outputs_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["wanpy_version"] == wanpy.__version__ and info["devices"]

    assert main(["preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5)
    assert report["fits"] is True and report["largest"]["nbytes"] == expected.largest.nbytes

    path = tmp_path / "clip.webm"
    _video().save(path)
    assert main(["--json", "probe", str(path)]) == 0  # before the subcommand too
    probe = json.loads(capsys.readouterr().out)
    assert (probe["frame_count"], probe["fps"], probe["path"]) == (9, "16", str(path))


def test_cli_verbose_after_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "5", "-v"]) == 0
    assert "FITS" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["-v", "info", "-q"], "--verbose and --quiet contradict each other"),
    (["demo", "--json"], "it has no --json"),
])
def test_cli_contradictions_are_usage_errors(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture(scope="module")
def pipe() -> Any:
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    with wanpy.WanPipeline(kit.diffusion_model, kit.vae, n_threads=1) as pipeline:
        yield pipeline


@pytest.mark.slow
def test_cancel_from_another_thread_stops_at_the_next_step(pipe: Any) -> None:
    steps: list[int] = []
    started = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            pipe.generate_video("a red fox", **{**SMALL, "steps": 40}, progress=False,
                                callback=lambda p: steps.append(p.step) or started.set())
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    assert started.wait(300), "the generation never started"
    pipe.cancel()
    worker.join(60)
    assert not worker.is_alive()
    assert isinstance(box.get("error"), wanpy.Cancelled) and "pipe.cancel()" in str(box["error"])
    assert len(steps) < 40
    video = pipe.generate_video("a red fox", **{**SMALL, "steps": 1}, progress=False)  # still usable
    assert video.frames.shape == (1, 16, 16, 3)


@pytest.mark.slow
def test_cancelling_the_asyncio_task_stops_the_native_run(pipe: Any) -> None:
    async def scenario() -> int:
        steps: list[int] = []
        first = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_step(progress: wanpy.Progress) -> None:
            steps.append(progress.step)
            loop.call_soon_threadsafe(first.set)

        task = asyncio.create_task(pipe.generate_video_async("a red fox", **{**SMALL, "steps": 40},
                                                             callback=on_step))
        await asyncio.wait_for(first.wait(), 300)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        video = await pipe.generate_video_async("a red fox", **{**SMALL, "steps": 1})  # the lock is free
        assert video.frames.shape == (1, 16, 16, 3)
        return len(steps)

    assert asyncio.run(scenario()) < 40


@pytest.mark.slow
def test_video_records_are_json(pipe: Any) -> None:
    video = pipe.generate_video("a red fox", **{**SMALL, "steps": 1}, progress=False, fps=Fraction(30000, 1001))
    params = json.loads(json.dumps(video.params))
    assert params["fps"] == "30000/1001" and params["seed"] == video.seed == video.request.seed
    assert json.loads(json.dumps(video.request.to_dict()))["num_frames"] == 1


@pytest.mark.slow
def test_cli_generate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    out = tmp_path / "fox.webm"
    status = main(["generate", "--diffusion-model", str(kit.diffusion_model), "--vae", str(kit.vae),
                   "--prompt", "a red fox", "--size", "16x16", "--frames", "1", "--steps", "1", "--cfg-scale",
                   "1", "--seed", "3", "--threads", "1", "-o", str(out), "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["output"] == str(out) and result["probe"]["frame_count"] == 1
    assert result["params"]["seed"] == 3 and result["video"]["num_frames"] == 1


@pytest.mark.parametrize("ext", ["webm", "mp4"])
def test_the_request_travels_in_the_file(ext: str, tmp_path: Path) -> None:
    request = wanpy.build_request("wan2.1-t2v-1.3b", 'a fox: "quoted" é; a=b #c \\ back\nnew line', width=64,
                                  height=48, num_frames=9, seed=5)
    video = wanpy.Video(frames=_video().frames, fps=Fraction(16), seed=5, request=request)
    info = wanpy.probe_video(video.save(tmp_path / f"fox.{ext}") or Path())
    assert info.request == json.loads(json.dumps(request.to_dict()))


def test_a_gif_carries_no_request_and_files_of_others_none(tmp_path: Path) -> None:
    request = wanpy.build_request("wan2.1-t2v-1.3b", "a fox", width=64, height=48, num_frames=9)
    gif = wanpy.Video(frames=_video().frames, fps=Fraction(16), seed=5, request=request).save(tmp_path / "f.gif")
    assert wanpy.probe_video(gif or Path()).request is None
    assert wanpy.probe_video(_video().save(tmp_path / "plain.webm") or Path()).request is None


@pytest.mark.parametrize("ext, metadata, message", [
    ("gif", {"a": "b"}, "GIF files store no tags"),
    ("webm", {"bad key": "b"}, "key 'bad key' must be"),
    ("webm", {"k": "a\nb"}, r"metadata\['k'\] must be one line"),
    ("webm", {"k": 3}, r"metadata\['k'\] must be one line of text"),
])
def test_metadata_checked(ext: str, metadata: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        wanpy.save_video(tmp_path / f"x.{ext}", _video(1).frames, fps=16, metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_cli_preview_needs_a_folder_before_loading(tmp_path: Path, load_spy: list[Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from wanpy.testing import make_model_set

    kit = make_model_set(tmp_path / "kit", variant="wan2.1-t2v-1.3b", dtype="q4_0", sparse=True)
    base = ["generate", "--diffusion-model", str(kit.diffusion_model), "--vae", str(kit.vae), "--prompt", "x",
            "-o", str(tmp_path / "out.webm")]
    assert main([*base, "--preview", "proj"]) == 2
    assert "--preview needs --preview-dir" in capsys.readouterr().err
    assert main([*base, "--preview", "proj", "--preview-dir", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([*base, "--codec", "h264"]) == 2  # .webm takes vp9 or vp8
    assert "codec" in capsys.readouterr().err
    assert load_spy == []


@pytest.mark.slow
def test_cli_generate_with_previews_codec_and_quality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kit = cached_model_set(variant="wan2.1-t2v-1.3b", dtype="q4_0", seed=0)
    previews = tmp_path / "previews"
    previews.mkdir()
    out = tmp_path / "fox.webm"
    status = main(["generate", "--diffusion-model", str(kit.diffusion_model), "--vae", str(kit.vae), "--prompt",
                   "a red fox", "--size", "32x32", "--frames", "5", "--steps", "2", "--cfg-scale", "1", "--seed", "3",
                   "--preview", "proj", "--preview-dir", str(previews), "--codec", "vp8", "--quality", "80", "-q",
                   "-o", str(out)])
    assert status == 0 and capsys.readouterr().out.strip() == str(out)
    assert sorted(p.name for p in previews.iterdir()) == [f"sampling-step{s:04d}-frame{f:03d}.png"
                                                          for s in (1, 2) for f in (0, 1)]
    info = wanpy.probe_video(out)
    assert info.codec == "vp8" and info.frame_count == 5 and info.request is not None


def test_interpolation_spans_the_same_time_and_keeps_the_input_frames() -> None:
    from wanpy.interpolate import interpolated_count

    video = _video(9)
    smooth = video.interpolate(32)
    assert (smooth.num_frames, smooth.fps) == (17, Fraction(32)) and smooth.duration * 32 == 17
    assert interpolated_count(9, Fraction(16), Fraction(24)) == video.interpolate(Fraction(24)).num_frames == 13
    kept = smooth.frames[::2].astype(np.float64) - video.frames
    assert 10 * np.log10(255**2 / np.mean(kept**2)) > 45  # the input frames pass through (4:4:4 round trip)
    assert smooth.params["interpolated_from"] == "16"


@pytest.mark.parametrize("options, message", [
    ({"interpolate": 16}, r"interpolate=16 must be above the video's 16 fps"),
    ({"interpolate": 8}, r"must be above"),
    ({"interpolate": 32, "num_frames": 1}, r"needs at least 2 frames"),
    ({"interpolate": float("nan")}, r"fps must be a finite number"),
])
def test_interpolation_checked_before_anything_runs(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wanpy.build_request("wan2.1-t2v-1.3b", "a fox", **{"num_frames": 5, **options})


def test_interpolating_one_frame_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        _video(1).interpolate(32)
