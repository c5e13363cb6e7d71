"""wanpy.paths: the checks every reader and writer of a user path runs first.

Decided here: ``bytes`` paths are refused with TypeError (decode with os.fsdecode); names
that are not UTF-8 work as surrogate-escaped str.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wanpy.paths import check_input_file, check_output_path, name_max, printable, temp_path_for

NON_UTF8 = os.fsdecode(b"clip\xff.bin")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def unix_socket(path: Path) -> Iterator[None]:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(os.fspath(path))
        yield
    finally:
        sock.close()


def returns_quickly(call: Callable[[], object], fifo: Path | None = None) -> object:
    """``call()``'s result or exception, failing (not hanging) if it blocks for 20 s."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():
        if fifo is not None:  # release a reader blocked on the FIFO, then fail
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the call blocked")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")


# ---------------------------------------------------------------- check_input_file


def _regular(d: Path) -> Path:
    (d / "f.bin").write_bytes(b"data")
    return d / "f.bin"


def _symlink_to_regular(d: Path) -> Path:
    (d / "link").symlink_to(_regular(d))
    return d / "link"


def _non_utf8(d: Path) -> Path:
    p = d / NON_UTF8
    p.write_bytes(b"data")
    return p


def _symlink(d: Path, name: str, to: Path) -> Path:
    (d / name).symlink_to(to)
    return d / name


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "p")
    return d / "p"


def _empty(d: Path) -> Path:
    (d / "e.bin").write_bytes(b"")
    return d / "e.bin"


# kind -> (make the path under tmp_path, expected exception or None, message pattern)
INPUT_KINDS: dict[str, tuple[Callable[[Path], object], type[BaseException] | None, str]] = {
    "regular": (_regular, None, ""),
    "symlink to a regular file": (_symlink_to_regular, None, ""),
    "non-UTF-8 name": (_non_utf8, None, ""),
    "missing": (lambda d: d / "nope.bin", FileNotFoundError, "model: no such file"),
    "dangling symlink": (lambda d: _symlink(d, "dl", d / "gone"), FileNotFoundError,
                         "model: no such file .a symbolic link to a missing file."),
    "directory": (lambda d: d, IsADirectoryError, "model: is a directory, not a file"),
    "symlink to a directory": (lambda d: _symlink(d, "dlink", d), IsADirectoryError, "is a directory"),
    "fifo": (_fifo, ValueError,
             r"model: .* is not a regular file \(it is a named pipe \(FIFO\)\)"),
    "character device": (lambda d: Path(os.devnull), ValueError, "not a regular file .it is a character device"),
    "empty": (_empty, ValueError, "model: file is empty"),
    "parent is a file": (lambda d: _regular(d) / "x", NotADirectoryError, "a parent in the path is not a directory"),
    "trailing separator on a file": (lambda d: f"{_regular(d)}/", NotADirectoryError, "model: no such file"),
    "NUL": (lambda d: f"{d}/a\x00b", ValueError, "model: the path contains a NUL character"),
    "empty string": (lambda d: "", ValueError, "model is an empty path"),
    "bytes": (lambda d: os.fsencode(_regular(d)), TypeError, r"model must be a path, got bytes .pass os.fsdecode"),
    "int": (lambda d: 3, TypeError, "model must be a path .str or os.PathLike., got int"),
    "None": (lambda d: None, TypeError, "model must be a path .str or os.PathLike., got NoneType"),
}


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_check_input_file(tmp_path: Path, kind: str) -> None:
    make, error, pattern = INPUT_KINDS[kind]
    path = make(tmp_path)
    if error is None:
        got = check_input_file("model", path)
        assert isinstance(path, Path)
        assert got == os.path.realpath(path)
        assert Path(got).read_bytes() == b"data"
    else:
        with pytest.raises(error, match=pattern):
            returns_quickly(lambda: check_input_file("model", path))


def test_input_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with unix_socket(path), pytest.raises(ValueError, match=r"is not a regular file \(it is a socket\)"):
        check_input_file("lora", path)


