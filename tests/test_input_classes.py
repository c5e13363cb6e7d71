"""The input classes an outside probe found holes in (issue #17), over every public entry point that
takes such an input: each is a clear error naming the argument, raised before anything loads (the
spy on ``_core.Context``), never a hang or a silent change. (Per-module cases: test_paths.py,
test_encode.py, test_probe.py; generation-time ones: test_reliability_runtime.py.)"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wanpy
from wanpy.cli import main
from wanpy.testing import make_model_set


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_model_set(tmp_path_factory.mktemp("kit"), variant="wan2.2-ti2v-5b", dtype="q4_0", sparse=True)


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.safetensors"
    os.mkfifo(path)
    return path


def _socket(folder: Path) -> Iterator[Path]:
    path = folder / "sock.gguf"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        yield path
    finally:
        server.close()


NON_REGULAR: dict[str, Callable[[Path], Any]] = {
    "fifo": _fifo,
    "directory": lambda folder: folder,
    "device": lambda folder: Path("/dev/null"),
}

# every entry point that reads a user's path, and the argument it names
ENTRY_POINTS: dict[str, Callable[[Any, Path], Any]] = {
    "WanPipeline diffusion_model": lambda kit, p: wanpy.WanPipeline(p, kit.vae),
    "WanPipeline vae": lambda kit, p: wanpy.WanPipeline(kit.diffusion_model, p),
    "generate_video text_encoder": lambda kit, p: wanpy.generate_video(
        "x", diffusion_model=kit.diffusion_model, vae=kit.vae, text_encoder=p),
    "generate_video loras[0]": lambda kit, p: wanpy.generate_video(
        "x", diffusion_model=kit.diffusion_model, vae=kit.vae, loras=[(p, 1.0)]),
    "build_request init_image": lambda kit, p: wanpy.build_request(
        "wan2.2-ti2v-5b", "x", width=32, height=32, num_frames=5, init_image=p),
    "preflight vae": lambda kit, p: wanpy.preflight(kit.diffusion_model, vae=p, width=32, height=32, num_frames=5),
    "probe_video path": lambda kit, p: wanpy.probe_video(p),
}
ARGUMENT = {name: name.split(" ", 1)[1] for name in ENTRY_POINTS}


@pytest.mark.parametrize("kind", list(NON_REGULAR))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_non_regular_file_is_a_clear_error(kind: str, entry: str, kit: Any, tmp_path: Path,
                                           load_spy: list[Any]) -> None:
    path = NON_REGULAR[kind](tmp_path)
    with pytest.raises((ValueError, IsADirectoryError)) as caught:
        ENTRY_POINTS[entry](kit, path)
    message = str(caught.value)
    assert "no such file" not in message
    assert "directory" in message if kind == "directory" else "not a regular file" in message
    if entry != "probe_video path":
        assert ARGUMENT[entry] in message
    assert load_spy == []


def test_socket_model_file_is_a_clear_error(kit: Any, tmp_path: Path, load_spy: list[Any]) -> None:
    for path in _socket(tmp_path):
        with pytest.raises(ValueError, match="diffusion_model.*not a regular file"):
            wanpy.WanPipeline(path, kit.vae)
    assert load_spy == []


def test_cli_probe_of_a_fifo_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", str(_fifo(tmp_path))]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_non_utf8_model_path_named(kit: Any, tmp_path: Path, load_spy: list[Any]) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/dit\xff.gguf"))
    os.link(kit.diffusion_model, odd)  # a file of that name (a symlink would resolve to a UTF-8 one)
    with pytest.raises(ValueError, match="diffusion_model: the path .* is not valid UTF-8"):
        wanpy.WanPipeline(odd, kit.vae)
    assert load_spy == []


@pytest.mark.parametrize("flag", ["progress", "flash_attention", "offload_to_cpu", "keep_vae_on_cpu"])
def test_flags_are_bools_in_the_one_shot_function(flag: str, kit: Any, load_spy: list[Any]) -> None:
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'no'"):
        wanpy.generate_video("x", diffusion_model=kit.diffusion_model, vae=kit.vae, **{flag: "no"})
    assert load_spy == []


@pytest.mark.parametrize("tile_size, tile_overlap, error, message", [
    ((0, 0), 0.5, ValueError, r"tile_size\[0\] must be >= 4"),
    ((-4, 4), 0.5, ValueError, r"tile_size\[0\] must be >= 4"),
    ((4.5, 4), 0.5, TypeError, r"tile_size\[0\] must be an integer"),
    ((4, 4), float("nan"), ValueError, r"tile_overlap must be finite"),
    ((4, 4), -0.1, ValueError, r"tile_overlap must be >= 0"),
    ((4, 4), 0.9, ValueError, r"tile_overlap must be <= 0.5"),
    ((9, 4), 0.5, ValueError, r"tile_size\[0\] must be <= 8"),
])
def test_preflight_refuses_tiles_sdcpp_would_change(tile_size: Any, tile_overlap: float, error: type,
                                                    message: str) -> None:
    with pytest.raises(error, match=message):
        wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5, vae_tiling=True,
                        tile_size=tile_size, tile_overlap=tile_overlap)


def test_preflight_refuses_a_tile_without_tiling() -> None:
    with pytest.raises(ValueError, match=r"needs vae_tiling=True"):
        wanpy.preflight("wan2.1-t2v-1.3b", width=64, height=64, num_frames=5, tile_size=(4, 4))


def test_cli_max_allocation_with_400_digits_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(["preflight", "wan2.1-t2v-1.3b", "--size", "64x64", "--frames", "5", "--max-allocation", "9" * 400])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "max-allocation" in err and "Traceback" not in err


def test_numpy_false_flag_accepted_numpy_int_not_a_flag() -> None:
    r = wanpy.build_request("wan2.1-t2v-1.3b", "x", num_frames=5, vae_tiling=np.True_)
    assert r.vae_tiling is True
    with pytest.raises(TypeError, match="vae_tiling must be True or False"):
        wanpy.build_request("wan2.1-t2v-1.3b", "x", num_frames=5, vae_tiling=np.int64(1))
