"""Checks for the paths users hand to wanpy: files it reads and files it writes.

Every reader of a user path (model files, LoRAs, images, videos to probe) calls
:func:`check_input_file` before anything opens the file, and every writer calls
:func:`check_output_path` before any work starts, so that a wrong path fails at once with
an error naming the argument, never as a hang (a FIFO blocks its reader until a writer
appears), a misleading "no such file", or an OSError about a file the user never named.

Paths are ``str`` or ``os.PathLike[str]``. Names that are not valid UTF-8 work as Python
represents them (``os.fsdecode(b"clip\\xff.webm")``, a surrogate escape). ``bytes`` paths
are refused with ``TypeError`` (decode them with ``os.fsdecode``): one spelling of a path
keeps messages, logs and the native layer consistent.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from typing import Any

__all__ = ["check_input_file", "check_output_path", "name_max", "path_max", "printable", "temp_file_pattern",
           "temp_path_for"]

_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_NAME_MAX = 255  # POSIX filesystems, where pathconf cannot tell
_PATH_MAX = 4096


def printable(path: str | os.PathLike[str]) -> str:
    """``path`` as text that any stream can print: undecodable bytes become ``\\xNN``."""
    text = os.fspath(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # pragma: no cover - a filesystem encoding other than UTF-8
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fspath(name: str, path: Any) -> str:
    if isinstance(path, (bytes, bytearray)):
        raise TypeError(f"{name} must be a path, got {type(path).__name__} "
                        "(pass os.fsdecode(path) for a bytes file name)")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a path, got a PathLike of {type(text).__name__} "
                        "(pass os.fsdecode(path) for a bytes file name)")
    if "\x00" in text:
        raise ValueError(f"{name}: the path contains a NUL character: {text!r}")
    if not text:
        raise ValueError(f"{name} is an empty path")
    return text


def _article(what: str) -> str:
    return "an" if what[:1] in ("a", "e", "i", "o", "u") else "a"


def _stat_error(name: str, what: str, text: str, exc: OSError) -> OSError:
    """The OSError subclass for ``exc`` with a message that names the argument."""
    code = exc.errno or 0
    if code == errno.ENOENT:
        dangling = os.path.islink(text)
        detail = " (a symbolic link to a missing file)" if dangling else ""
        return FileNotFoundError(code, f"{name}: no such {what}{detail}", text)
    if code == errno.ENOTDIR:
        return NotADirectoryError(code, f"{name}: no such {what} (a parent in the path is not a directory)",
                                  text)
    if code == errno.EACCES:
        return PermissionError(code, f"{name}: not readable (permission denied on a parent directory)",
                               text)
    return OSError(code, f"{name}: {exc.strerror}", text)


def check_input_file(name: str, path: Any, *, what: str = "file") -> str:
    """Check that ``path``, given as argument ``name``, is a readable, non-empty regular file.

    ``what`` words the messages ("image file" gives "no such image file"). Returns the
    absolute path with symbolic links resolved.

    Raises:
        TypeError: ``path`` is not a str or os.PathLike[str] (``bytes`` included).
        ValueError: the path holds a NUL or is empty; the file is empty; or it is not a
            regular file (a FIFO, socket or device), which is never opened (a FIFO would
            block its reader until a writer appears).
        FileNotFoundError: nothing exists there (or a symbolic link points nowhere).
        IsADirectoryError: it is a directory (or a link to one).
        PermissionError: it cannot be read.
    """
    text = _fspath(name, path)
    try:
        info = os.stat(text)
    except OSError as exc:
        raise _stat_error(name, what, text, exc) from None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{name}: is a directory, not {_article(what)} {what}", text)
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise ValueError(f"{name}: {text!r} is not a regular file (it is {kind})")
    try:
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open() returns at once.
        fd = os.open(text, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise PermissionError(errno.EACCES, f"{name}: not readable (permission denied)", text) from None
    except OSError as exc:
        raise _stat_error(name, what, text, exc) from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):  # replaced between the two calls
        raise ValueError(f"{name}: {text!r} is not a regular file")
    if info.st_size == 0:
        raise ValueError(f"{name}: file is empty: {text!r}")
    return os.path.realpath(text)


def name_max(directory: str) -> int:
    """The longest file name, in bytes, that ``directory``'s filesystem accepts."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # not reported (or not POSIX)
        return _NAME_MAX