def test_input_fifo_with_a_writer_waiting_is_still_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        returns_quickly(lambda: check_input_file("image", fifo), fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_input_errors_carry_errno_and_filename(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        check_input_file("vae", tmp_path / "missing.safetensors")
    assert err.value.filename == str(tmp_path / "missing.safetensors")
    assert err.value.errno is not None


def test_input_what_words_the_messages(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="init_image: no such image file"):
        check_input_file("init_image", tmp_path / "x.png", what="image file")
    with pytest.raises(IsADirectoryError, match="init_image: is a directory, not an image file"):
        check_input_file("init_image", tmp_path, what="image file")


def test_input_unreadable(tmp_path: Path) -> None:
    path = _regular(tmp_path)
    path.chmod(0)
    try:
        if IS_ROOT:  # root reads any file: the check must agree with what open() does
            assert check_input_file("model", path) == os.path.realpath(path)
        else:
            with pytest.raises(PermissionError, match="model: not readable"):
                check_input_file("model", path)
    finally:
        path.chmod(0o600)


def test_input_relative_path_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _regular(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert check_input_file("model", "f.bin") == str(tmp_path.resolve() / "f.bin")


# ---------------------------------------------------------------- check_output_path


def test_output_regular_new_file(tmp_path: Path) -> None:
    assert check_output_path("output", tmp_path / "c.webm") == str(tmp_path / "c.webm")
    assert os.listdir(tmp_path) == []  # nothing created


@pytest.mark.parametrize("text", ["clip.webm/", "clip.webm//", "dir/.", "dir/..", ".", ".."])
def test_output_naming_a_directory(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="output: .* names a directory"):
        check_output_path("output", f"{tmp_path}/{text}")


def test_output_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"output directory does not exist \(create it first\)") as err:
        check_output_path("output", tmp_path / "missing" / "c.webm")
    assert err.value.filename == str(tmp_path / "missing")


def test_output_parent_is_a_file(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="output: the output's parent is not a directory"):
        check_output_path("output", _regular(tmp_path) / "c.webm")


@pytest.mark.parametrize(("make", "error", "pattern"), [
    (lambda d: (d / "c.webm").mkdir(), IsADirectoryError, "output path is a directory"),
    (lambda d: os.mkfifo(d / "c.webm"), ValueError, r"is not a regular file \(it is a named pipe"),
    (lambda d: _symlink(d, "c.webm", d), IsADirectoryError, "a link to a directory"),
], ids=["directory", "fifo", "symlink to a directory"])
def test_output_existing_non_file_is_refused(tmp_path: Path, make: Callable[[Path], object],
                                            error: type[BaseException], pattern: str) -> None:
    make(tmp_path)
    before = os.lstat(tmp_path / "c.webm")
    with pytest.raises(error, match=pattern):
        check_output_path("output", tmp_path / "c.webm")
    assert os.lstat(tmp_path / "c.webm").st_mode == before.st_mode


def test_output_existing_socket_is_refused(tmp_path: Path) -> None:
    with unix_socket(tmp_path / "c.webm"), pytest.raises(ValueError, match=r"\(it is a socket\); refusing"):
        check_output_path("output", tmp_path / "c.webm")


def test_output_existing_file_or_link_to_one_is_fine(tmp_path: Path) -> None:
    _regular(tmp_path)
    (tmp_path / "link.webm").symlink_to(tmp_path / "f.bin")
    assert check_output_path("output", tmp_path / "f.bin") == str(tmp_path / "f.bin")
    assert check_output_path("output", tmp_path / "link.webm") == str(tmp_path / "link.webm")


def test_output_name_length_limit(tmp_path: Path) -> None:
    limit = name_max(str(tmp_path))
    fits = "a" * (limit - 5) + ".webm"
    assert check_output_path("output", tmp_path / fits) == str(tmp_path / fits)
    with pytest.raises(ValueError, match=f"output: the file name is {limit + 1} bytes long; .* at most {limit}"):
        check_output_path("output", tmp_path / ("a" + fits))


def test_output_name_length_counts_bytes(tmp_path: Path) -> None:
    limit = name_max(str(tmp_path))
    name = "é" * (limit // 2) + "é.gif"  # 2 bytes a character: over the limit in bytes, not in characters
    assert len(name) < limit < len(os.fsencode(name))
    with pytest.raises(ValueError, match="bytes long"):
        check_output_path("output", tmp_path / name)


@pytest.mark.skipif(IS_ROOT, reason="root can write into read-only directories")
def test_output_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="output: cannot create a file in the output directory"):
            check_output_path("output", locked / "c.webm")
    finally:
        locked.chmod(0o700)


def test_output_non_utf8_name(tmp_path: Path) -> None:
    assert check_output_path("output", tmp_path / NON_UTF8) == str(tmp_path / NON_UTF8)


@pytest.mark.parametrize(("value", "error", "pattern"), [
    (b"/tmp/c.webm", TypeError, "output must be a path, got bytes"),
    (12, TypeError, "output must be a path"),
    ("", ValueError, "output is an empty path"),
    ("c\x00.webm", ValueError, "output: the path contains a NUL character"),
])
def test_output_bad_types_and_values(value: object, error: type[BaseException], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        check_output_path("output", value)


# ---------------------------------------------------------------- temporary names and printing


def test_temp_name_keeps_the_target_name_when_it_fits(tmp_path: Path) -> None:
    temp = Path(temp_path_for("path", tmp_path / "w.webm", ".part"))
    assert temp.parent == tmp_path
    assert temp.name.startswith(".w.webm.") and temp.name.endswith(".part")


@pytest.mark.parametrize("char", ["a", "é", NON_UTF8[-5]])
def test_temp_name_fits_whenever_the_target_fits(tmp_path: Path, char: str) -> None:
    limit = name_max(str(tmp_path))
    width = len(os.fsencode(char))
    target = tmp_path / (char * ((limit - 5) // width) + ".webm")
    assert len(os.fsencode(target.name)) <= limit
    temp = Path(temp_path_for("path", target, ".part"))
    assert temp.parent == tmp_path
    assert temp.name.startswith(".") and temp.name.endswith(".part")
    assert len(os.fsencode(temp.name)) <= limit
    temp.write_bytes(b"")  # the filesystem takes it
    assert os.listdir(tmp_path) == [temp.name]


def test_printable_escapes_undecodable_bytes() -> None:
    assert printable(os.fsdecode(b"/x/clip\xff.webm")) == "/x/clip\\xff.webm"
    assert printable("/x/vidéo.webm") == "/x/vidéo.webm"
    printable(os.fsdecode(b"\xff")).encode("utf-8")  # strict UTF-8 works: safe to print


@pytest.mark.parametrize("call", [
    lambda d: check_input_file("lora", d / NON_UTF8),
    lambda d: check_input_file("lora", d / "dir\udcfe"),
    lambda d: check_output_path("output", d / NON_UTF8 / "x.webm"),
    lambda d: check_output_path("output", f"{d / NON_UTF8}/"),
], ids=["missing input", "directory input", "missing output directory", "trailing separator"])
def test_errors_about_non_utf8_names_print(tmp_path: Path, call: Callable[[Path], object]) -> None:
    (tmp_path / "dir\udcfe").mkdir()
    with pytest.raises((OSError, ValueError)) as err:
        call(tmp_path)
    text = str(err.value)
    assert "\\udcff" in text or "\\udcfe" in text
    text.encode("utf-8")  # printable on a strict UTF-8 stream