def path_max(directory: str) -> int:
    """The longest path, in bytes with its terminating NUL, that system calls accept."""
    try:
        return int(os.pathconf(directory, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return _PATH_MAX


def check_output_path(name: str, path: Any) -> str:
    """Check that a new file could be put at ``path`` (argument ``name``); returns it absolute.

    The parent must be an existing directory that this process may write to, the path
    must not end in a separator (``"clip.webm/"`` names a directory), and the file name
    must fit the filesystem (``NAME_MAX`` bytes, usually 255). An existing directory or
    non-regular file (FIFO, socket, device) at ``path`` is refused; an existing regular
    file or symbolic link is fine (writers replace it). Whether the extension is
    supported is for the writer to say. Symbolic links in the parent are not resolved.

    Raises TypeError and ValueError (argument), FileNotFoundError (no parent directory),
    NotADirectoryError, IsADirectoryError and PermissionError, each naming ``name``.
    """
    text = _fspath(name, path)
    seps = os.sep + (os.altsep or "")
    last = text.rstrip(seps).rsplit(os.sep, 1)[-1]
    if text.endswith(tuple(seps)) or last in (".", ".."):
        raise ValueError(f"{name}: {text!r} names a directory (it ends in "
                         f"{'a separator' if text.endswith(tuple(seps)) else repr(last)}); "
                         "give a file name")
    target = os.path.abspath(text)
    parent, base = os.path.split(target)
    try:
        info = os.stat(parent)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{name}: the output directory does not exist "
                                "(create it first)", parent) from None
    except OSError as exc:
        raise _stat_error(name, "directory", parent, exc) from None
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{name}: the output's parent is not a directory", parent)
    size, limit = len(os.fsencode(base)), name_max(parent)
    if size > limit:
        raise ValueError(f"{name}: the file name is {size} bytes long; this filesystem allows at most "
                         f"{limit}: {base!r}")
    size, limit = len(os.fsencode(target)), path_max(parent) - 1
    if size > limit:
        raise ValueError(f"{name}: the path is {size} bytes long; system calls take at most {limit}: "
                         f"{os.fspath(target)!r}")
    _check_existing(name, target)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{name}: cannot create a file in the output directory", parent)
    return target


def _check_existing(name: str, target: str) -> None:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        if os.path.isdir(target):
            raise IsADirectoryError(errno.EISDIR, f"{name}: is a link to a directory, not a file", target)
        return  # replaced by the new file, as a rename does
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{name}: output path is a directory", target)
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise ValueError(f"{name}: {os.fspath(target)!r} is not a regular file (it is {kind}); "
                         "refusing to replace it")


def temp_file_pattern(base: str) -> re.Pattern[str]:
    """The names ``temp_path_for`` gives a target whose file name matches the regex ``base``
    (``re.escape(name)`` for one target): what a killed writer may have left behind."""
    return re.compile(rf"\.{base}\.[0-9a-f]{{8}}\.[^/]+")


def temp_path_for(name: str, target: str | os.PathLike[str], suffix: str) -> str:
    """A new hidden, random name next to ``target`` (argument ``name``) for an atomic write.

    ``.NAME.RANDOM.SUFFIX``, with NAME cut short when the whole would not fit the
    filesystem's ``NAME_MAX`` or the system's ``PATH_MAX``: whatever target name fits, its
    temporary file fits too (except in a directory whose own path leaves no room for it:
    ``ValueError``).
    """
    parent, base = os.path.split(os.fspath(target))
    token = secrets.token_hex(4)
    room = min(name_max(parent), path_max(parent) - 2 - len(os.fsencode(parent)))
    stem = base
    while stem and len(os.fsencode(f".{stem}.{token}{suffix}")) > room:
        stem = stem[: -max(1, len(stem) // 8)]  # whole characters, so the bytes stay valid
    temp = f".{stem}.{token}{suffix}"
    if len(os.fsencode(temp)) > room:
        raise ValueError(f"{name}: {os.fspath(target)!r} is too long to write atomically: its directory's path "
                         f"leaves {room} bytes for a temporary file's name")
    return os.path.join(parent, temp)
